"""What every CNN Lens page shares: the cached loaders and the sidebar (helpers that do not load
anything, such as remembered widgets, error display and downloads, are in ui.py).

Pages stay thin: `ctx = lens.setup(...)` draws the sidebar (checkpoint picker, data folder) and
the learner's introduction, then a page asks this module for what it shows and renders it.

Caching (one place, so several browser sessions share the work):
  * models            st.cache_resource, keyed by checkpoint path + mtime + size, or by the upload's SHA-256
  * arrays            st.cache_data: test pixels (keyed by the dataset, so checkpoints of one dataset share
                      them), predictions, reports, layer tables, feature maps, attributions, embeddings,
                      each keyed by (checkpoint, image, method, options) and nothing else, so an unrelated
                      widget (overlay opacity, colour map, a filter elsewhere) never recomputes them.
The cnnlib functions called here never touch the shared model (they work on private copies), so
sessions can run attributions at the same time.

Widget keys carry their page's prefix (eval_, err_, sal_, ...). `ui.kept(key, default)` makes a widget
remember its value across pages (Streamlit forgets widget state when a page stops showing it).
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent
REPO_ROOT = DASHBOARD_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

import ui  # noqa: E402
from cnnlib.errors import CNNLibError  # noqa: E402

log = logging.getLogger("cnnlens")

CHECKPOINTS_ENV = "CNNLENS_CHECKPOINTS"
TRAIN_COMMAND = "python -m cnnlib train --data cifar10 --model simple_cnn --epochs 10 --out checkpoints/simple_cnn.pt"
NAMED_DATASETS = ("cifar10", "mnist", "fashion-mnist")
IMAGE_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ppm", "pgm"]
PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}

# How often each cached computation really ran (cache misses); tests read it to prove caching.
COMPUTE_COUNTS: collections.Counter = collections.Counter()


# =============================================================================
# checkpoints on disk

def checkpoint_dir() -> Path:
    """$CNNLENS_CHECKPOINTS, or checkpoints/ at the repository root (relative paths: from the repo root)."""
    p = Path(os.path.expanduser(os.environ.get(CHECKPOINTS_ENV) or "checkpoints"))
    return p if p.is_absolute() else REPO_ROOT / p


def list_checkpoints(folder: Path | None = None) -> list[Path]:
    """*.pt / *.pth files in the checkpoint folder, most recently trained first (resume states left out)."""
    folder = folder or checkpoint_dir()
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        if p.suffix not in (".pt", ".pth") or p.name.endswith(".resume.pt"):
            continue
        try:
            if p.is_file():
                st_ = p.stat()
                created = checkpoint_brief(str(p), st_.st_mtime_ns, st_.st_size).get("created", 0.0)
                found.append((created or st_.st_mtime, st_.st_mtime, p))
        except OSError:   # vanished while listing
            continue
    return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


@st.cache_data(show_spinner=False, max_entries=512)
def checkpoint_brief(path: str, mtime_ns: int, size: int) -> dict:
    """When a checkpoint was trained (its own `created` time, which survives a git clone, unlike the file's
    mtime) and its class names; {} for files that are not readable checkpoints (the picker still lists them
    so that choosing one shows why)."""
    from cnnlib.checkpoint import load_checkpoint
    try:
        ckpt = load_checkpoint(path)
    except CNNLibError:
        return {}
    try:
        created = datetime.datetime.fromisoformat(str(ckpt.get("created", ""))).timestamp()
    except ValueError:
        created = 0.0
    return {"created": created, "classes": list(ckpt["classes"])}


def same_dataset(choices: list[str], classes: list[str]) -> list[str]:
    """The checkpoint files among `choices` trained on the same classes (the runs worth comparing)."""
    out = []
    for c in choices:
        try:
            st_ = os.stat(c)
        except OSError:
            continue
        if checkpoint_brief(c, st_.st_mtime_ns, st_.st_size).get("classes") == list(classes):
            out.append(c)
    return out


# =============================================================================
# state that survives page switches


# =============================================================================
# models

@st.cache_resource(show_spinner=False, max_entries=16)
def _model_from_path(path: str, mtime_ns: int, size: int):
    from cnnlib.inference import load_model
    COMPUTE_COUNTS["model"] += 1
    return load_model(path, "cpu")


@st.cache_resource(show_spinner=False, max_entries=8)
def _model_from_upload(sha: str, _blob: bytes):
    from cnnlib.inference import load_model
    COMPUTE_COUNTS["model"] += 1
    return load_model(_blob, "cpu")


@dataclass
class Ctx:
    """The checkpoint a page looks at."""
    key: str            # cache key: "<path>@<mtime_ns>" or "upload:<sha256>:<file name>"
    label: str          # what people read: the file name
    model: Any          # nn.Module in eval(), model.meta = checkpoint metadata
    data: str           # the sidebar's data folder override ("" = the checkpoint's own dataset)

    @property
    def meta(self) -> dict:
        return self.model.meta

    @property
    def classes(self) -> list[str]:
        return list(self.model.meta["classes"])


def upload_choice(sha: str, name: str) -> str:
    return f"upload:{sha}:{name}"


def choice_label(choice: str) -> str:
    """What the picker shows: "name.pt · date" for files, "name.pt (uploaded)" for uploads."""
    if choice.startswith("upload:"):
        return f"{choice.split(':', 2)[2]} (uploaded)"
    p = Path(choice)
    try:
        st_ = p.stat()
        stamp = checkpoint_brief(str(p), st_.st_mtime_ns, st_.st_size).get("created") or st_.st_mtime
        when = datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
    except OSError:
        when = "gone"
    return f"{p.name} · {when}"


def open_choice(choice: str, data: str = "") -> Ctx:
    """A picker choice (a path or upload_choice()) -> Ctx; raises CNNLibError with a clear sentence."""
    if choice.startswith("upload:"):
        sha = choice.split(":", 2)[1]
        name, blob = st.session_state.get("_lens_uploads", {}).get(sha, (None, None))
        if blob is None:
            raise CNNLibError("the uploaded checkpoint is no longer in this session; upload it again")
        return Ctx(choice, name, _model_from_upload(sha, blob), data)
    try:
        stat = os.stat(choice)
    except OSError:
        raise CNNLibError(f"checkpoint {choice} does not exist any more") from None
    model = _model_from_path(choice, stat.st_mtime_ns, stat.st_size)
    return Ctx(f"{choice}@{stat.st_mtime_ns}", Path(choice).name, model, data)


def checkpoint_choices() -> list[str]:
    """Everything the picker offers: files newest first, then this session's uploads."""
    uploads = st.session_state.get("_lens_uploads", {})
    return [str(p) for p in list_checkpoints()] + [upload_choice(sha, name) for sha, (name, _) in uploads.items()]


