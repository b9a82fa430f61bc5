"""Many sessions at once: N headless-Chromium sessions (one browser, a context each) drive one dashboard server
on 127.0.0.1 for a while, switching pages, running attributions (Saliency: a test image, then method changes)
and uploads (two images, and once per odd session the open checkpoint's own bytes as an uploaded checkpoint).

    .venv/bin/python bench/loadtest.py [--sessions 10] [--seconds 120] [--checkpoints DIR] [--json OUT]

It reports
- errors: exception boxes, error boxes on the page, pages or results that never came (timeouts);
- cross-talk: every session's prediction line and overlay caption for an input (image, method) must equal
  what a single session saw for it, on a fresh server of its own, before the load;
- the server's peak resident memory (VmRSS of the streamlit process and its children, from /proc) against
  the bound below;
- median and 95th-percentile interaction latency (an action until its result is on the page and the script
  has finished).

Memory bound. Everything the server keeps grows only through caches with a size limit: st.cache_resource
holds at most MODEL_CACHE_ENTRIES (16) file models and UPLOAD_CACHE_ENTRIES (8) uploaded ones (checkpoints.py),
and each st.cache_data function holds at most its max_entries results (compute.py: attributions 128, one-image
probabilities and feature maps 64, predictions/reports/layers 16, ...), keyed by checkpoint + input + options,
not by session. So the cached data for a set of inputs is the same whether 1 or 10 sessions asked for it; what
more sessions add is per-session state and the work in flight. The bound is

    R_ref                       the server's RSS after a single session ran every input of the load once (on a
                                fresh server: torch, plotly, the model, one copy of every cached result)
  + (M - 1) x 3 x F             the other models the load opens (M: distinct checkpoints, here the file and its
                                uploaded copy), each about 3x its file size F (weights, meta with the stored
                                predictions and history, the private copy an attribution works on)
  + (M - 1) x C_ref             the cached results of those models (C_ref: RSS growth of the reference run from
                                its Saliency page with the model loaded to its end: one model's cached results)
  + N x S                       per session: S = 40 MB (session state with its uploads, the script thread, one
                                attribution in flight: a private model copy, activations, gradients, and the
                                allocator arena that thread's work lands in)

The loop is bounded in count (--max-steps per session) and time (--seconds, plus a hard stop); it only
talks to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from pagedriver import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, app_tracebacks, stop_server  # noqa: E402,F401
from pagedriver import start_server as _start  # noqa: E402
METHODS = ("Saliency", "Grad-CAM", "Input × Gradient")
PER_SESSION_MB = 40.0
MODEL_FACTOR = 3.0
STEP_TIMEOUT_MS = 90_000
PAGES = {"Training": ("Training", ".st-key-train_curves .main-svg"),
         "Evaluation": ("Evaluation", ".st-key-eval_cm .nsewdrag"),
         "Architecture": ("Architecture", '[data-testid="stDataFrame"]'),
         "Saliency": ("Saliency", None)}


# ----------------------------------------------------------------------------- the server

def start_server(checkpoints: str, log: Path):
    """`streamlit run dashboard/Home.py` on a free loopback port (uploads up to 50 MB); (process, url) once healthy."""
    return _start(checkpoints, log, extra=("--server.maxUploadSize", "50"))


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MiB (0 for processes that are gone)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        todo += _children(p)
    return total / 1024


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.every, self.peak, self.samples = pid, every, 0.0, 0
        self.window = 0.0                    # the peak since the caller last set it to 0 (one page of a walk)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = rss_mb(self.pid)
            self.peak, self.window = max(self.peak, rss), max(self.window, rss)
            self.samples += 1
            self._stop_event.wait(self.every)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=5)
        self.peak = max(self.peak, rss_mb(self.pid))
        return self.peak


# ----------------------------------------------------------------------------- one session's actions

class Stats:
    def __init__(self):
        self.latencies: list[tuple[str, float]] = []
        self.errors: list[str] = []
        self.crosstalk: list[str] = []
        self.observations = 0
        self.steps = 0


async def _idle(page, timeout=STEP_TIMEOUT_MS) -> None:
    await page.wait_for_timeout(250)
    await page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


async def _ready(page, title: str, extra: str | None) -> None:
    await page.locator("h1", has_text=title).first.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    await _idle(page)
    if extra:
        await page.locator(extra).first.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    await _idle(page)


async def _check(page, where: str, stats: Stats, session: int) -> None:
    boxes = page.locator('[data-testid="stException"]')
    if await boxes.count():
        stats.errors.append(f"session {session}, {where}: exception box: {(await boxes.first.inner_text())[:200]}")
    errors = page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')
    if await errors.count():
        stats.errors.append(f"session {session}, {where}: error box: {(await errors.first.inner_text())[:200]}")


async def go(page, name: str) -> None:
    title, extra = PAGES[name]
    link = page.locator(f'[data-testid="stSidebarNav"] a[href$="/{name}"]').first
    if not await link.is_visible():
        more = page.locator('[data-testid="stSidebarNavViewButton"]')
        if await more.count():
            await more.first.click()
    await link.click()
    await _ready(page, title, extra)


async def prediction(page) -> str:
    h = page.locator("h3", has_text="Prediction:").first
    await h.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    return (await h.inner_text()).strip()


async def overlay_caption(page, method: str) -> str:
    cap = page.locator('.st-key-sal_result [data-testid="stImageCaption"]', has_text=f"{method} for ").first
    await cap.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    return (await cap.inner_text()).strip()


async def choose_method(page, method: str) -> None:
    box = page.locator(".st-key-sal_method input").first       # a searchable combobox: type, then pick
    await box.click()
    await box.fill(method)
    await page.get_by_role("option", name=method, exact=True).first.click()
    await _idle(page)


async def choose_source(page, label: str) -> None:
    await page.locator(".st-key-sal_src").get_by_text(label, exact=True).first.click()
    await _idle(page)


async def upload_image(page, path: Path) -> None:
    await choose_source(page, "Upload an image")
    await page.locator(".st-key-sal_upload input[type=file]").set_input_files(str(path))
    await page.get_by_text(f"{path.name} (resized to the model's input)").first.wait_for(
        state="visible", timeout=STEP_TIMEOUT_MS)
    await _idle(page)


async def upload_checkpoint(page, path: Path) -> None:
    await page.locator('[data-testid="stSidebar"] input[type=file]').first.set_input_files(str(path))
    await page.locator('[data-testid="stSidebar"]').get_by_text(f"{path.name} (uploaded)").first.wait_for(
        state="visible", timeout=STEP_TIMEOUT_MS)
    await _idle(page)


# ----------------------------------------------------------------------------- sessions

class Session:
    """One browser context = one Streamlit session; `observe` records (input, text) pairs."""

    def __init__(self, index: int, browser, url: str, stats: Stats, reference: dict | None,
                 images: list[Path], has_test_images: bool):
        self.i, self.browser, self.url, self.stats = index, browser, url, stats
        self.reference, self.images, self.has_test = reference, images, has_test_images
        self.seen: dict = {}

    async def timed(self, what: str, coro) -> None:
        t0 = time.perf_counter()
        await coro
        self.stats.latencies.append((what, time.perf_counter() - t0))
        self.stats.steps += 1

    def observe(self, key: tuple, text: str) -> None:
        self.stats.observations += 1
        self.seen[key] = text
        if self.reference is None:
            return
        want = self.reference.get(key)
        if want is None:
            self.stats.errors.append(f"session {self.i}: no single-session reference for {key}")
        elif text != want:
            self.stats.crosstalk.append(f"session {self.i}: {key}: {text!r}, alone: {want!r}")

    async def open(self, page) -> None:
        await self.timed("first page", page.goto(self.url + "/"))
        await _ready(page, "CNN Lens", ".st-key-home_card")

    async def saliency_round(self, page, source: str, methods: list[str]) -> None:
        """On the Saliency page: the prediction for `source` (a test image or an upload), then each method."""
        if source == "test":
            await self.timed("choose the test image", choose_source(page, "Test image"))
        else:
            img = self.images[int(source.split(":")[1])]
            await self.timed("upload an image", upload_image(page, img))
        self.observe((source, "prediction"), await prediction(page))
        for m in methods:
            await self.timed("change the method", choose_method(page, m))
            self.observe((source, m), await overlay_caption(page, m))
        await _check(page, f"Saliency ({source})", self.stats, self.i)

    async def run(self, deadline: float, max_steps: int, checkpoint_upload: Path | None) -> None:
        ctx = await self.browser.new_context(viewport=VIEWPORT)
        page = await ctx.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            await self.open(page)
            await _check(page, "Home", self.stats, self.i)
            j = 0
            while time.monotonic() < deadline and self.stats.steps < max_steps:
                try:
                    await self.iteration(page, j, deadline, checkpoint_upload if j == 1 else None)
                except Exception as e:  # noqa: BLE001 - a failed load is counted, then the session goes on
                    if time.monotonic() >= deadline:
                        break
                    self.stats.errors.append(f"session {self.i}, iteration {j}: {type(e).__name__}: "
                                             f"{str(e).splitlines()[0][:200]}")
                    await page.goto(self.url + "/")
                    await _ready(page, "CNN Lens", ".st-key-home_card")
                j += 1
        finally:
            await ctx.close()

    async def iteration(self, page, j: int, deadline: float, checkpoint_upload: Path | None) -> None:
        """Saliency first (a test image and an upload, one method change each), then the other pages."""
        k = self.i + j
        await self.timed("open Saliency", go(page, "Saliency"))
        if checkpoint_upload is not None:       # the same weights as an uploaded checkpoint: same results
            await self.timed("upload a checkpoint", upload_checkpoint(page, checkpoint_upload))
        if self.has_test:
            await self.saliency_round(page, "test", [METHODS[k % len(METHODS)]])
        if time.monotonic() < deadline:
            await self.saliency_round(page, f"upload:{k % len(self.images)}", [METHODS[(k + 1) % len(METHODS)]])
        for name in ("Architecture", "Evaluation", "Training"):
            if time.monotonic() >= deadline:
                return
            await self.timed(f"open {name}", go(page, name))
            await _check(page, name, self.stats, self.i)


async def drive(url: str, sessions: int, seconds: float, max_steps: int, reference: dict | None,
                images: list[Path], has_test: bool, checkpoint_upload: Path | None, stats: Stats) -> dict:
    from playwright.async_api import async_playwright
    seen: dict = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            deadline = time.monotonic() + seconds
            runners = [Session(i, browser, url, stats, reference, images, has_test) for i in range(sessions)]
            hard_stop = seconds + 3 * STEP_TIMEOUT_MS / 1000 + 60
            await asyncio.wait_for(asyncio.gather(*(r.run(deadline, max_steps,
                                                          checkpoint_upload if r.i % 2 else None)
                                                    for r in runners)), timeout=hard_stop)
            for r in runners:
                seen.update(r.seen)
        finally:
            await browser.close()
    return seen


async def single_session_reference(url: str, pid: int, images: list[Path], has_test: bool, stats: Stats,
                                   rss: dict) -> dict:
    """Every input the load uses, once, in one session: {(source, "prediction" | method): text}. rss["open"]:
    the server's RSS once the Saliency page is up and the warm-up is done (torch, the model), before any
    result of this session's inputs is cached."""
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            s = Session(-1, browser, url, stats, None, images, has_test)
            ctx = await browser.new_context(viewport=VIEWPORT)
            page = await ctx.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            await s.open(page)
            await go(page, "Saliency")
            await asyncio.sleep(3)                  # the background warm-up of the checkpoint
            rss["open"] = rss_mb(pid)
            sources = (["test"] if has_test else []) + [f"upload:{n}" for n in range(len(images))]
            for source in sources:
                await s.saliency_round(page, source, list(METHODS))
            await ctx.close()
        finally:
            await browser.close()
    return s.seen


