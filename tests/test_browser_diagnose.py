"""The "why is it wrong" pages in headless Chromium at 1400×900 (the server and browser fixtures of
tests/test_browser.py): each new page opens without an exception box; on the Embeddings map one box selection
feeds the Errors gallery, Explain opens under it, the selection is tagged and listed on the Selections page.
Screenshots go to artifacts/browser/diag_*.png. Skip with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

import re
import time

import pytest

from conftest import build_browser_checkpoints
from test_browser import browser_page, driver, no_exception, server, settle, shot, wait_ready  # noqa: F401

box_select = driver.box_select

pytestmark = pytest.mark.browser

PAGES = [("Label_issues", "Probably mislabelled", ".st-key-li_gallery img"),
         ("Compare", "Two models", ".st-key-cmp_gallery img"),
         ("Neighbours", "Nearest training images", ".st-key-nn_result img"),
         ("Faithfulness", "Faithfulness", ".st-key-faith_one .main-svg"),
         ("Embeddings", "Embeddings", ".st-key-emb_chart .main-svg")]


@pytest.fixture(scope="module")
def lens_checkpoints(tiny_ckpt, tmp_path_factory):
    """The dashboard suites' checkpoints, wrong.pt on 240 test and 200 training images (conftest)."""
    return build_browser_checkpoints(tiny_ckpt, tmp_path_factory.mktemp("browser-diag"))


def nav(page, path: str) -> None:
    """Click the page's link in the sidebar (opening a collapsed page list first): the session is kept."""
    link = page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').first
    more = page.locator('[data-testid="stSidebarNavViewButton"]')
    if not link.is_visible() and more.count() and "more" in more.first.inner_text().lower():
        more.first.click()
    link.click()


def open_page(page, path: str, title: str, extra: str) -> float:
    t0 = time.perf_counter()
    nav(page, path)
    wait_ready(page, title, extra)
    no_exception(page, title)
    return time.perf_counter() - t0


def test_diagnosis_pages_in_chromium(browser_page, server):  # noqa: F811
    url, _ = server
    page = browser_page
    page.goto(url + "/")
    wait_ready(page, "CNN Lens")
    timings = {}
    for path, title, extra in PAGES:
        timings[title] = open_page(page, path, title, extra)
        shot(page, f"diag_{path.lower()}")
        shot(page, f"diag_{path.lower()}_full", full=True)

    # Faithfulness: the average over test images, with its progress bar, then the table
    nav(page, "Faithfulness")
    wait_ready(page, "Faithfulness", ".st-key-faith_one .main-svg")
    page.locator(".st-key-faith_run button").first.click()
    page.locator(".st-key-faith_mean .main-svg").first.wait_for(state="visible", timeout=120_000)
    settle(page)
    no_exception(page, "Faithfulness after the average")
    page.locator(".st-key-faith_mean").first.scroll_into_view_if_needed()
    shot(page, "diag_faithfulness_average")

    # Embeddings: box-select most of the map -> the Errors gallery below, Explain on its first image
    open_page(page, "Embeddings", "Embeddings", ".st-key-emb_chart .main-svg")
    box_select(page, "emb_chart")
    page.locator(".st-key-emb_selected img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    heading = page.get_by_text(re.compile(r"^[\d,]+ selected · ")).first.inner_text()
    assert int(heading.split(" ")[0].replace(",", "")) >= 100, heading
    assert page.locator(".st-key-emb_selected").get_by_role("button", name="Explain").count() == 48
    page.locator(".st-key-emb_breakdown").first.scroll_into_view_if_needed()
    no_exception(page, "Embeddings after a box selection")
    shot(page, "diag_embeddings_selected")
    page.locator(".st-key-emb_selected").get_by_role("button", name="Explain").first.click()
    page.locator(".st-key-emb_sel_explain_panel img").nth(2).wait_for(state="visible", timeout=60_000)
    page.locator(".st-key-emb_sel_neighbours img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1000)
    no_exception(page, "Embeddings after Explain")
    shot(page, "diag_embeddings_explained")
    page.locator(".st-key-emb_tag_name input").first.fill("box selection")
    page.locator(".st-key-emb_tag_name input").first.press("Enter")
    settle(page)
    page.locator(".st-key-emb_tag button").first.click()
    page.get_by_text("Tagged as box selection").first.wait_for(state="visible", timeout=30_000)

    open_page(page, "Selections", "Selections", ".st-key-sel_csv_0")
    assert page.locator('[data-testid="stExpander"]', has_text="box selection").first.is_visible()
    shot(page, "diag_selections")
    print("\npages (s):", {k: round(v, 2) for k, v in timings.items()})