def _sidebar() -> tuple[str | None, str, str | None]:
    """Draw the checkpoint picker; returns (choice, data override, upload error)."""
    ss = st.session_state
    uploads = ss.setdefault("_lens_uploads", {})
    bad = ss.setdefault("_lens_bad_uploads", {})
    top, bottom = st.sidebar.container(), st.sidebar.container()
    upload_error = None
    with bottom:
        up = st.file_uploader("…or upload a checkpoint (.pt)", type=["pt", "pth"], key="lens_upload",
                              help="A checkpoint written by `python -m cnnlib train`. It stays available "
                                   "on every page for this browser session.")
        if up is not None:
            blob = up.getvalue()
            sha = hashlib.sha256(blob).hexdigest()
            if sha in bad:
                upload_error = bad[sha]
            elif sha not in uploads:
                try:
                    _model_from_upload(sha, blob)
                except CNNLibError as e:
                    bad[sha] = upload_error = f"The uploaded file {up.name} cannot be used: {e}"
                except Exception as e:  # noqa: BLE001 - a hostile file must never reach a traceback
                    log.exception("upload %s", up.name)
                    bad[sha] = upload_error = (f"The uploaded file {up.name} cannot be used: it could not be read "
                                               f"as a checkpoint ({type(e).__name__}).")
                else:
                    uploads[sha] = (up.name, blob)
                    ui.remember("lens_ckpt", upload_choice(sha, up.name))
            if upload_error:
                st.error(upload_error)
    with top:
        choices = checkpoint_choices()
        if choices:
            st.selectbox("Checkpoint", choices, format_func=choice_label,
                         help=f"Newest first, from {checkpoint_dir()} (set {CHECKPOINTS_ENV} to look elsewhere).",
                         **ui.kept("lens_ckpt", choices[0], choices))
        else:
            st.caption(f"No checkpoints in `{checkpoint_dir()}` yet.")
        st.text_input("Data folder (optional)", placeholder="the checkpoint's own dataset",
                      help="Where the test images are: an ImageFolder tree (train/<class>/…, test/<class>/…) "
                           "or cifar10 / mnist / fashion-mnist. Empty: the dataset recorded in the checkpoint. "
                           "Relative paths start at the repository root.",
                      **ui.kept("lens_data", ""))
    choice = ss.get("_keep_lens_ckpt") if choices else None
    return choice, (ss.get("_keep_lens_data") or "").strip(), upload_error