# ----------------------------------------------------------------------------- main

def _images(folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image
    out = []
    for n, size in enumerate(((40, 56), (23, 31))):
        path = folder / f"load-upload-{n}.png"
        rng = np.random.default_rng(100 + n)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def _default_checkpoint(folder: str) -> Path:
    sys.path.insert(0, str(REPO))
    from cnnlib.io import metadata as ckptmeta
    found = []
    for p in Path(folder).iterdir():
        if p.suffix in (".pt", ".pth") and not p.name.endswith(".resume.pt"):
            try:
                import datetime
                m = ckptmeta.read_meta(str(p))
                created = datetime.datetime.fromisoformat(str(m.get("created", ""))).timestamp()
            except Exception:  # noqa: BLE001
                continue
            found.append((created or p.stat().st_mtime, p.stat().st_mtime, p))
    if not found:
        raise SystemExit(f"no readable checkpoint in {folder}")
    return max(found)[2]


def _has_test_images(ckpt: Path) -> bool:
    from cnnlib.io import metadata as ckptmeta
    path = (ckptmeta.read_meta(str(ckpt)).get("data") or {}).get("path")
    return bool(path) and os.path.isdir(os.path.join(path, "test"))


def run(sessions: int = 10, seconds: float = 120.0, checkpoints: str | None = None, max_steps: int = 400,
        quiet: bool = False) -> dict:
    checkpoints = checkpoints or os.environ.get("CNNLENS_CHECKPOINTS") or str(REPO / "checkpoints")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    work = Path(tempfile.mkdtemp(prefix="cnnlens-load-"))
    images = _images(work)
    default = _default_checkpoint(checkpoints)
    has_test = _has_test_images(default)
    same = work / "same-weights.pt"
    same.write_bytes(default.read_bytes())
    file_mb = default.stat().st_size / 2**20

    say(f"checkpoint {default.name} ({file_mb:.1f} MiB), test images on disk: {has_test}")
    ref_stats = Stats()
    proc, url = start_server(checkpoints, work / "reference.log")
    try:
        t0 = time.perf_counter()
        say(f"single-session reference on a fresh server ({url}) …")
        rss: dict = {}
        reference = asyncio.run(single_session_reference(url, proc.pid, images, has_test, ref_stats, rss))
        time.sleep(2)
        r_ref = rss_mb(proc.pid)
        c_ref = max(0.0, r_ref - rss.get("open", r_ref))
    finally:
        stop_server(proc)
    if ref_stats.errors:
        say("reference run errors:", *ref_stats.errors, sep="\n  ")
    say(f"  {len(reference)} reference results in {time.perf_counter() - t0:.0f} s; server RSS {r_ref:.0f} MiB "
        f"({c_ref:.0f} MiB of it for this session's cached results)")

    stats = Stats()
    proc, url = start_server(checkpoints, work / "load.log")
    sampler = MemorySampler(proc.pid)
    try:
        sampler.start()
        say(f"{sessions} sessions for {seconds:.0f} s on {url} …")
        t0 = time.perf_counter()
        asyncio.run(drive(url, sessions, seconds, max_steps, reference, images, has_test, same, stats))
        wall = time.perf_counter() - t0
        peak = sampler.stop()
    finally:
        sampler.stop()
        stop_server(proc)
        server_log = (work / "load.log").read_text()
    for tb in app_tracebacks(server_log)[:1]:
        stats.errors.append("server log holds a traceback: " + tb[:500])

    models = 2                                   # the file and its uploaded copy (same weights)
    bound = r_ref + (models - 1) * (MODEL_FACTOR * file_mb + c_ref) + sessions * PER_SESSION_MB
    lat = sorted(s for _, s in stats.latencies)
    p50 = statistics.median(lat) if lat else float("nan")
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else float("nan")
    result = {"sessions": sessions, "seconds": round(wall, 1), "interactions": len(lat),
              "observations": stats.observations, "errors": stats.errors, "crosstalk": stats.crosstalk,
              "peak_rss_mb": round(peak, 1), "bound_mb": round(bound, 1), "reference_rss_mb": round(r_ref, 1),
              "latency_p50_s": round(p50, 3), "latency_p95_s": round(p95, 3),
              "reference_errors": ref_stats.errors}
    say(f"\n{len(lat)} interactions by {sessions} sessions in {wall:.0f} s; {stats.observations} results compared")
    say(f"errors: {len(stats.errors)}" + "".join(f"\n  {e}" for e in stats.errors[:20]))
    say(f"cross-talk (differs from the single-session result): {len(stats.crosstalk)}"
        + "".join(f"\n  {c}" for c in stats.crosstalk[:20]))
    say(f"peak server RSS {peak:.0f} MiB; bound {bound:.0f} MiB = reference {r_ref:.0f} (one session, every input) "
        f"+ {models - 1} more model x ({MODEL_FACTOR:g} x {file_mb:.1f} MiB file + {c_ref:.0f} MiB of its cached "
        f"results) + {sessions} sessions x {PER_SESSION_MB:g} MiB  -> {'ok' if peak <= bound else 'OVER THE BOUND'}")
    say(f"interaction latency: median {p50:.2f} s, 95th percentile {p95:.2f} s")
    by_kind: dict[str, list[float]] = {}
    for what, s in stats.latencies:
        by_kind.setdefault(what, []).append(s)
    for what, xs in sorted(by_kind.items()):
        say(f"  {what:<24} n={len(xs):<4} median {statistics.median(xs):6.2f} s  max {max(xs):6.2f} s")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--max-steps", type=int, default=400, help="interactions per session at most")
    ap.add_argument("--checkpoints", default=None, help="checkpoint folder (default: $CNNLENS_CHECKPOINTS or "
                                                        "checkpoints/); its newest checkpoint is used")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    result = run(a.sessions, a.seconds, a.checkpoints, a.max_steps)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    ok = not result["errors"] and not result["crosstalk"] and result["peak_rss_mb"] <= result["bound_mb"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
