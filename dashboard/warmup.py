"""Background preparation of a checkpoint, and the feature passes pages share (CNNLENS_PREFETCH=0 turns the
background part off):

- `start_imports()`, called by Home.py after the first page's script has finished, once per server process:
  a thread imports torch and cnnlib's heavy modules while the user reads that page (started before the page,
  it competed with it for the GIL: 5.3 s to the first page against 2.4 s without it).
- `start(ctx)`, after each page: once per checkpoint (and Data folder) per server process, a thread runs STEPS:
  it loads the model into the shared cache and fills the caches the pages read (test pixels, predictions,
  layer table, the test and training images' penultimate features on disk, the default map, the neighbour
  indexes), so that every page afterwards reads them instead of computing. `status(ctx)` draws its progress in
  the sidebar (a fragment polling every second while it runs, then its last line).
- `split_features(ctx, split, pixels)`: cnnlib.diagnose.features' one pass per checkpoint and split, shared by
  the warm-up and every page (one at a time per split: a page that needs what the warm-up is computing shows
  the warm-up's progress instead of starting a second pass)."""
from __future__ import annotations

import logging
import os
import threading
import time

import streamlit as st

import compute
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")
_LOCK = threading.Lock()
_IMPORTS_STARTED = threading.Event()
# what the pages after Home import (torch first: most of the ~2 s); plotly for the Architecture page's chart
HEAVY_MODULES = ("torch", "cnnlib.models.registry", "cnnlib.io.checkpoint", "cnnlib.inference", "cnnlib.modelops",
                 "cnnlib.models.anatomy", "cnnlib.diagnose.evaluate", "cnnlib.data.datasets", "cnnlib.explain.attribution", "plotly.graph_objects")
STEPS = ("loading the model", "listing its layers", "reading the test images", "classifying the test images",
         "features of the test images", "the map of the test images", "the first test image on every page",
         "reading the training images",
         "features of the training images",
         "indexing the training images", "indexing the test images", "finding the failure slices",
         "weighing the evidence for every mistake", "the t-SNE and UMAP maps")
POLL_S = 1.0                 # how often the sidebar's progress redraws while the warm-up runs
_STATUS: dict = {}           # (checkpoint key, data) -> {"step", "done", "total", "started", "finished", "failed"}
_FEATURES: dict = {}         # (checkpoint key, data key, split) -> the store's dict (memory-mapped arrays)
_FEATURE_LOCKS: dict = {}    # same key -> Lock: one pass at a time per split
_PROGRESS: dict = {}         # same key -> (done, total) of the pass under way
_PAGES = [0]                 # page scripts running now: the warm-up waits between its batches while any runs
_WAITING = [0]               # pages waiting for a pass the warm-up is running: then it never pauses
YIELD_MAX_S = 30.0           # ... but never longer than this at a time (a page stuck in a long computation)


class _Quiet(logging.Filter):
    """Drop Streamlit's 'missing ScriptRunContext' warnings from the warm-up thread (it has no page)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("cnnlens-warmup")


logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_Quiet())


def _off() -> bool:
    return os.environ.get("CNNLENS_PREFETCH", "1") == "0"


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
    if _off() or _IMPORTS_STARTED.is_set():
        return
    with _LOCK:
        if _IMPORTS_STARTED.is_set():
            return
        _IMPORTS_STARTED.set()
    threading.Thread(target=_import_heavy, name="cnnlens-warmup-imports", daemon=True).start()


# ----------------------------------------------------------------------------- sharing the CPU with pages

def _trim() -> None:
    """Hand the heap's freed pages back to the system (glibc's malloc_trim): the big temporary arrays of a pass or
    an attribution at 224 px otherwise stay in the server's resident memory after they are freed."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass                                           # not glibc: the allocator keeps its own policy


class page_running:
    """`with warmup.page_running(): page.run()` (Home.py): while any page's script runs, the warm-up pauses
    after its current batch, so the page a person is waiting for gets the cores (2 on a laptop)."""

    def __enter__(self):
        with _LOCK:
            _PAGES[0] += 1

    def __exit__(self, *exc):
        with _LOCK:
            _PAGES[0] -= 1
        _trim()
        return False