def setup(title: str, intro: str, needs_model: bool = True, icon: str = "🔎") -> Ctx | None:
    """Page config, sidebar picker, title and the learner's introduction; returns the chosen checkpoint.

    needs_model=True: when no checkpoint can be opened, explain why (and how to train one) and stop the page.
    """
    st.set_page_config(page_title=f"{title} · CNN Lens", page_icon=icon, layout="wide")
    choice, data, upload_error = _sidebar()
    st.title(title)
    st.markdown(intro)
    ctx, problem = None, None
    if choice:
        try:
            ctx = open_choice(choice, data)
        except CNNLibError as e:
            problem = f"Cannot open {choice_label(choice)}: {e}"
        except Exception as e:  # noqa: BLE001
            log.exception("opening %s", choice)
            problem = f"Cannot open {choice_label(choice)}: it is not a readable checkpoint ({type(e).__name__})."
    if ctx is not None:
        st.sidebar.caption(f"{ctx.meta['model']['name']} · {len(ctx.classes)} classes · "
                           f"input {'×'.join(map(str, ctx.meta['input_shape']))}")
        return ctx
    if problem:
        st.error(problem + " Pick another checkpoint in the sidebar, or upload one.")
    elif upload_error:
        st.error(upload_error)
    else:
        no_checkpoint_help()
    if needs_model:
        st.stop()
    return None


def no_checkpoint_help() -> None:
    st.info(f"No checkpoint yet in `{checkpoint_dir()}`. Train one from the repository root "
            "(about 5 minutes on a laptop CPU), then reload this page — or upload a `.pt` file in the sidebar:")
    st.code(TRAIN_COMMAND, language="bash")


# =============================================================================
# errors


# =============================================================================
# test pixels


def _resolve(path: str) -> str:
    p = os.path.expanduser(path.strip())
    return p if os.path.isabs(p) else str(REPO_ROOT / p)


def dataset_spec(meta: dict, override: str = "") -> tuple:
    """Everything that decides the test pixels of a checkpoint: (data, root, classes, shape, split settings).

    Stored relative paths are relative to the repository root. A named dataset whose recorded root is
    missing falls back to $CNNLIB_DATA_ROOT (or ~/.cache/cnnlib)."""
    from cnnlib.data import resolve_root
    info, cfg = meta.get("data") or {}, meta.get("config") or {}
    root = None
    if override:
        data = override.lower() if override.lower() in NAMED_DATASETS else _resolve(override)
        if data in NAMED_DATASETS:
            root = resolve_root(None)
    else:
        name, path = info.get("name"), info.get("path")
        if name in NAMED_DATASETS:
            data = name
            root = _resolve(path) if path and os.path.isdir(_resolve(path)) else resolve_root(None)
        elif path:
            data = _resolve(path)
        else:
            data, root = "cifar10", resolve_root(None)
    return (data, root, tuple(meta["classes"]), tuple(meta["input_shape"]), info.get("split_seed", 0),
            cfg.get("val_size", 5000), cfg.get("test_fraction", 0.1), cfg.get("image_size", 0))


