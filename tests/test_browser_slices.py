"""The Failure slices page in headless Chromium at 1400×900 (the server and browser fixtures of
tests/test_browser.py): the tiny checkpoint on a test folder with a quarter of one class turned upside down
(tests/test_slices.py's planted slice); the page opens, the slices are found on request, the first slice's card
is in the viewport without scrolling, its images open in the gallery brought into view, no exception box.
Screenshots go to artifacts/browser/slices_*.png. Skip with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

import shutil

import pytest
import torch

from test_browser import browser_page, in_viewport, no_exception, server, settle, shot, wait_ready  # noqa: F401
from test_slices import turned_folder  # noqa: F401 - the fixture: the planted slice on disk

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lens_checkpoints(tiny_ckpt, turned_folder, tmp_path_factory):  # noqa: F811
    """One checkpoint, the tiny one, whose dataset is the folder with the turned images (the server's picker
    opens it by default)."""
    folder = tmp_path_factory.mktemp("browser-slices") / "checkpoints"
    folder.mkdir()
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["data"] = {**ckpt["data"], "path": turned_folder[0]}
    ckpt.pop("test_predictions", None)            # other test images: predictions come from the pixels
    torch.save(ckpt, folder / "turned.pt")
    shutil.copystat(tiny_ckpt, folder / "turned.pt")
    return {"dir": str(folder)}


def test_failure_slices_in_chromium(browser_page, server):  # noqa: F811
    url, _ = server
    page = browser_page
    page.goto(url + "/Failure_slices")
    wait_ready(page, "Failure slices", ".st-key-slices_run button, .st-key-slices_card_1")
    no_exception(page, "Failure slices")
    run = page.locator(".st-key-slices_run button")
    if run.count():                                   # on request, unless the features are on disk already
        run.first.click()
    page.locator(".st-key-slices_card_1 img").first.wait_for(state="visible", timeout=120_000)
    settle(page)
    no_exception(page, "Failure slices, found")
    card = in_viewport(page, ".st-key-slices_card_1")
    assert card["inside"], card                        # the first slice is seen without scrolling
    typical = page.locator(".st-key-slices_typical_1 img")
    assert typical.count() == 9 and all(typical.nth(i).is_visible() for i in range(9))
    assert page.locator(".st-key-slices_card_1").inner_text().count("red") >= 1
    shot(page, "slices_found")

    page.locator(".st-key-slices_show_1 button").first.click()
    page.locator(".st-key-slices_gallery img").first.wait_for(state="visible", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1000)                        # the smooth scroll to the gallery
    no_exception(page, "Failure slices, the slice's images")
    top = in_viewport(page, ".st-key-slices_selected")["top"]
    assert -5 <= top <= 200, top                       # brought into view, its heading at the top
    shot(page, "slices_images")
    shot(page, "slices_full", full=True)