def _yield_to_pages() -> None:
    """In the warm-up thread: wait (up to YIELD_MAX_S) while a page script runs."""
    if not _in_background():
        return
    deadline = time.monotonic() + YIELD_MAX_S
    while _PAGES[0] > 0 and not _WAITING[0] and time.monotonic() < deadline:
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the shared feature passes

def _in_background() -> bool:
    return threading.current_thread().name.startswith("cnnlens-warmup")


def split_features(ctx: Ctx, split: str, pixels) -> dict:
    """cnnlib.diagnose.features.split_features of the checkpoint's `split` ("test" or "train", pixels = (x, y)):
    features (N, D), labels, preds, layer; from memory, the disk cache or one pass (a progress bar on a page)."""
    from cnnlib.diagnose import features
    key = (ctx.key, testdata.pixels_key(ctx), split)
    if key in _FEATURES:
        return _FEATURES[key]
    with _LOCK:
        lock = _FEATURE_LOCKS.setdefault(key, threading.Lock())
    what = "training" if split == "train" else "test"
    text = f"Reading the {len(pixels[1]):,} {what} images through the network (once per checkpoint; then from disk)…"
    bar = []                                           # drawn at the first progress: a disk hit draws nothing

    def show(done: int, total: int) -> None:
        if not _in_background():
            if not bar:
                bar.append(st.progress(0.0, text=text))
            bar[0].progress(min(1.0, done / max(total, 1)), text=text)
    try:
        if not lock.acquire(blocking=False):           # another session or the warm-up is on it: show its progress
            with _LOCK:
                _WAITING[0] += 1
            try:
                while not lock.acquire(timeout=0.5):
                    show(*_PROGRESS.get(key, (0, 1)))
            finally:
                with _LOCK:
                    _WAITING[0] -= 1
        try:
            if key not in _FEATURES:
                def back(done: int, total: int) -> None:
                    _PROGRESS[key] = (done, total)
                    _yield_to_pages()
                    show(done, total)
                folder, data_key = features.checkpoint_feature_key(ctx.meta, split, ctx.data or None)
                while len(_FEATURES) >= 8:                  # memory-mapped, but bounded all the same
                    _FEATURES.pop(next(iter(_FEATURES)))
                _FEATURES[key] = features.split_features(ctx.model, pixels[0], pixels[1], folder, data_key,
                                                         progress=back)
        finally:
            lock.release()
            _PROGRESS.pop(key, None)
    finally:
        for b in bar:
            b.empty()
    return _FEATURES[key]


# ----------------------------------------------------------------------------- the background preparation

