"""The teaching pages in a real browser (headless Chromium at 1400×900, the fixtures of test_browser.py): each
opens without an exception box; on the forward-pass page a feature-map cell is clicked and the arithmetic
follows. Screenshots go to artifacts/browser/teach_*.png. Prints "step-by-step page ready after a click: X s".

Skip it with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

import time

import pytest
from test_browser import browser_page, lens_checkpoints, no_exception, server, settle, shot, wait_ready  # noqa: F401

pytestmark = pytest.mark.browser

PAGES = [("Forward_pass", "Forward pass", ".st-key-fp_map_box .nsewdrag"),
         ("Through_the_layers", "Through the layers", ".st-key-ls_strip img"),
         ("Channel_visualisation", "Channel visualisation", ".st-key-cv_top_grid img"),
         ("Training_batch", "Training batch", ".st-key-tb_stages img"),
         ("Train_a_model", "Train a model", ".st-key-tl_start button"),
         ("Sanity_check", "Sanity check", ".st-key-san_maps img")]


def test_teaching_pages_in_chromium(browser_page, server):  # noqa: F811
    url, _ = server
    page = browser_page
    page.goto(url + "/")
    wait_ready(page, "CNN Lens")
    for i, (path, title, extra) in enumerate(PAGES):
        t0 = time.perf_counter()
        page.goto(f"{url}/{path}")          # the sidebar's list may be collapsed ("View more") with many pages
        wait_ready(page, title, extra, timeout=120_000)
        print(f"{title}: ready after {time.perf_counter() - t0:.2f} s")
        no_exception(page, title)
        shot(page, f"teach_{i}_{path.lower()}")
        shot(page, f"teach_{i}_{path.lower()}_full", full=True)

        if path == "Forward_pass":
            area = page.locator(".st-key-fp_map_box .nsewdrag").first
            area.scroll_into_view_if_needed()
            box = area.bounding_box()
            n = 16                                               # conv1's map is 16×16 on the tiny model
            row, col = 3, 11
            t0 = time.perf_counter()
            area.click(position={"x": box["width"] * (col + 0.5) / n, "y": box["height"] * (row + 0.5) / n})
            page.get_by_text(f"row {row}, column {col}").first.wait_for(state="visible", timeout=60_000)
            settle(page)
            page.locator(".st-key-fp_steps").get_by_text("hook = ").first.wait_for(state="visible")
            ready = time.perf_counter() - t0
            print(f"\nstep-by-step page ready after a click: {ready:.2f} s")
            assert page.locator(".st-key-fp_y input").first.input_value() == str(row)
            assert page.locator(".st-key-fp_x input").first.input_value() == str(col)
            no_exception(page, "Forward pass after a click")
            shot(page, "teach_0b_forward_pass_clicked")
            page.locator(".st-key-fp_steps").scroll_into_view_if_needed()
            shot(page, "teach_0c_forward_pass_arithmetic")
            page.locator(".st-key-fp_head").scroll_into_view_if_needed()
            shot(page, "teach_0d_forward_pass_head")

        if path == "Channel_visualisation":
            page.locator(".st-key-cv_go button").first.click()
            page.locator(".st-key-cv_result img").first.wait_for(state="visible", timeout=180_000)
            settle(page)
            no_exception(page, "Channel visualisation after optimising")
            shot(page, "teach_2b_channel_vis_done")
