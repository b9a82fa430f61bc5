"""One image for the model: the picker of the Feature maps and Saliency pages (a test image by class and
position, or an upload), decoded uploads (st.cache_data), and the out-of-distribution hint for uploads."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import streamlit as st

import adapters
import compute
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")


@dataclass
class Picked:
    """One image for the model: x01 float32 (C, H, W) in [0, 1] at the model's size."""
    key: str                 # cache key (test index + dataset, or the upload's hash + input shape)
    x01: np.ndarray
    caption: str
    label: int | None = None              # true class when known (test images)
    original: np.ndarray | None = None    # the upload before resizing (thumbnail), for display
    size: tuple[int, int] | None = None   # the upload's own width and height

    @property
    def uploaded(self) -> bool:
        return self.key.startswith("upload:")


@st.cache_data(show_spinner=False, max_entries=32)
def _decode_upload(sha: str, shape: tuple, prep: str, _blob: bytes, _preprocessing) -> tuple:
    from PIL import Image
    from cnnlib.data import images
    im = images.load_image(_blob)
    x01 = images.to_model_input(im, list(shape), _preprocessing).numpy()
    thumb = im.copy()
    thumb.thumbnail((256, 256), Image.Resampling.LANCZOS)
    return x01, np.asarray(thumb.convert("RGB")), im.size


def test_image(ctx: Ctx, x: np.ndarray, y: np.ndarray, idx: int) -> Picked:
    """Test image `idx` of the test pixels (x, y) as a Picked (one cache key format everywhere)."""
    label = int(y[idx])
    return Picked(f"test:{testdata.pixels_key(ctx)}:{idx}", x[idx].astype(np.float32) / 255.0,
                  f"test image #{idx} · true class: {ctx.classes[label]}", label)


def upload(ctx: Ctx, up) -> Picked | None:
    """An st.file_uploader file as a Picked; st.error (one sentence) and None when it is not a usable image."""
    blob = up.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    prep = ctx.meta.get("preprocessing")
    try:
        x01, thumb, size = _decode_upload(sha, tuple(ctx.meta["input_shape"]), repr(prep), blob, prep)
    except CNNLibError as e:
        st.error(f"{up.name} cannot be used: {ui.one_sentence(str(e))}")
        return None
    except Exception as e:  # noqa: BLE001 - hostile files must end in a sentence, not a traceback
        log.exception("decoding upload %s", up.name)
        st.error(f"{up.name} cannot be used: it could not be decoded as an image ({type(e).__name__}).")
        return None
    return Picked(f"upload:{sha}:{ctx.meta['input_shape']}:{hash(repr(prep))}", x01,
                  f"{up.name} (resized to the model's input)", None, thumb, tuple(size))


def model_view_caption(size: tuple[int, int], input_shape, preprocessing: dict | None) -> str | None:
    """One sentence on how an upload of `size` (width, height) became the model's input, step by step as
    cnnlib.data.images.fit_image does it (sizes with no-break spaces: "32 × 32" stays on one line); None when
    the upload already has the model's size."""
    _, h, w = (int(v) for v in input_shape)
    iw, ih = (int(v) for v in size)
    if (iw, ih) == (w, h):
        return None
    pre = preprocessing or {}
    resize, crop = int(pre.get("resize") or 0), int(pre.get("crop") or 0)
    steps, cw, ch = [], iw, ih
    if resize > 0:
        scale = resize / min(cw, ch)
        cw, ch = max(1, round(cw * scale)), max(1, round(ch * scale))
        steps.append(f"resized to {cw}\u00a0×\u00a0{ch} (shorter side {resize} px)")
    if crop > 0 and (cw > crop or ch > crop):
        cw, ch = min(crop, cw), min(crop, ch)
        steps.append(f"then its centre {cw}\u00a0×\u00a0{ch} cropped")
    if (cw, ch) != (w, h):
        squeezed = abs(cw / ch - w / h) > 0.01
        steps.append(f"{'then ' if steps else ''}{'squeezed' if squeezed else 'scaled'} to {w}\u00a0×\u00a0{h}"
                     + (" (its proportions change)" if squeezed else ""))
    return f"What the model sees: your {iw}\u00a0×\u00a0{ih} image {', '.join(steps)}."


def show_model_view(ctx: Ctx, pick: Picked, key: str) -> None:
    """For an upload whose size is not the model's: the upload and the model's input side by side, with
    model_view_caption's sentence (a 1000 x 700 photo squeezed to 32 x 32 is not what the user sent)."""
    if not pick.uploaded or pick.size is None or pick.original is None:
        return
    sentence = model_view_caption(pick.size, ctx.meta["input_shape"], ctx.meta.get("preprocessing"))
    if sentence is None:
        return
    import pictures
    with st.container(key=key, horizontal=True, gap="small", vertical_alignment="center"):
        st.image(pick.original, width=128)
        st.image(pictures.enlarge(pick.x01, 128), width=128)
        st.caption(sentence, width=360)


def pick_image(ctx: Ctx, prefix: str) -> Picked | None:
    """A test image (by class and position, when the test pixels are on disk) or an upload. Shows st.error for
    a bad upload and returns None when there is nothing to show."""
    pixels = testdata.test_pixels(ctx, notice=False)
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
    key = f"{prefix}_upload"
    up = st.file_uploader("Upload an image (PNG, JPEG, …)", type=adapters.image_types(), key=key,
                          on_change=_keep_upload, args=(key,))
    if pixels is None:
        st.caption("No test images on disk: upload any picture; it is resized to the model's input size.")
    if up is None and _KEPT + key in st.session_state:       # back on this page: the upload is still here
        up = _Kept(*st.session_state[_KEPT + key])
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(f"Showing {up.name}, which you uploaded earlier; upload another image to replace it.")
        c2.button("Forget it", key=f"{prefix}_forget", on_click=st.session_state.pop, args=(_KEPT + key, None),
                  icon=":material/close:")
    if up is None:
        st.info("Upload an image to see what the model makes of it.")
        return None
    pick = upload(ctx, up)
    if pick is not None:
        show_model_view(ctx, pick, f"{prefix}_model_view")
    return pick


_KEPT = "imagepick.kept:"          # session state: (name, bytes) of the last upload per uploader
KEEP_BYTES = 20 * 2**20            # uploads up to this size are kept when the user leaves the page


@dataclass
class _Kept:
    """An upload kept in session state, with the part of UploadedFile's interface `upload` uses."""
    name: str
    blob: bytes

    def getvalue(self) -> bytes:
        return self.blob


def _keep_upload(key: str) -> None:
    """on_change of an uploader: remember its file (Streamlit drops it when the user leaves the page), or
    forget it when the user removed it."""
    f = st.session_state.get(key)
    if f is None:
        st.session_state.pop(_KEPT + key, None)
    elif f.size <= KEEP_BYTES:
        st.session_state[_KEPT + key] = (f.name, f.getvalue())


def ood_notice(ctx: Ctx, pick: Picked, probs: np.ndarray) -> None:
    """For uploads: st.warning with cnnlib's sentence when the image is unlike the training data."""
    if not pick.uploaded:
        return
    try:
        pixels = testdata.test_pixels(ctx, notice=False)
        reference = compute.ood_reference(pixels, testdata.pixels_key(ctx))
        sentence = adapters.ood_warning(ctx.meta, pick.x01, probs, reference)
    except Exception:  # noqa: BLE001 - a missing hint must never cost the page
        log.debug("ood_warning failed", exc_info=True)
        return
    if sentence:
        st.warning(sentence, icon=":material/help:")