def _work(ctx: Ctx, token) -> None:
    import diagnose                                   # imported here: diagnose imports this module
    import teaching
    status = _STATUS[token]

    def step(name: str) -> None:
        status.update(step=STEPS.index(name), done=0, total=0)
        _yield_to_pages()
    try:
        step("loading the model")
        ctx.model                  # noqa: B018 - the model first: into the shared cache every session reads
        step("listing its layers")
        compute.layers(ctx)
        compute.gradcam_default(ctx)
        step("reading the test images")
        try:
            pixels = testdata.load(ctx)
        except CNNLibError:
            pixels = None
        step("classifying the test images")
        compute.evaluation(ctx, None)
        if pixels is not None:
            compute.evaluation(ctx, pixels)
            if len(pixels[1]) >= 3:
                step("features of the test images")
                _track(status, (ctx.key, testdata.pixels_key(ctx), "test"))
                split_features(ctx, "test", pixels)
                step("the map of the test images")
                n_total = len(pixels[1])
                diagnose.projection(ctx, "pca", min(diagnose.EMBED_DEFAULT, n_total), n_total)
            step("the first test image on every page")
            teaching.first_image_views(ctx, pixels)
        step("reading the training images")
        train = diagnose.train_pixels(ctx, notice=False)
        if train is not None:
            step("features of the training images")
            _track(status, (ctx.key, testdata.pixels_key(ctx), "train"))
            split_features(ctx, "train", train)
            step("indexing the training images")
            diagnose.neighbour_index(ctx, train)
        if pixels is not None and len(pixels[1]) >= 3:
            step("indexing the test images")
            diagnose.neighbour_index(ctx, pixels, split="test")
            import failslices
            preds = compute.evaluation(ctx, pixels)[0]
            step("finding the failure slices")
            try:
                failslices.find(ctx, preds, pixels)
            except CNNLibError:
                pass                                     # too few images for slices: the page says why
            if train is not None:
                import verdicts
                step("weighing the evidence for every mistake")
                verdicts.triage(ctx, preds, pixels)            # Errors' "Find out why": ready
            n_total = len(pixels[1])
            if n_total >= diagnose.EMBED_DEFAULT:              # a full default sample: tens of seconds each
                step("the t-SNE and UMAP maps")
                for method in ("tsne", "umap"):
                    diagnose.projection(ctx, method, diagnose.EMBED_DEFAULT, n_total)
    except Exception:  # noqa: BLE001 - a warm-up must never hurt; the page will report the problem
        status["failed"] = True
        log.debug("warm-up failed", exc_info=True)
    finally:
        status["finished"] = time.time()
        _trim()


def _track(status: dict, key) -> None:
    status["key"] = key                  # progress() reads (done, total) of this pass from _PROGRESS


def start(ctx: Ctx | None) -> None:
    """Start the warm-up for this checkpoint unless it already ran (or is off)."""
    if ctx is None or _off():
        return
    token = (ctx.key, ctx.data)
    with _LOCK:
        if token in _STATUS:
            return
        _STATUS[token] = {"step": 0, "started": time.time(), "finished": None, "failed": False, "key": None}
    threading.Thread(target=_work, args=(ctx, token), name=f"cnnlens-warmup-{len(_STATUS)}", daemon=True).start()


def progress(ctx: Ctx | None) -> dict | None:
    """This checkpoint's warm-up: {"step" (index into STEPS), "name", "done", "total" (images of the pass under
    way; 0 when none), "seconds", "finished", "failed" (bools)}, or None when none was started."""
    s = _STATUS.get((ctx.key, ctx.data)) if ctx is not None else None
    if s is None:
        return None
    done, total = _PROGRESS.get(s.get("key"), (0, 0)) if s.get("key") else (0, 0)
    end = s["finished"] or time.time()
    return {"step": s["step"], "name": STEPS[s["step"]], "done": done, "total": total,
            "seconds": end - s["started"], "finished": s["finished"] is not None, "failed": s["failed"]}


def _line(p: dict) -> str:
    images = f" — {p['done']:,} of {p['total']:,} images" if p["total"] else ""
    return f"Preparing this checkpoint in the background: {p['name']}{images} (step {p['step'] + 1} of {len(STEPS)})"


@st.fragment(run_every=POLL_S)
def _live(ctx: Ctx) -> None:
    p = progress(ctx)
    if p is None or p["finished"]:      # no full rerun from here: it could swallow a page switch clicked meanwhile
        _done_line(p)
        return
    st.progress((p["step"] + (p["done"] / p["total"] if p["total"] else 0)) / len(STEPS), text=_line(p))


def status(ctx: Ctx | None) -> None:
    """The warm-up's progress under the sidebar's checkpoint (a live bar while it runs, a line when done)."""
    p = progress(ctx)
    if p is None:
        return
    with st.container(key="side_warm"):
        if not p["finished"]:
            _live(ctx)
        else:
            _done_line(p)


def _done_line(p: dict | None) -> None:
    if p is not None and p["failed"]:
        st.caption("The background preparation stopped early: each page computes what it needs when opened.")
    elif p is not None:
        st.caption(f"Prepared in {p['seconds']:.0f} s: every page reads from the cache (kept on disk).")
