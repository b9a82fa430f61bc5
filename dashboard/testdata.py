"""The checkpoint's test pixels: which dataset they come from (cnnlib.data.datasets.checkpoint_data_spec, the sidebar's
Data folder overriding it), loading them once per dataset (shared by every checkpoint of that
dataset; st.cache_resource, so the memory-mapped arrays are shared, never copied into each session),
the one-sentence help when they are not on disk, and one line naming the files skipped as unreadable."""
from __future__ import annotations

import logging

import numpy as np
import streamlit as st

import adapters
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")


def pixels_key(ctx: Ctx) -> str:
    """Names the test pixels in cache keys: the dataset, not the checkpoint."""
    return adapters.checkpoint_data_spec(ctx.meta, ctx.data).key()


@st.cache_resource(show_spinner=False, max_entries=4)   # a resource: the memory-mapped arrays are shared, not copied
def _test_split(key: str, override: str, _meta: dict) -> tuple[np.ndarray, np.ndarray]:
    return adapters.load_test_split(_meta, override)


def load(ctx: Ctx) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, C, H, W), y int64 (N,)); raises CNNLibError when they are not on disk."""
    try:
        return _test_split(pixels_key(ctx), ctx.data, ctx.meta)
    except CNNLibError:
        raise
    except Exception as e:  # noqa: BLE001 - anything else reads the same to the user
        log.exception("loading the test images")
        raise CNNLibError(f"reading the test images failed ({type(e).__name__}: {str(e)[:200]})") from None


@st.cache_data(show_spinner=False, max_entries=16)
def _skipped(key: str, override: str, _meta: dict) -> list[str]:
    from cnnlib.data import spec as data_spec
    return data_spec.skipped_files(_meta, "test", data=override or None)


def skipped_note(ctx: Ctx) -> None:
    """One caption (once per page run) when the test split skipped unreadable files: how many and which."""
    if getattr(ctx, "_skipped_noted", False):
        return
    ctx._skipped_noted = True
    skipped = _skipped(pixels_key(ctx), ctx.data, ctx.meta)
    if skipped:
        from cnnlib.data.cache import skipped_sentence
        st.caption(skipped_sentence(skipped) + " The other test images are used.")


def test_pixels(ctx: Ctx, notice: bool = True, why: str = "") -> tuple[np.ndarray, np.ndarray] | None:
    """The test pixels, or None when they are not on disk. With `notice`, a headline says in one sentence what
    is wrong and how to fix it (`why` names what needs them), the full error in an expander below. When some
    files were skipped as unreadable, a caption says so (once per page run)."""
    try:
        with ui.spinner("Loading the test images…"):
            pixels = load(ctx)
    except CNNLibError as e:
        if notice:
            missing_notice(ctx, e, why)
        return None
    skipped_note(ctx)
    return pixels


def missing_notice(ctx: Ctx, error: Exception | None = None, why: str = "") -> None:
    need = why or "This part of the page"
    headline = adapters.missing_data_help(ctx.meta, error, ctx.data)
    st.info(f"**{need} needs the test images.** {headline}", icon=":material/image_not_supported:")
    with st.expander("Details"):
        if error is not None:
            st.caption(str(error))
        st.caption("Everything computed from the checkpoint alone (curves, confusion matrix, per-class metrics, "
                   "calibration, filters, uploaded images) keeps working.")