@st.cache_data(show_spinner=False, max_entries=4)
def _test_split(spec: tuple, _meta: dict) -> tuple[np.ndarray, np.ndarray]:
    from cnnlib.data import load_checkpoint_split
    COMPUTE_COUNTS["pixels"] += 1
    x, y = load_checkpoint_split(_meta, "test", data=spec[0], root=spec[1])
    return x.numpy(), y.numpy()


def test_pixels(ctx: Ctx, notice: bool = True, why: str = "") -> tuple[np.ndarray, np.ndarray] | None:
    """(x uint8 (N, C, H, W), y int64 (N,)) of the checkpoint's test split, or None when not on disk
    (then, if `notice`, an info box says how to get them: `why` names what needs them)."""
    try:
        with ui.spinner("Loading the test images…"):
            return _test_split(dataset_spec(ctx.meta, ctx.data), ctx.meta)
    except Exception as e:  # noqa: BLE001 - DatasetError above all; anything else is shown the same way
        if not isinstance(e, CNNLibError):
            log.exception("loading the test images")
            e = CNNLibError(f"reading them failed ({type(e).__name__}: {str(e)[:200]})")
        if notice:
            need = why or "This part of the page"
            st.info(f"**{need} needs the test images, which are not on disk:** {how_to_get_pixels(ctx.meta)}")
            with st.expander("Details"):
                st.caption(f"{e} Everything computed from the checkpoint alone (curves, confusion matrix, "
                           "per-class metrics, calibration, filters, uploaded images) keeps working.")
        return None


def how_to_get_pixels(meta: dict) -> str:
    """One sentence for a learner: where this checkpoint's test images come from."""
    info = meta.get("data", {})
    name = str(info.get("name", ""))
    if name == "fashion-mnist":
        return ("`apt-get install dataset-fashion-mnist` provides them offline (cnnlib finds Debian's files "
                "itself), or set **Data folder** in the sidebar to a folder that holds Fashion-MNIST.")
    if name in NAMED_DATASETS:
        return (f"on a machine with network access, `python -m cnnlib train --data {name}` downloads {name} "
                f"once into the data root, or set **Data folder** in the sidebar to a folder that holds it.")
    if name.startswith("cifar10"):
        return ("unpack the CIFAR-10 copy with `mkdir -p .cache/cifar10-jpeg && tar -xzf "
                "../shared/datasets/cifar10-jpeg.tar.gz -C .cache/cifar10-jpeg` (or type any CIFAR-10 "
                "ImageFolder into **Data folder** in the sidebar).")
    return (f"put the dataset back at `{info.get('path', '?')}`, or type its folder (train/ and test/ with one "
            "sub-folder per class) into **Data folder** in the sidebar.")


def pixels_key(ctx: Ctx) -> str:
    return hashlib.sha1(repr(dataset_spec(ctx.meta, ctx.data)).encode()).hexdigest()[:12]


# =============================================================================
# predictions and reports

@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(ckpt_key: str, source: str, _model, _x, _y) -> dict | None:
    from cnnlib import evaluate
    COMPUTE_COUNTS["predictions"] += 1
    if _x is None:
        return evaluate.stored_predictions(_model.meta)
    return evaluate.predictions_for(_model, "test", _x, _y)


@st.cache_data(show_spinner=False, max_entries=16)
def _report(ckpt_key: str, source: str, _preds: dict) -> dict:
    from cnnlib.evaluate import compute_report
    COMPUTE_COUNTS["report"] += 1
    return compute_report(_preds["targets"], _preds["probs"], _preds.get("classes"), _preds["losses"],
                          preds=_preds["preds"])


def evaluation(ctx: Ctx, pixels=None) -> tuple[dict | None, dict | None]:
    """(predictions, report) for the test split: the checkpoint's stored predictions, or computed from
    `pixels` when given (stored ones are reused when their labels match). (None, None) when neither exists."""
    source = "stored" if pixels is None else "pixels:" + pixels_key(ctx)
    with ui.spinner("Classifying the test images…"):
        preds = _predictions(ctx.key, source, ctx.model, *(pixels if pixels is not None else (None, None)))
    if preds is None:
        return None, None
    preds = dict(preds, classes=ctx.classes)
    return preds, _report(ctx.key, source, preds)


