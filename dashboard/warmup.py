"""Background warm-up: once per checkpoint (and Data folder) per server process, a thread fills the caches
the pages read (test pixels, predictions, reports, layer table, default embedding) so the other pages open
quickly. It draws nothing. CNNLENS_PREFETCH=0 turns it off."""
from __future__ import annotations

import logging
import os
import threading

import compute
import testdata
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")
_DONE: set = set()
_LOCK = threading.Lock()


class _Quiet(logging.Filter):
    """Drop Streamlit's 'missing ScriptRunContext' warnings from the warm-up thread (it has no page)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("cnnlens-warmup")


logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_Quiet())


def _work(ctx: Ctx) -> None:
    try:
        compute.layers(ctx)
        try:
            pixels = testdata.load(ctx)
        except CNNLibError:
            pixels = None
        compute.evaluation(ctx, None)
        if pixels is not None:
            compute.evaluation(ctx, pixels)
        compute.gradcam_default(ctx)
        if pixels is not None and len(pixels[1]) >= 2:
            compute.embedding(ctx, pixels)
    except Exception:  # noqa: BLE001 - a warm-up must never hurt; the page will report the problem
        log.debug("warm-up failed", exc_info=True)


def start(ctx: Ctx | None) -> None:
    """Start the warm-up for this checkpoint unless it already ran (or is off)."""
    if ctx is None or os.environ.get("CNNLENS_PREFETCH", "1") == "0":
        return
    token = (ctx.key, ctx.data)
    with _LOCK:
        if token in _DONE:
            return
        _DONE.add(token)
    threading.Thread(target=_work, args=(ctx,), name=f"cnnlens-warmup-{len(_DONE)}", daemon=True).start()
