"""Cached computations for the "why is it wrong" pages: label issues (confident learning), the training images
nearest to an image (a feature index per checkpoint and data, built once with a progress bar), 2-D projections
(PCA / t-SNE / UMAP, cached on disk by cnnlib), the image files of the test split,
and deletion / insertion faithfulness. Keyed like compute.py: (checkpoint, data, image, options); models and
arrays unhashed. cnnlib is imported inside each loader as a module, so a test can monkeypatch it."""
from __future__ import annotations

import threading

import numpy as np
import streamlit as st

import adapters
import compute
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

EMBED_DEFAULT = 2000        # test images projected by default (t-SNE / UMAP on 10,000 take tens of seconds)
NEIGHBOURS_K = 9
FAITH_N = 20                # test images averaged on the Faithfulness page by default
FAITH_METHODS = ("saliency", "integrated_gradients", "gradcam")   # the Faithfulness page's methods by default
FAITH_STEPS = 16            # points on each deletion / insertion curve by default
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
_INDEXES: dict = {}         # (checkpoint key, data key, split) -> Index (or influence features), shared by sessions
_INDEX_LOCK = threading.Lock()


def _source(ctx: Ctx, preds: dict) -> str:
    return "stored" if preds.get("source") == "stored" else "pixels:" + testdata.pixels_key(ctx)


# ----------------------------------------------------------------------------- label issues

@st.cache_data(show_spinner=False, max_entries=16)
def _label_issues(ckpt_key: str, source: str, ranked_by: str, _meta: dict, _preds: dict) -> dict:
    from cnnlib.diagnose import labels
    if source == "stored":
        return labels.label_issues_for(_meta, ranked_by=ranked_by)
    return labels.label_issues(_preds["targets"], _preds["probs"], ranked_by=ranked_by)


def label_issues(ctx: Ctx, preds: dict, ranked_by: str = "self_confidence") -> dict:
    """cnnlib.diagnose.labels.label_issues_for on the stored test predictions (label_issues on predictions computed
    from the test pixels when the checkpoint stores none): indices (flagged, worst first), ranking, quality,
    suggested, given_prob, suggested_prob, n_issues."""
    with ui.spinner("Looking for labels the model contradicts (confident learning)…"):
        return _label_issues(ctx.key, _source(ctx, preds), ranked_by, ctx.meta, preds)


def label_rankings() -> tuple[str, ...]:
    from cnnlib.diagnose import labels
    return tuple(labels.RANKINGS)


def trusted_accuracy() -> float:
    """The test accuracy from which confident learning's count is shown as an estimate of wrong labels."""
    from cnnlib.diagnose import labels
    return float(labels.TRUSTED_ACCURACY)


# ----------------------------------------------------------------------------- nearest training images

@st.cache_resource(show_spinner=False, max_entries=2)      # memory-mapped: shared, never copied per session
def _train_split(data_key: str, override: str, _meta: dict) -> tuple[np.ndarray, np.ndarray]:
    from cnnlib.data import spec as data_spec
    return data_spec.load_checkpoint_split(_meta, "train", data=override or None)


