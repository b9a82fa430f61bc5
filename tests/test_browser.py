"""The dashboard in a real browser: `streamlit run` on a free loopback port, every page opened in headless
Chromium (Debian's /usr/bin/chromium driven by Playwright) at 1400×900: one confusion-matrix cell clicked,
Explain pressed on a 4th-row image of the Errors gallery (the panel must be in view), one image uploaded on
the Saliency page, many points box-selected on the Embeddings map (class breakdown and pager), and bad
checkpoints uploaded in the sidebar (one short sentence each). Prints how long the first page took to be
ready after the server was up, and each later page; screenshots go to artifacts/browser/ (git-ignored).

Skip it with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1. Without Chromium or Playwright it fails
(CI installs both) instead of silently skipping.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import bench_module, build_lens_checkpoints
from test_dashboard_support import one_true_sentence

pytestmark = pytest.mark.browser

driver = bench_module("pagedriver")          # the one page-driving module (bench/pagedriver.py)
wait_ready, nav_link, settle, no_exception, in_viewport = (driver.wait_ready, driver.nav_link, driver.settle,
                                                           driver.no_exception, driver.in_viewport)
REPO = driver.REPO
ARTIFACTS = REPO / "artifacts" / "browser"
VIEWPORT = driver.VIEWPORT
PAGES = [("Architecture", "Architecture"), ("Training", "Training"), ("Evaluation", "Evaluation"), ("Errors", "Errors"), ("Filters", "Filters"),
         ("Feature_maps", "Feature maps"), ("Saliency", "Saliency"), ("Embeddings", "Embeddings")]
# the targets (CPU, 2 cores, simple_cnn); the test fails only far beyond them (shared CI machines)
FIRST_TARGET_S, PAGE_TARGET_S, HARD_FACTOR = 5.0, 2.0, 3.0


@pytest.fixture(scope="module")
def lens_checkpoints(tiny_ckpt, tmp_path_factory):
    """The dashboard suites' checkpoints, with wrong.pt pointed at a larger test folder of the same classes
    (240 images, so the Errors gallery has four full rows of mistakes and the map many points)."""
    from conftest import write_image_folder
    base = tmp_path_factory.mktemp("browser")
    lc = build_lens_checkpoints(tiny_ckpt, base)
    big = write_image_folder(base / "bigdata", n_train=8, n_test=240, classes=lc["classes"], size=16)
    ckpt = torch.load(lc["wrong"], weights_only=True)
    ckpt["data"] = {**ckpt["data"], "path": big}
    stamp = os.path.getmtime(lc["wrong"])
    torch.save(ckpt, lc["wrong"])
    os.utime(lc["wrong"], (stamp, stamp))
    return lc


@pytest.fixture(scope="module")
def server(lens_checkpoints, tmp_path_factory):
    """`streamlit run dashboard/Home.py` on a free port; yields (url, seconds until healthy)."""
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    t0 = time.perf_counter()
    try:
        proc, url = driver.start_server(lens_checkpoints["dir"], log)
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url, time.perf_counter() - t0
    finally:
        driver.stop_server(proc)
        server_log = log.read_text()
        if "Traceback" in server_log:
            print("server log:\n" + server_log[-4000:])


@pytest.fixture(scope="module")
def browser_page():
    problem = driver.chromium_problem()
    if problem:
        pytest.fail(problem)
    with driver.chromium_page() as page:
        yield page


def shot(page, name: str, full: bool = False) -> None:
    """A 1400×900 screenshot of what the user sees now (full=True: the whole internally scrolling page)."""
    driver.screenshot(page, ARTIFACTS / f"{name}.png", full=full)


def sidebar_error(page) -> str:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]').first
    box.wait_for(state="visible", timeout=60_000)
    return box.inner_text().strip()


def click_cell(page, row: int, col: int, k: int) -> None:
    """Click the centre of confusion-matrix cell (row = true class, col = predicted class)."""
    area = page.locator(".st-key-eval_cm .nsewdrag").first
    area.wait_for(state="visible")
    box = area.bounding_box()
    area.click(position={"x": box["width"] * (col + 0.5) / k, "y": box["height"] * (row + 0.5) / k})


def test_every_page_in_chromium(browser_page, server, lens_checkpoints, tmp_path):
    url, boot = server
    page = browser_page
    timings = {}

    t0 = time.perf_counter()
    page.goto(url + "/")
    wait_ready(page, "CNN Lens", ".st-key-home_card")
    timings["Home (first load)"] = time.perf_counter() - t0
    print(f"\nfirst page ready {timings['Home (first load)']:.2f} s after the server was up "
          f"(server healthy after {boot:.2f} s)", flush=True)        # printed now too: later steps may fail
    no_exception(page, "Home")
    assert page.get_by_text("wrong.pt").first.is_visible()
    shot(page, "0_home")
    shot(page, "0_home_full", full=True)

    for path, title in PAGES:
        t0 = time.perf_counter()
        nav_link(page, path).click()
        extra = {"Architecture": ".st-key-arch_rf .main-svg", "Evaluation": ".st-key-eval_cm .nsewdrag", "Training": ".st-key-train_curves .main-svg",
                 "Filters": ".st-key-filt_first img", "Feature_maps": ".st-key-fm_grid img",
                 "Saliency": ".st-key-sal_result img", "Embeddings": ".st-key-emb_chart .main-svg",
                 "Errors": ".st-key-err_gallery img"}[path]
        wait_ready(page, title, extra)
        timings[title] = time.perf_counter() - t0
        no_exception(page, title)
        number = PAGES.index((path, title)) + 1
        shot(page, f"{number}_{path.lower()}")
        shot(page, f"{number}_{path.lower()}_full", full=True)

        if path == "Evaluation":
            # click a diagonal cell that holds images: the true/predicted choice follows, its images appear
            k = len(lens_checkpoints["classes"])
            c = lens_checkpoints["best_class"]
            name = lens_checkpoints["classes"][c]
            click_cell(page, c, c, k)
            page.get_by_text(f"of {name} predicted as {name} (correct)").first.wait_for(state="visible",
                                                                                       timeout=30_000)
            assert page.locator(".st-key-eval_true input").first.input_value() == name
            settle(page)
            page.locator(".st-key-eval_cell_grid img").first.wait_for(state="visible", timeout=30_000)
            no_exception(page, "Evaluation after a cell click")
            shot(page, "2b_evaluation_cell_clicked")

        if path == "Errors":
            # Explain on an image of the 4th row: the explanation must appear where the user is looking
            buttons = page.locator(".st-key-err_gallery").get_by_role("button", name="Explain")
            assert buttons.count() >= 19, f"only {buttons.count()} errors: the fixture needs four rows"
            target = buttons.nth(18)                       # 6 per row: the first image of row 4
            target.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            target.click()
            page.locator(".st-key-err_explain_panel img").nth(2).wait_for(state="visible", timeout=60_000)
            settle(page)
            page.wait_for_timeout(1000)                    # the smooth scroll, if any
            box = in_viewport(page, ".st-key-err_explain_panel")
            assert box["inside"], f"explanation panel not (fully) in the 1400x900 viewport: {box}"
            no_exception(page, "Errors after Explain")
            shot(page, "3b_errors_explained")

        if path == "Saliency":
            page.locator(".st-key-sal_src").get_by_text("Upload an image").click()
            settle(page)
            img = tmp_path / "upload.png"
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(img)
            page.locator(".st-key-sal_upload input[type=file]").set_input_files(str(img))
            page.get_by_text("upload.png (resized to the model's input)").first.wait_for(state="visible",
                                                                                         timeout=60_000)
            settle(page)
            assert page.locator(".st-key-sal_result img").count() >= 2      # the input and one heatmap overlay
            no_exception(page, "Saliency after an upload")
            shot(page, "6b_saliency_upload")

        if path == "Embeddings":
            # box-select most of the map: the class breakdown and the pager appear
            driver.box_select(page, "emb_chart")
            page.locator(".st-key-emb_breakdown").first.wait_for(state="visible", timeout=60_000)
            settle(page)
            heading = page.get_by_text(re.compile(r"^[\d,]+ selected · ")).first.inner_text()
            selected = int(heading.split(" ")[0].replace(",", ""))
            assert selected >= 100, heading
            assert page.locator(".st-key-emb_page input").first.is_visible()
            pages = -(-selected // 48)
            assert page.get_by_text(f"Page (of {pages})").first.is_visible()
            assert page.locator(".st-key-emb_selected img").count() == min(48, selected)
            page.locator(".st-key-emb_breakdown").first.scroll_into_view_if_needed()
            no_exception(page, "Embeddings after a box selection")
            shot(page, "7b_embeddings_selected")

    # two more sessions at once (other tabs): both pages come up; the cached model and attributions are shared
    others = [page.context.new_page() for _ in range(2)]
    for p, path in zip(others, ("Saliency", "Errors")):
        p.goto(f"{url}/{path}", wait_until="commit")
    for p, (path, title, extra) in zip(others, (("Saliency", "Saliency", ".st-key-sal_result img"),
                                                ("Errors", "Errors", ".st-key-err_gallery img"))):
        wait_ready(p, title, extra)
        no_exception(p, f"{title} in a second session")
    for p in others:
        p.close()

    # bad checkpoints uploaded in the sidebar: one short true sentence each, nothing of PyTorch's internals
    nav_link(page, "Training").click()
    wait_ready(page, "Training")
    for name, blob in (("random.pt", os.urandom(3000)), ("empty.pt", b"")):
        bad = tmp_path / name
        bad.write_bytes(blob)
        page.locator(".st-key-side_upload input[type=file]").set_input_files(str(bad))
        page.get_by_text(f"{name} cannot be used").first.wait_for(state="visible", timeout=60_000)
        settle(page)
        text = sidebar_error(page)
        assert text.startswith(f"{name} cannot be used") and one_true_sentence(text), text
        assert page.locator(".st-key-train_curves .main-svg").first.is_visible()   # wrong.pt stays open
        no_exception(page, f"sidebar after uploading {name}")
        shot(page, f"8_bad_upload_{name.split('.')[0]}")

    print(f"\nfirst page ready {timings['Home (first load)']:.2f} s after the server was up "
          f"(server healthy after {boot:.2f} s); later pages (target {PAGE_TARGET_S:.0f} s each):")
    for name, s in timings.items():
        target = FIRST_TARGET_S if name.startswith("Home") else PAGE_TARGET_S
        print(f"  {name:<20} {s:6.2f} s  {'ok' if s <= target else 'SLOWER THAN TARGET'}")
    print(f"screenshots: {ARTIFACTS}")
    # Timings are printed, not asserted (a test must not fail because the machine is busy); only a page that
    # never became ready within wait_ready's timeout fails the test.
    timings.pop("Home (first load)")
