"""Background warm-up, two parts, neither draws anything (CNNLENS_PREFETCH=0 turns both off):

- `start_imports()`, called by Home.py after the first page's script has finished, once per server process:
  a thread imports torch and cnnlib's heavy modules while the user reads that page (started before the page,
  it competed with it for the GIL: 5.3 s to the first page against 2.4 s without it).
- `start(ctx)`, after each page: once per checkpoint (and Data folder) per server process, a thread loads the
  model into the shared cache and fills the caches the pages read (test pixels, predictions, reports, layer
  table, default embedding) so the other pages open quickly."""
from __future__ import annotations

import logging
import os
import threading

import compute
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")
_DONE: set = set()
_LOCK = threading.Lock()
_IMPORTS_STARTED = threading.Event()
# what the pages after Home import (torch first: most of the ~2 s); plotly for the Architecture page's chart
HEAVY_MODULES = ("torch", "cnnlib.models.registry", "cnnlib.io.checkpoint", "cnnlib.inference", "cnnlib.modelops",
                 "cnnlib.models.anatomy", "cnnlib.diagnose.evaluate", "cnnlib.data.datasets", "cnnlib.explain.attribution", "plotly.graph_objects")


class _Quiet(logging.Filter):
    """Drop Streamlit's 'missing ScriptRunContext' warnings from the warm-up thread (it has no page)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("cnnlens-warmup")


logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_Quiet())


def _import_heavy() -> None:
    import importlib
    for name in HEAVY_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a page that needs it will say what is wrong
            log.debug("warm-up import of %s failed", name, exc_info=True)
    try:
        ui.plotly_ready()
    except Exception:  # noqa: BLE001
        log.debug("warming plotly failed", exc_info=True)


def start_imports() -> None:
    """Import torch and cnnlib's heavy modules in a background thread, once per server process."""
    if os.environ.get("CNNLENS_PREFETCH", "1") == "0" or _IMPORTS_STARTED.is_set():
        return
    with _LOCK:
        if _IMPORTS_STARTED.is_set():
            return
        _IMPORTS_STARTED.set()
    threading.Thread(target=_import_heavy, name="cnnlens-warmup-imports", daemon=True).start()


def _work(ctx: Ctx) -> None:
    try:
        ctx.model                  # noqa: B018 - the model first: into the shared cache every session reads
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