def stored_report(ctx: Ctx) -> dict | None:
    """The report of the checkpoint's stored test predictions (no pixels needed), or None."""
    return evaluation(ctx, None)[1]


def history(ctx: Ctx) -> list[dict]:
    """The per-epoch history without the filter snapshots (numbers only)."""
    return [{k: v for k, v in row.items() if k != "first_layer"} for row in ctx.meta.get("history") or []]


def filter_epochs(ctx: Ctx) -> list[int]:
    return [int(r["epoch"]) for r in ctx.meta.get("history") or [] if r.get("first_layer") is not None]


def filter_snapshot(ctx: Ctx, epoch: int):
    for r in ctx.meta.get("history") or []:
        if int(r["epoch"]) == int(epoch) and r.get("first_layer") is not None:
            return r["first_layer"]
    raise CNNLibError(f"the history has no filter snapshot for epoch {epoch}")


# =============================================================================
# layers, images, activations, attributions, embeddings

@st.cache_data(show_spinner=False, max_entries=16)
def _layers(ckpt_key: str, _model) -> list[dict]:
    from cnnlib.interpret import list_layers
    COMPUTE_COUNTS["layers"] += 1
    return list_layers(_model)


def layers(ctx: Ctx) -> list[dict]:
    """list_layers rows: name, type, output_shape, params, rf_size, rf_stride."""
    return _layers(ctx.key, ctx.model)


@st.cache_data(show_spinner=False, max_entries=16)
def _gradcam_default(ckpt_key: str, _model) -> str:
    from cnnlib.interpret import default_gradcam_layer
    return default_gradcam_layer(_model)


def gradcam_default(ctx: Ctx) -> str:
    return _gradcam_default(ctx.key, ctx.model)


@dataclass
class Picked:
    """One image for the model: x01 float32 (C, H, W) in [0, 1] at the model's size."""
    key: str                 # cache key (test index + dataset, or the upload's hash + input shape)
    x01: np.ndarray
    caption: str
    label: int | None = None  # true class when known (test images)
    original: np.ndarray | None = None   # the upload before resizing (thumbnail), for display