def train_pixels(ctx: Ctx, notice: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """The training split (x uint8 (N, C, H, W), y); None (and with `notice` one sentence) when not on disk."""
    try:
        with ui.spinner("Loading the training images…"):
            train = _train_split(testdata.pixels_key(ctx), ctx.data, ctx.meta)
    except CNNLibError as e:
        if notice:
            st.info("**The nearest training images need the training split on disk.** "
                    + adapters.missing_data_help(ctx.meta, e, ctx.data), icon=":material/image_not_supported:")
        return None
    if not len(train[1]):                       # a folder of <class>/* only: all of it is the test split
        if notice:
            st.info("**The nearest training images need training images.** This data folder holds only a test "
                    "set (no train/ folder), so there are none to compare with.", icon=":material/info:")
        return None
    return train


def neighbour_index(ctx: Ctx, train: tuple[np.ndarray, np.ndarray], split: str = "train"):
    """The checkpoint's feature index of its training images (or, split="test", of the test images `train`):
    cnnlib.diagnose.neighbors.build_index under the key index_for_checkpoint uses (so both share the disk
    cache), from the one feature pass per split (warmup.split_features: a bar on a miss), once per checkpoint."""
    key = (ctx.key, testdata.pixels_key(ctx), split)
    index = _INDEXES.get(key)
    if index is not None:
        return index
    import warmup
    from cnnlib.diagnose import features, neighbors
    store = warmup.split_features(ctx, split, train)
    with _INDEX_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            folder, data_key = features.checkpoint_feature_key(ctx.meta, split, ctx.data or None)
            index = neighbors.build_index(ctx.model, train[0], train[1], folder, data_key, features=store)
            while len(_INDEXES) >= 6:
                _INDEXES.pop(next(iter(_INDEXES)))
            _INDEXES[key] = index
    return index


@st.cache_data(show_spinner=False, max_entries=128)
def _neighbours(ckpt_key: str, index_key: str, image_key: str, k: int, _model, _index, _x01) -> dict:
    from cnnlib.diagnose import neighbors
    hits = neighbors.neighbors_of(_model, _index, _x01, k=k)
    return {key: hits[key] for key in ("indices", "similarities", "labels", "pred")}


def neighbours(ctx: Ctx, pick, k: int = NEIGHBOURS_K) -> dict | None:
    """The k training images nearest to a picked image in the model's feature space: indices (rows of the
    training split), similarities (cosine, largest first), labels, pred; None when the training split is
    not on disk (one sentence says so)."""
    train = train_pixels(ctx)
    if train is None:
        return None
    index = neighbour_index(ctx, train)
    hits = _neighbours(ctx.key, testdata.pixels_key(ctx), pick.key, int(k), ctx.model, index, pick.x01)
    return {**hits, "images": train[0][hits["indices"]]}


# ----------------------------------------------------------------------------- projections

@st.cache_data(show_spinner=False, max_entries=16)
def _projection(ckpt_key: str, data_key: str, method: str, n: int | None, _model, _data: str) -> dict:
    from cnnlib.diagnose import projection
    return projection.embedding_for_checkpoint(_model, method, n=n, data=_data or None)


def projection(ctx: Ctx, method: str, n: int, n_total: int) -> dict:
    """cnnlib.diagnose.projection.embedding_for_checkpoint of n test images: xy, indices, labels, preds, correct,
    seconds, cached (on disk, so each map is computed once per checkpoint, data, method and n)."""
    import warmup
    slow = "" if method == "pca" else " t-SNE and UMAP take tens of seconds for thousands of points, once: " \
                                      "the map is then cached on disk."
    warmup.split_features(ctx, "test", testdata.load(ctx))      # the one pass (a bar); the map then reads it
    with ui.spinner(f"Projecting {min(n, n_total):,} test images with {PROJECTIONS[method]}…{slow}"):
        return _projection(ctx.key, testdata.pixels_key(ctx), method, None if n >= n_total else int(n),
                           ctx.model, ctx.data)


# ----------------------------------------------------------------------------- the files behind the test split

@st.cache_data(show_spinner=False, max_entries=8)
def _split_paths(ckpt_key: str, data_key: str, _meta: dict, data: str) -> list[str] | None:
    from cnnlib.diagnose import compare
    return compare.split_paths(_meta, "test", data or None)


def split_paths(ctx: Ctx) -> list[str] | None:
    """The test split's image files (ImageFolder data), None for named datasets or when unreadable."""
    try:
        return _split_paths(ctx.key, testdata.pixels_key(ctx), ctx.meta, ctx.data)
    except (CNNLibError, OSError):
        return None


# ----------------------------------------------------------------------------- faithfulness

@st.cache_data(show_spinner=False, max_entries=128)
def _curves(ckpt_key: str, image_key: str, method: str, target: int, steps: int, baseline: str,
            _model, _x01, _heatmap) -> dict:
    from cnnlib.explain import faithfulness
    return faithfulness.deletion_insertion(_model, _x01, _heatmap, target, steps=steps, baseline=baseline)


def curves(ctx: Ctx, pick, method: str, target: int, steps: int, baseline: str) -> dict:
    """Deletion and insertion curves (and their AUCs) of one method's map for one image and class."""
    heat = compute.attributions(ctx, pick, method, [target])[0]["heatmap"]
    return _curves(ctx.key, pick.key, method, int(target), int(steps), baseline, ctx.model, pick.x01, heat)


def faith_subset(n_total: int, n: int) -> np.ndarray:
    """The test images the faithfulness average uses: a fixed random sample (seed 0), in data order."""
    return np.sort(np.random.default_rng(0).permutation(n_total)[:min(n, n_total)])


@st.cache_data(show_spinner=False, max_entries=64)
def _table_row(ckpt_key: str, data_key: str, method: str, n: int, steps: int, baseline: str, _model, _x) -> dict:
    from cnnlib.explain import faithfulness
    rows = faithfulness.faithfulness_table(_model, _x, [] if method == "random" else [method], steps=steps,
                                           baseline=baseline, include_random=method == "random")
    return rows[0]


def faith_table(ctx: Ctx, pixels, methods: list[str], n: int, steps: int, baseline: str) -> list[dict]:
    """cnnlib.explain.faithfulness.faithfulness_table over n test images, one method at a time (a progress bar; each
    method's row cached), plus the random-map reference last."""
    idx = faith_subset(len(pixels[1]), n)
    x = np.asarray(pixels[0][idx])
    todo = list(methods) + ["random"]
    labels = compute.attribution_methods()
    bar = st.progress(0.0, text="Deletion and insertion curves…")
    rows = []
    try:
        for i, m in enumerate(todo):
            bar.progress(i / len(todo), text=f"Deletion and insertion curves of {labels.get(m, 'a random map')} "
                                             f"on {len(idx)} test images ({i + 1} of {len(todo)})…")
            rows.append(_table_row(ctx.key, testdata.pixels_key(ctx), m, len(idx), int(steps), baseline,
                                   ctx.model, x))
    finally:
        bar.empty()
    return rows


def baselines() -> tuple[str, ...]:
    from cnnlib.explain import faithfulness
    return tuple(faithfulness.BASELINES)
