"""The One image page in headless Chromium at 1400×900 (the server and browser fixtures of tests/test_browser.py):
Open under an image of the Errors gallery goes to that image's page (?i=N in the address), whose image, verdict
and tag box are inside the window without scrolling; Find out why gives the verdict there, a saved tag lands in
<checkpoint>.tags.json, and the address alone opens the same image in a fresh page. Screenshots go to the
test's tmp dir and artifacts/browser/sample_*.png. Skip with `pytest --no-browser` or CNNLENS_SKIP_BROWSER=1."""
from __future__ import annotations

import re

import pytest

from conftest import build_browser_checkpoints
from test_browser import ARTIFACTS, browser_page, driver, no_exception, server, settle, wait_ready  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lens_checkpoints(tiny_ckpt, tmp_path_factory):
    """The dashboard suites' checkpoints, wrong.pt on 240 test and 200 training images (conftest)."""
    return build_browser_checkpoints(tiny_ckpt, tmp_path_factory.mktemp("browser-sample"))


def shot(page, tmp_path, name: str) -> None:
    driver.screenshot(page, tmp_path / f"{name}.png")
    driver.screenshot(page, ARTIFACTS / f"{name}.png")


def inside(page, selector: str, what: str) -> None:
    box = driver.in_viewport(page, selector)
    assert box["inside"] and box["height"] > 20, f"{what} is not inside the 1400x900 window: {box}"


def test_open_from_errors_shows_the_image_its_verdict_and_its_tag_box(browser_page, server, lens_checkpoints,  # noqa: F811
                                                                      tmp_path):
    from cnnlib.diagnose import tags
    from cnnlib.inference import load_model
    url, _ = server
    page = browser_page
    page.goto(url + "/Errors")
    wait_ready(page, "Errors", ".st-key-err_gallery img")
    no_exception(page, "Errors")
    first = page.locator('[class*="st-key-err_open_"]').first
    i = int(re.search(r"st-key-err_open_(\d+)", first.get_attribute("class")).group(1))
    first.locator("button").first.click()
    wait_ready(page, "One image", ".st-key-sample_image img")
    settle(page)
    no_exception(page, "One image")
    assert re.search(rf"[?&]i={i}\b", page.url), page.url
    assert page.locator(".st-key-sample_image").inner_text().startswith(f"#{i} as the model sees it")
    for selector, what in ((".st-key-sample_image img", "the image"), (".st-key-sample_verdict", "the verdict"),
                           (".st-key-sample_tagbox", "the tag box")):
        inside(page, selector, what)
    shot(page, tmp_path, "sample_opened")

    button = page.locator(".st-key-sample_triage_btn button")
    if button.count():              # on request, unless the background preparation has worked the verdicts out
        button.click()
    page.locator(".st-key-sample_verdict", has_text="sure").wait_for(state="visible", timeout=120_000)
    settle(page)
    no_exception(page, "One image after Find out why")
    inside(page, ".st-key-sample_verdict", "the verdict")
    inside(page, ".st-key-sample_tagbox", "the tag box after the verdict")
    page.locator(".st-key-sample_tag_text input").fill("two objects in one picture")
    page.locator(".st-key-sample_tag_text input").press("Enter")
    settle(page)
    page.locator(".st-key-sample_tag_save button").click()
    page.locator(".st-key-sample_tagbox", has_text="UTC in wrong.pt.tags.json").wait_for(state="visible")
    settle(page)
    shot(page, tmp_path, "sample_tagged")
    meta = load_model(lens_checkpoints["wrong"]).meta
    saved = tags.load_tags(lens_checkpoints["wrong"], meta)
    assert [(e["index"], e["tag"]) for e in saved] == [(i, "two objects in one picture")]

    page.goto(f"{url}/One_image?i={i}")                                        # the address alone: same image, tag
    wait_ready(page, "One image", ".st-key-sample_image img")
    assert page.locator(".st-key-sample_tag_text input").input_value() == "two objects in one picture"
    no_exception(page, "One image from its address")
    assert (tmp_path / "sample_opened.png").stat().st_size > 10_000