@st.cache_data(show_spinner=False, max_entries=32)
def _decode_upload(sha: str, shape: tuple, _blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from cnnlib.images import load_image, to_model_input
    im = load_image(_blob)
    x01 = to_model_input(im, list(shape)).numpy()
    thumb = im.copy()
    thumb.thumbnail((256, 256), Image.Resampling.LANCZOS)
    return x01, np.asarray(thumb.convert("RGB"))


def test_image(ctx: Ctx, x: np.ndarray, y: np.ndarray, idx: int) -> Picked:
    """Test image `idx` of the checkpoint's test pixels (x, y) as a Picked (one cache key format everywhere)."""
    label = int(y[idx])
    return Picked(f"test:{pixels_key(ctx)}:{idx}", x[idx].astype(np.float32) / 255.0,
                  f"test image #{idx} · true class: {ctx.classes[label]}", label)


def pick_image(ctx: Ctx, prefix: str) -> Picked | None:
    """The image picker of the Feature maps and Saliency pages: a test image (by class and position, when the
    test pixels are on disk) or an upload. Shows st.error for a bad upload and returns None when there is
    nothing to show."""
    pixels = test_pixels(ctx, notice=False)
    sources = ["Test image", "Upload an image"] if pixels is not None else ["Upload an image"]
    src = st.radio("Image", sources, horizontal=True, **ui.kept(f"{prefix}_src", sources[0], sources))
    if src == "Test image":
        x, y = pixels
        names = ["any class"] + ctx.classes
        c1, c2 = st.columns([1, 2])
        cls = c1.selectbox("Class", names, **ui.kept(f"{prefix}_class", "any class", names))
        pool = np.arange(len(y)) if cls == "any class" else np.flatnonzero(y == ctx.classes.index(cls))
        if len(pool) == 0:
            st.warning(f"The test split has no {cls} images.")
            return None
        if len(pool) > 1:
            pos = c2.slider(f"Which one ({len(pool)} images)", 1, len(pool),
                            **ui.kept(f"{prefix}_pos", 1, bounds=(1, len(pool))))
        else:
            pos = 1
            c2.caption("The only test image of this class.")
        return test_image(ctx, x, y, int(pool[pos - 1]))
    up = st.file_uploader("Upload an image (PNG, JPEG, …)", type=IMAGE_TYPES, key=f"{prefix}_upload")
    if pixels is None:
        st.caption("No test images on disk: upload any picture; it is resized to the model's input size.")
    if up is None:
        st.info("Upload an image to see what the model makes of it.")
        return None
    blob = up.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    try:
        x01, thumb = _decode_upload(sha, tuple(ctx.meta["input_shape"]), blob)
    except CNNLibError as e:
        st.error(f"{up.name} cannot be used: {e}")
        return None
    except Exception as e:  # noqa: BLE001 - hostile files must end in a sentence, not a traceback
        log.exception("decoding upload %s", up.name)
        st.error(f"{up.name} cannot be used: it could not be decoded as an image ({type(e).__name__}).")
        return None
    return Picked(f"upload:{sha}:{ctx.meta['input_shape']}", x01, f"{up.name} (resized to the model's input)",
                  None, thumb)


@st.cache_data(show_spinner=False, max_entries=64)
def _probabilities(ckpt_key: str, image_key: str, _model, _x01) -> np.ndarray:
    import torch

    from cnnlib.inference import normalize
    COMPUTE_COUNTS["probabilities"] += 1
    x = torch.from_numpy(np.ascontiguousarray(_x01, np.float32))[None]
    with torch.inference_mode():                      # eval mode, no hooks: safe on the shared model
        return torch.softmax(_model(normalize(x, _model.meta)).float(), 1)[0].numpy()


def probabilities(ctx: Ctx, pick: Picked) -> np.ndarray:
    """Class probabilities (K,) of one image."""
    return _probabilities(ctx.key, pick.key, ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=64)
def _feature_maps(ckpt_key: str, image_key: str, layer: str, scale: str, _model, _x01) -> dict:
    from cnnlib.interpret import feature_maps
    COMPUTE_COUNTS["feature_maps"] += 1
    return feature_maps(_model, _x01, [layer], scale=scale)[layer]


def feature_maps(ctx: Ctx, pick: Picked, layer: str, scale: str) -> dict:
    """{"maps": (C, h, w) in [0, 1], "raw", "min", "max"} of one layer for one image."""
    with ui.spinner("Computing activations…"):
        return _feature_maps(ctx.key, pick.key, layer, scale, ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=128)
def _attributions(ckpt_key: str, image_key: str, method: str, targets: tuple, layer: str | None, scale: str,
                  options: tuple, _model, _x01) -> list[dict]:
    from cnnlib.attribution import attribute_many
    COMPUTE_COUNTS["attributions"] += 1
    results = attribute_many(_model, [_x01] * len(targets), method, targets=list(targets), scale=scale,
                             layer=layer, **dict(options))
    keep = ("heatmap", "raw", "target", "probs", "scale", "method", "layer", "delta")
    return [{k: r[k] for k in keep if k in r} for r in results]


def attributions(ctx: Ctx, pick: Picked, method: str, targets, layer: str | None = None, scale: str = "image",
                 **options) -> list[dict]:
    """One attribution per target class for one image (heatmap (H, W) in [0, 1], raw, target, probs, ...).

    Cached per (checkpoint, image, method, targets, layer, scale, options): the overlay's opacity is
    applied afterwards (`overlay`) and never recomputes this."""
    layer = (layer or gradcam_default(ctx)) if method in LAYER_METHODS else None
    with ui.spinner("Computing the attribution…"):
        return _attributions(ctx.key, pick.key, method, tuple(int(t) for t in targets), layer, scale,
                             tuple(sorted(options.items())), ctx.model, pick.x01)


def overlay(x01: np.ndarray, heatmap: np.ndarray, alpha: float, cmap: str = "jet") -> np.ndarray:
    from cnnlib.attribution import overlay as _overlay
    return _overlay(x01, heatmap, alpha=alpha, cmap=cmap)


EMBED_DEFAULT = 2000      # images projected by default (all of them is a choice on the page)


def embed_subset(n_total: int, n: int) -> np.ndarray:
    """The test indices the Embeddings page projects: a fixed random sample (seed 0), in data order."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(0).permutation(n_total)[:n])


@st.cache_data(show_spinner=False, max_entries=8)
def _embedding(ckpt_key: str, source: str, n: int, _model, _x, _y) -> dict:
    from cnnlib.interpret import embed
    COMPUTE_COUNTS["embedding"] += 1
    idx = embed_subset(len(_y), n)
    out = embed(_model, _x[idx], _y[idx])
    out["indices"] = idx
    return out


def embedding(ctx: Ctx, pixels, n: int = EMBED_DEFAULT) -> dict:
    """embed() of `n` test images (embed_subset): xy (n, 2), labels, preds, correct, explained_variance,
    layer, dim, and indices (n,) into the test split."""
    with ui.spinner("Projecting the test images (penultimate features → PCA)…"):
        return _embedding(ctx.key, pixels_key(ctx), int(min(n, len(pixels[1]))), ctx.model, *pixels)


# =============================================================================
# cnnlib functions the pages call (pages import only lens)

def query_cell(preds: dict, true_class: int, pred_class: int, **kw) -> dict:
    from cnnlib.evaluate import query_cell as f
    return f(preds, true_class, pred_class, **kw)


def query_misclassified(preds: dict, **kw) -> dict:
    from cnnlib.evaluate import query_misclassified as f
    return f(preds, **kw)


def first_layer_filters(model_or_weight, scale: str = "filter") -> np.ndarray:
    from cnnlib.interpret import first_layer_filters as f
    return f(model_or_weight, scale=scale)


def layer_kernels(ctx: Ctx, name: str, scale: str = "filter") -> np.ndarray:
    from cnnlib.interpret import layer_kernels as f
    return f(ctx.model, name, scale=scale)


def conv_layer_names(ctx: Ctx) -> list[str]:
    from cnnlib.interpret import conv_layer_names as f
    return f(ctx.model)


def attribution_methods() -> dict[str, str]:
    """{method: label} in the order the Saliency page offers them."""
    from cnnlib.attribution import METHOD_LABELS, METHODS
    return {m: METHOD_LABELS.get(m, m) for m in METHODS}


LAYER_METHODS = ("gradcam", "guided_gradcam")


def summary(ctx: Ctx) -> dict:
    """checkpoint_summary of the loaded checkpoint (the state dict comes from the model)."""
    from cnnlib.checkpoint import checkpoint_summary
    return checkpoint_summary({**ctx.meta, "state_dict": ctx.model.state_dict()})


# =============================================================================
# background warm-up

_PREFETCHED: set = set()
_PREFETCH_LOCK = threading.Lock()


class _QuietPrefetch(logging.Filter):
    """Drop Streamlit's 'missing ScriptRunContext' warnings from the warm-up thread (it has no page)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("cnnlens-prefetch")


logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_QuietPrefetch())


