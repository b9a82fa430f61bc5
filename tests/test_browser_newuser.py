"""What a new user tripped over (issue 18), in headless Chromium at 1400×900 (the server and browser fixtures of
tests/test_browser.py): an unreadable image in the Data folder (1), a click on the Embeddings map (3), the
checkpoint picker above the fold and a trained default (5), results brought into view after a cell click and a
box selection (6), Through the layers inside the page (8), and Home's card with a long model name (10). Each
check saves a screenshot under the test's tmp dir and checks by bounding box that the result is inside the
viewport. Skip with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

import os
import re

import pytest
import torch

from conftest import build_browser_checkpoints, write_image_folder
from test_browser import (browser_page, click_cell, driver, in_viewport, nav_link, no_exception,  # noqa: F401
                          server, settle, wait_ready)

box_select = driver.box_select

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lens_checkpoints(tiny_ckpt, tmp_path_factory):
    """The dashboard suites' checkpoints (wrong.pt pointed at 240 test images, predictions computed from the
    pixels), plus imported.pt: the newest file, an imported model (no history) with a long torchvision name."""
    base = tmp_path_factory.mktemp("browser-newuser")
    lc = build_browser_checkpoints(tiny_ckpt, base, n_train=8)
    ckpt = torch.load(lc["wrong"], weights_only=True)
    imported = {**ckpt, "history": [], "best_epoch": None, "created": "2099-01-01T00:00:00+00:00",
                "model": {**ckpt["model"], "name": "torchvision/mobilenet_v3_small"},
                "metrics": {"val_acc": None, "test_acc": None, "test_loss": None, "train_seconds": None}}
    torch.save(imported, os.path.join(lc["dir"], "imported.pt"))        # Home only: it reads no weights
    spoilt = write_image_folder(base / "spoilt", n_train=8, n_test=40, classes=lc["classes"], size=16)
    with open(os.path.join(spoilt, "test", lc["classes"][0], "notes.jpg"), "w") as f:
        f.write("not an image, only some notes\n")
    return {**lc, "imported": os.path.join(lc["dir"], "imported.pt"), "spoilt": spoilt}


def open_home(page, url: str, checkpoint: str | None = "wrong.pt") -> None:
    """A new session on Home with `checkpoint` open (None: whatever the picker offers first)."""
    page.goto(url + "/")
    wait_ready(page, "CNN Lens")
    if checkpoint and not picked(page).startswith(checkpoint):
        pick_checkpoint(page, checkpoint)
    page.locator(".st-key-home_card").first.wait_for(state="visible")


def open_page(page, path: str, title: str, extra: str) -> None:
    nav_link(page, path).click()
    wait_ready(page, title, extra)
    no_exception(page, title)


def pick_checkpoint(page, name: str) -> None:
    """Type into the sidebar's searchable checkpoint box and take the first match."""
    box = page.locator(".st-key-side_ckpt input").first
    box.click()
    box.fill(name)
    page.keyboard.press("Enter")
    settle(page)
    page.wait_for_function("(n) => document.querySelector('.st-key-side_ckpt input').value.startsWith(n)", arg=name)
    settle(page)


def picked(page) -> str:
    return page.locator(".st-key-side_ckpt input").first.input_value()


def snap(page, tmp_path, name: str) -> None:
    page.wait_for_timeout(400)
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def inside(page, selector: str, what: str) -> dict:
    box = in_viewport(page, selector)
    assert box["inside"], f"{what} not (fully) inside the 1400x900 viewport: {box}"
    return box


def test_picker_above_the_fold_and_a_trained_default(browser_page, server, lens_checkpoints, tmp_path):  # noqa: F811
    """5: the picker was at y ~ 980 under the 20-page list; an imported model newer than the trained ones
    became the default. 10: Home's card cut "torchvision/…"."""
    url, _ = server
    page = browser_page
    open_home(page, url, checkpoint=None)
    no_exception(page, "Home")
    box = inside(page, ".st-key-side_ckpt", "the checkpoint picker")
    assert box["bottom"] <= 900
    assert picked(page).startswith("wrong.pt")             # trained, not the newer imported.pt
    snap(page, tmp_path, "5_home_picker")

    pick_checkpoint(page, "imported.pt")
    page.locator(".st-key-home_card", has_text="mobilenet_v3_small").first.wait_for(state="visible")
    cut = page.evaluate("""() => Array.from(document.querySelectorAll(
            '.st-key-home_card [data-testid="stMetricValue"], .st-key-home_card [data-testid="stMetricValue"] *'))
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)""")
    assert cut == [], f"summary values cut off: {cut}"
    inside(page, ".st-key-home_card", "the summary card")
    snap(page, tmp_path, "10_home_long_model_name")

    pick_checkpoint(page, "tiny.pt")                       # the user's choice follows to the next page
    open_page(page, "Evaluation", "Evaluation", ".st-key-eval_cm .nsewdrag")
    assert picked(page).startswith("tiny.pt")


