"""Cached computations (st.cache_data), one place, so several browser sessions share the work. Each is keyed
by (checkpoint, image, method, options) and nothing else, so an unrelated widget (overlay opacity, colour
map, a filter elsewhere) never recomputes them. The model and the arrays are passed unhashed (`_model`);
cnnlib works on private copies of the shared model, so sessions can compute at the same time.

cnnlib is imported inside each loader as a module (`from cnnlib.explain import attribution` then
`attribution.attribute_many(...)`), so a test can count cache misses by monkeypatching the function."""
from __future__ import annotations

import numpy as np
import streamlit as st

import testdata
import ui
from checkpoints import Ctx

SELECTION_PAGE = 48       # selected images shown per page on the Embeddings page


# ----------------------------------------------------------------------------- predictions and reports

@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(ckpt_key: str, source: str, _model, _x, _y) -> dict | None:
    from cnnlib.diagnose import evaluate
    if _x is None:
        return evaluate.stored_predictions(_model.meta)
    return evaluate.predictions_for(_model, "test", _x, _y)


@st.cache_data(show_spinner=False, max_entries=16)
def _report(ckpt_key: str, source: str, _preds: dict) -> dict:
    from cnnlib.diagnose import evaluate
    return evaluate.compute_report(_preds["targets"], _preds["probs"], _preds.get("classes"), _preds["losses"],
                                   preds=_preds["preds"])


def evaluation(ctx: Ctx, pixels=None, source: str | None = None) -> tuple[dict | None, dict | None]:
    """(predictions, report) of the test split: the checkpoint's stored predictions, or computed from `pixels`
    when given (`source` names those pixels in the cache key when they are not the checkpoint's own test
    images, e.g. another checkpoint's). (None, None) when neither exists."""
    source = "stored" if pixels is None else source or "pixels:" + testdata.pixels_key(ctx)
    with ui.spinner("Classifying the test images…"):
        preds = _predictions(ctx.key, source, ctx.model, *(pixels if pixels is not None else (None, None)))
    if preds is None:
        return None, None
    preds = dict(preds, classes=ctx.classes)
    return preds, _report(ctx.key, source, preds)


def stored_report(ctx: Ctx) -> dict | None:
    """The report of the checkpoint's stored test predictions (no pixels needed), or None."""
    return evaluation(ctx, None)[1]


def query_cell(preds: dict, true_class: int, pred_class: int, **kw) -> dict:
    from cnnlib.diagnose import evaluate
    return evaluate.query_cell(preds, true_class, pred_class, **kw)


def query_misclassified(preds: dict, **kw) -> dict:
    from cnnlib.diagnose import evaluate
    return evaluate.query_misclassified(preds, **kw)


# ----------------------------------------------------------------------------- layers and filters

@st.cache_data(show_spinner=False, max_entries=16)
def _layers(ckpt_key: str, _model) -> list[dict]:
    from cnnlib.models import anatomy as interpret
    return interpret.list_layers(_model)


def layers(ctx: Ctx) -> list[dict]:
    """list_layers rows: name, type, output_shape, params, rf_size, rf_stride."""
    return _layers(ctx.key, ctx.model)


def conv_layer_names(ctx: Ctx) -> list[str]:
    from cnnlib.models import anatomy as interpret
    return interpret.conv_layer_names(ctx.model)


@st.cache_data(show_spinner=False, max_entries=16)
def _gradcam_default(ckpt_key: str, _model) -> str:
    from cnnlib.models import anatomy as interpret
    return interpret.default_gradcam_layer(_model)


def gradcam_default(ctx: Ctx) -> str:
    return _gradcam_default(ctx.key, ctx.model)


@st.cache_data(show_spinner=False, max_entries=8)
def _filter_history(ckpt_key: str, _meta: dict, _model) -> list[tuple[int, np.ndarray]]:
    import adapters
    return [(int(e), np.asarray(w.float().numpy() if hasattr(w, "float") else w, np.float32))
            for e, w in adapters.filter_history(_meta, _model)]


def filter_history(ctx: Ctx) -> list[tuple[int, np.ndarray]]:
    """[(epoch, first-conv weight (C_out, C_in, k, k))], epoch 0 = the random initialisation; [] without
    a history (imported models)."""
    return _filter_history(ctx.key, ctx.meta, ctx.model)


# ----------------------------------------------------------------------------- one image

@st.cache_data(show_spinner=False, max_entries=64)
def _probabilities(ckpt_key: str, image_key: str, _model, _x01) -> np.ndarray:
    from cnnlib import modelops
    return modelops.probabilities(_model, _x01)[0]


@st.cache_data(show_spinner=False, max_entries=8)
def _ood_reference(source: str, _x) -> dict:
    from cnnlib import inference
    return inference.reference_statistics(_x)


def ood_reference(pixels, source: str) -> dict | None:
    """The test images' range of brightness, contrast and border brightness (for ood_warning), or None."""
    return None if pixels is None else _ood_reference(source, pixels[0])


def probabilities(ctx: Ctx, pick) -> np.ndarray:
    """Class probabilities (K,) of one picked image."""
    return _probabilities(ctx.key, pick.key, ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=64)