def prefetch(ctx: Ctx | None) -> None:
    """Pages call this last. Once per checkpoint (and data folder) per server process, a background thread
    loads the test pixels, predictions, reports, layer table and default embedding into the same caches the
    pages read, so the other pages open quickly. It draws nothing. CNNLENS_PREFETCH=0 turns it off."""
    if ctx is None or os.environ.get("CNNLENS_PREFETCH", "1") == "0":
        return
    token = (ctx.key, ctx.data)
    with _PREFETCH_LOCK:
        if token in _PREFETCHED:
            return
        _PREFETCHED.add(token)

    def work():
        try:
            _layers(ctx.key, ctx.model)
            try:
                pixels = _test_split(dataset_spec(ctx.meta, ctx.data), ctx.meta)
            except CNNLibError:
                pixels = None
            evaluation(ctx, None)
            if pixels is not None:
                evaluation(ctx, pixels)
            _gradcam_default(ctx.key, ctx.model)
            if pixels is not None and len(pixels[1]) >= 2:
                embedding(ctx, pixels)
        except Exception:  # noqa: BLE001 - a warm-up must never hurt; the page will report the problem
            log.debug("prefetch failed", exc_info=True)

    threading.Thread(target=work, name=f"cnnlens-prefetch-{len(_PREFETCHED)}", daemon=True).start()