def test_a_clicked_point_shows_its_image_beside_the_map(browser_page, server, tmp_path):  # noqa: F811
    """3: a click on the Embeddings map did nothing."""
    url, _ = server
    page = browser_page
    open_home(page, url)
    open_page(page, "Embeddings", "Embeddings", ".st-key-emb_chart .main-svg")
    page.locator(".st-key-emb_chart").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    point = page.evaluate("""() => {
        const plot = document.querySelector('.st-key-emb_chart .nsewdrag').getBoundingClientRect();
        for (const p of document.querySelectorAll('.st-key-emb_chart .scatterlayer .point')) {
            const r = p.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
            if (y > plot.top + 10 && y < Math.min(plot.bottom, window.innerHeight) - 10 && x > plot.left + 10
                && x < plot.right - 10) return {x, y};
        }
        return null; }""")
    assert point, "no point of the map inside the viewport"
    page.mouse.move(point["x"], point["y"], steps=4)
    page.wait_for_timeout(300)
    page.mouse.click(point["x"], point["y"])
    page.locator(".st-key-emb_point img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    no_exception(page, "Embeddings after a click")
    caption = page.locator(".st-key-emb_point").first.inner_text()
    assert re.search(r"#\d+ · true \w+ · predicted \w+ [\d.]+%", caption), caption
    inside(page, ".st-key-emb_point img", "the clicked point's image")
    snap(page, tmp_path, "3_embeddings_click")


def test_results_are_brought_into_view(browser_page, server, lens_checkpoints, tmp_path):  # noqa: F811
    """6: a clicked cell's images ~1,140 px down, a box selection's ~1,410 px down, with no scroll."""
    url, _ = server
    page = browser_page
    open_home(page, url)
    open_page(page, "Evaluation", "Evaluation", ".st-key-eval_cm .nsewdrag")
    k, c = len(lens_checkpoints["classes"]), lens_checkpoints["best_class"]
    page.locator(".st-key-eval_cm").first.scroll_into_view_if_needed()
    click_cell(page, c, c, k)
    page.locator(".st-key-eval_cell_grid img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1200)                           # the smooth scroll
    no_exception(page, "Evaluation after a cell click")
    inside(page, ".st-key-eval_cell_grid img", "the first image of the clicked cell")
    snap(page, tmp_path, "6_evaluation_cell")

    open_page(page, "Embeddings", "Embeddings", ".st-key-emb_chart .main-svg")
    box_select(page, "emb_chart")
    page.locator(".st-key-emb_selected img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1200)
    no_exception(page, "Embeddings after a box selection")
    inside(page, ".st-key-emb_breakdown", "the selection's class breakdown")
    inside(page, ".st-key-emb_selected img", "the first selected image")
    snap(page, tmp_path, "6_embeddings_selection")


def test_through_the_layers_fits_the_page(browser_page, server, tmp_path):  # noqa: F811
    """8: the strip ran off the right edge, the class-score column was cut, names wrapped mid-word."""
    url, _ = server
    page = browser_page
    open_home(page, url)
    open_page(page, "Through_the_layers", "Through the layers", ".st-key-ls_strip img")
    page.locator(".st-key-ls_scores .main-svg").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    strip = page.evaluate("""() => { const s = document.querySelector('.st-key-ls_strip');
        return {scroll: s.scrollWidth, client: s.clientWidth, right: s.getBoundingClientRect().right}; }""")
    assert strip["scroll"] <= strip["client"] + 1 and strip["right"] <= 1400, strip
    page.locator(".st-key-ls_scores_col").first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    inside(page, ".st-key-ls_scores_col", "the class-score column")
    predicted = page.locator(".st-key-ls_scores_col").get_by_text(re.compile("^predicted: ")).first
    assert predicted.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), predicted.inner_text()
    # every line break inside a layer's name or shape falls after ".", "×" or a space, never mid-word
    bad = page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('.st-key-ls_strip strong, .st-key-ls_strip [data-testid="stCaptionContainer"]')) {
            const text = el.firstChild && el.firstChild.nodeType === 3 ? el.firstChild : null;
            if (!text) continue;
            const range = document.createRange(); let top = null;
            for (let i = 0; i < text.length; i++) {
                range.setStart(text, i); range.setEnd(text, i + 1);
                const r = range.getBoundingClientRect(); if (!r.width) continue;
                if (top !== null && r.top > top + 2 && !/[.×\\s\\u200b·]/.test(text.data[i - 1])) out.push(text.data);
                top = r.top;
            }
        }
        return out; }""")
    assert bad == [], f"broken mid-word: {bad}"
    snap(page, tmp_path, "8_through_the_layers")


def test_an_unreadable_image_in_the_data_folder(browser_page, server, lens_checkpoints, tmp_path):  # noqa: F811
    """1: one text file named .jpg in the Data folder crashed every pixel page."""
    url, _ = server
    page = browser_page
    open_home(page, url)
    data = page.locator(".st-key-side_data input").first
    data.fill(lens_checkpoints["spoilt"])
    data.press("Enter")
    settle(page)
    for path, title, extra in (("Errors", "Errors", None),
                               ("Evaluation", "Evaluation", ".st-key-eval_cm .nsewdrag")):
        open_page(page, path, title, extra)
        main = page.locator('[data-testid="stMain"]').first.inner_text()
        assert "Something went wrong" not in main and "This app has encountered an error" not in main, title
        note = page.get_by_text(re.compile("skipped", re.I)).first
        note.wait_for(state="visible", timeout=30_000)
        assert "notes.jpg" in note.inner_text(), note.inner_text()
        note.scroll_into_view_if_needed()
        box = note.bounding_box()
        assert box and 0 <= box["y"] and box["y"] + box["height"] <= 900 and box["x"] + box["width"] <= 1400, box
        snap(page, tmp_path, f"1_{path.lower()}_spoilt_folder")
