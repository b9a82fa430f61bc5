"""Driving the dashboard in headless Chromium: the one module for the browser tests (tests/test_browser*.py),
the page walk (bench/walk_pages.py), the first-page benchmark and the load test (bench/loadtest.py).

    with serve(checkpoint_dir, data_root, log) as url:     `streamlit run dashboard/Home.py` on a free loopback
        ...                                                 port, healthy; stopped (and its log kept) afterwards
    with chromium_page() as page:                           a fresh headless Chromium page, 1400 x 900, empty profile
        wait_ready(page, "Evaluation", ".st-key-eval_cm")   title shown, script finished, element visible
        nav_link(page, "Errors").click(); settle(page)
        no_exception(page, "Errors"); in_viewport(page, sel)
    app_tracebacks(log_text)                                the server log's tracebacks, less a closed tab's

Chromium is Debian's (`/usr/bin/chromium`, or $CNNLENS_CHROMIUM) with the flags a person's fresh browser would
have (no background network, no first-run UI). Servers listen on 127.0.0.1 only.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / "dashboard" / "Home.py"
CHROMIUM = os.environ.get("CNNLENS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}          # the size a person uses (px)
HEALTHY_WITHIN_S = 90                              # a server start on 2 busy cores
SCRIPT_DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
SERVER_PIDS: list[int] = []                        # servers serve() started (newest last), for memory sampling


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_tracebacks(log: str) -> list[str]:
    """The tracebacks in a server log, less the one Streamlit logs when a browser goes away during the websocket
    handshake (starlette's WebSocketDisconnected: a tab closed as the sessions end, not an error of the app)."""
    head = "Traceback (most recent call last):"
    out = []
    for block in log.split(head)[1:]:
        raised = next((ln for ln in block.splitlines()[1:] if ln.strip() and not ln.startswith((" ", "\t"))), "")
        if "WebSocketDisconnected" not in raised:
            out.append(head + block)
    return out


def chromium_problem() -> str | None:
    """One sentence when headless Chromium or playwright is missing, else None."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return (f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package (CI does), or skip the "
                "browser tests with --no-browser / CNNLENS_SKIP_BROWSER=1")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install playwright), or skip with --no-browser"
    return None


def start_server(checkpoint_dir, log: Path, data_root=None, script: Path = HOME, extra: tuple = (),
                 command: list[str] | None = None, cwd: Path = REPO) -> tuple[subprocess.Popen, str]:
    """The dashboard on a free loopback port; returns (process, url) once /_stcore/health answers ok.
    `command`: another way to start it (e.g. an installed `cnnlib dashboard`), given the port as {port}."""
    port = free_port()
    env = {**os.environ, "CNNLENS_CHECKPOINTS": str(checkpoint_dir), "PYTHONUNBUFFERED": "1"}
    if data_root is not None:
        env["CNNLIB_DATA_ROOT"] = str(data_root)
    cmd = ([c.format(port=port) for c in command] if command else
           [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", *extra])
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT)
    SERVER_PIDS.append(proc.pid)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            if r.read().strip() == b"ok":
                return proc, url
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"the dashboard was not healthy after {HEALTHY_WITHIN_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serve(checkpoint_dir, data_root, log: Path, **kw):
    """start_server as a context manager: yields the URL, stops the server afterwards."""
    proc, url = start_server(checkpoint_dir, log, data_root=data_root, **kw)
    try:
        yield url
    finally:
        stop_server(proc)


@contextlib.contextmanager
def chromium_page(timeout_ms: float = 60_000):
    """A page of a fresh headless Chromium (empty profile, 1400 x 900); the profile is removed afterwards."""
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="cnnlens-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport=VIEWPORT)
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.set_default_timeout(timeout_ms)
                yield page
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def wait_ready(page, title: str, extra: str | None = None, timeout: float = 60_000) -> None:
    """The page's title is shown, the script has finished and (optionally) a key element is visible."""
    page.locator("h1", has_text=title).first.wait_for(state="visible", timeout=timeout)
    page.wait_for_selector(SCRIPT_DONE, timeout=timeout)
    if extra:
        page.locator(extra).first.wait_for(state="visible", timeout=timeout)
    page.wait_for_selector(SCRIPT_DONE, timeout=timeout)


def nav_link(page, path: str):
    """The navigation's link to a page (by its URL path); "View more" first when the list is collapsed."""
    link = page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').first
    if not link.is_visible():
        more = page.locator('[data-testid="stSidebarNavViewButton"]')
        if more.count():
            more.first.click()
    return link


def settle(page, timeout: float = 60_000) -> None:
    """Wait until a rerun started by an interaction has finished."""
    page.wait_for_timeout(300)
    page.wait_for_selector(SCRIPT_DONE, timeout=timeout)


def texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def no_exception(page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: exception box shown: {boxes.first.inner_text()[:500]}"


def in_viewport(page, selector: str) -> dict:
    """The element's bounding box relative to the viewport, and whether all of it is inside."""
    return page.evaluate("""(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height,
                inside: r.top >= -2 && r.left >= -2 && r.bottom <= window.innerHeight + 2   // 2 px: sub-pixel rounding
                        && r.right <= window.innerWidth + 2}; }""",
                         selector)


def screenshot(page, path: Path, full: bool = False) -> None:
    """What the user sees now (full=True: the whole internally scrolling main area, up to 8,000 px)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if full:
        height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                               " return m ? m.scrollHeight : 900 }")
        page.set_viewport_size({"width": VIEWPORT["width"], "height": int(min(max(900, height + 40), 8000))})
    page.wait_for_timeout(400)
    page.screenshot(path=str(path))
    if full:
        page.set_viewport_size(VIEWPORT)


def box_select(page, chart_key: str) -> None:
    """Box-select most of a Plotly chart (the `st-key-<chart_key>` container), as a user drags with the
    toolbar's box tool: from 3 px inside its top-left corner to 3 px inside its bottom-right (or the window's
    bottom edge, whichever is higher)."""
    area = page.locator(f".st-key-{chart_key} .nsewdrag").first
    area.scroll_into_view_if_needed()
    page.locator(f".st-key-{chart_key} .modebar-btn[data-val='select']").first.click(force=True)
    box = area.bounding_box()
    bottom = min(box["y"] + box["height"], VIEWPORT["height"] - 5)
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, (box["y"] + bottom) / 2, steps=8)
    page.mouse.move(box["x"] + box["width"] - 3, bottom - 3, steps=8)
    page.mouse.up()