def _feature_maps(ckpt_key: str, image_key: str, layer: str, scale: str, _model, _x01) -> dict:
    from cnnlib.models import anatomy as interpret
    return interpret.feature_maps(_model, _x01, [layer], scale=scale)[layer]


def feature_maps(ctx: Ctx, pick, layer: str, scale: str) -> dict:
    """{"maps": (C, h, w) in [0, 1], "raw", "min", "max"} of one layer for one image."""
    with ui.spinner("Computing activations…"):
        return _feature_maps(ctx.key, pick.key, layer, scale, ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=128)
def _attributions(ckpt_key: str, image_key: str, method: str, targets: tuple, layer: str | None, scale: str,
                  options: tuple, _model, _x01) -> list[dict]:
    from cnnlib.explain import attribution
    results = attribution.attribute_many(_model, [_x01] * len(targets), method, targets=list(targets),
                                         scale=scale, layer=layer, **dict(options))
    keep = ("heatmap", "raw", "target", "probs", "scale", "method", "layer", "delta")
    return [{k: r[k] for k in keep if k in r} for r in results]


def attributions(ctx: Ctx, pick, method: str, targets, layer: str | None = None, scale: str = "image",
                 **options) -> list[dict]:
    """One attribution per target class for one image (heatmap (H, W) in [0, 1], raw, target, probs, ...).
    The overlay's opacity is applied afterwards (pictures.overlay) and never recomputes this."""
    import adapters
    layer = (layer or gradcam_default(ctx)) if method in adapters.layer_methods() else None
    with ui.spinner("Computing the attribution…"):
        return _attributions(ctx.key, pick.key, method, tuple(int(t) for t in targets), layer, scale,
                             tuple(sorted(options.items())), ctx.model, pick.x01)


def attribution_methods() -> dict[str, str]:
    """{method: label} in the order the pages offer them."""
    from cnnlib.explain import attribution
    return {m: attribution.METHOD_LABELS.get(m, m) for m in attribution.METHODS}


# ----------------------------------------------------------------------------- selections

def selection_order(indices: np.ndarray, preds: dict, by: str) -> np.ndarray:
    """Selected test indices ordered by loss (hardest first) or by confidence (most sure first)."""
    from cnnlib.diagnose import evaluate
    res = evaluate.query_misclassified({**preds, "targets": np.asarray(preds["targets"])[indices],
                                        "preds": np.asarray(preds["preds"])[indices],
                                        "probs": np.asarray(preds["probs"])[indices],
                                        "losses": None if preds.get("losses") is None
                                        else np.asarray(preds["losses"])[indices]},
                                       sort=by, only_wrong=False)
    return np.asarray(indices)[res["indices"]]


# ----------------------------------------------------------------------------- many classes

@st.cache_data(show_spinner=False, max_entries=16)
def _class_order(ckpt_key: str, cm: np.ndarray) -> np.ndarray:
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import pdist
    cm = np.asarray(cm, np.float64)
    k = len(cm)
    if k < 3:
        return np.arange(k)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    affinity = (share + share.T) / 2
    np.fill_diagonal(affinity, 1.0)                 # never a zero row: the cosine distance stays defined
    tree = hierarchy.linkage(pdist(affinity, "cosine"), "average")
    return hierarchy.leaves_list(tree).astype(np.int64)


def class_order(ctx: Ctx, cm: np.ndarray) -> np.ndarray:
    """The classes in an order where the ones the model confuses sit side by side: average-linkage
    clustering of the symmetrised row-normalised confusion matrix (each class described by whom it is
    confused with), leaves left to right. A permutation of range(K); cached per checkpoint and matrix."""
    with ui.spinner("Ordering the classes by similarity…"):
        return _class_order(ctx.key, np.asarray(cm, np.int64))


def distinct_colours(centres: np.ndarray, palette: list[str]) -> list[str]:
    """One palette colour per class so that classes whose map centres (K, 2) are close get different colours:
    greedily, class by class, each takes the colour whose nearest class already wearing it is
    farthest away (an unused colour first). With more classes than colours each colour recurs far apart."""
    centres = np.asarray(centres, np.float64)
    k, n = len(centres), len(palette)
    d = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    nearest = np.full((k, n), np.inf)               # [class, colour]: distance to the nearest class of that colour
    out = [0] * k
    for i in range(k):
        c = int(np.argmax(nearest[i]))
        out[i] = c
        nearest[:, c] = np.minimum(nearest[:, c], d[:, i])
    return [palette[c] for c in out]


def only_classes(res: dict, true_classes: list[int], pred_classes: list[int], limit: int | None) -> dict:
    """A query_misclassified result narrowed to some true and/or predicted classes (an empty list: any), its
    order kept; `count` is the number that match, the arrays hold the first `limit` of them."""
    keep = np.ones(len(res["indices"]), bool)
    if true_classes:
        keep &= np.isin(res["targets"], true_classes)
    if pred_classes:
        keep &= np.isin(res["preds"], pred_classes)
    rows = np.flatnonzero(keep)
    count = len(rows)
    rows = rows[:limit] if limit is not None else rows
    out = {k: (v[rows] if isinstance(v, np.ndarray) and len(v) == len(keep) else v) for k, v in res.items()}
    out["top3"] = [res["top3"][i] for i in rows]
    out["count"] = count
    return out
