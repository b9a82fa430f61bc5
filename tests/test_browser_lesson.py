"""`cnnlib lesson` in a real browser (Playwright + Debian's /usr/bin/chromium, headless): lessons for the tiny
trained simple_cnn, an imported random-weight resnet9 (32 px) and an imported random-weight
torchvision/mobilenet_v3_small (224 px), each opened from a loopback static server (directory form) and from
file:// (single-file form), every request that leaves the page's own origin aborted. Checked: classify()
equals torch's probabilities (1e-4) on the lesson's images; unit() equals a forward hook on the checkpoint's
own network (1e-4) on 10 units per conv layer, and its JavaScript arithmetic equals the ONNX value at every
step; every view shows with no console error; the exercises' answers equal torch's; what-if edits re-run the
model; a class name that is markup stays text; an undecodable upload and a browser without WebAssembly each
get one sentence.

Skipped with --no-browser / CNNLENS_SKIP_BROWSER=1; without Chromium it fails (CI installs it)."""
from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlib.inference import load_model
from cnnlib.lesson.build import ASSETS, build_lesson, render_page
from conftest import bench_module, write_image_folder
from test_import import cli, randomize_bn
from test_lesson import hooked, page_json, png_pixels

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWS = ["overview", "unit", "head", "whatif", "confusion", "mistakes", "training", "filters", "exercises"]
EVIL = "<img src=x onerror=alert(1)>"


@contextlib.contextmanager
def static_server(folder: Path):
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(folder))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM} (or skip with --no-browser)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield p, b
        b.close()


@contextlib.contextmanager
def lesson_page(browser, url: str, wait=True):
    """A fresh page on `url`; requests outside its origin (or outside file:// for a file) are aborted and
    recorded; console errors, page errors and dialogs are recorded. Yields (page, problems)."""
    _, b = browser
    ctx = b.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    problems = []
    origin = url if url.startswith("file://") else url[:url.index("/", len("http://"))]

    def route(r):
        u = r.request.url
        if u.startswith(("data:", "blob:")) or (u.startswith("file://") if url.startswith("file://") else u.startswith(origin)):
            r.continue_()
        else:
            problems.append(f"request left the page: {u}")
            r.abort()
    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url)
    if wait:
        page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
        assert page.evaluate("document.body.dataset.ready") == "1", page.locator("#status").text_content()
    try:
        yield page, problems
    finally:
        ctx.close()


def poll(page, js: str, timeout_s: float = 20.0) -> None:
    """Wait until `js` is true (page.wait_for_function evaluates strings, which the lesson's CSP forbids)."""
    import time
    end = time.monotonic() + timeout_s
    while not page.evaluate(js):
        assert time.monotonic() < end, f"timed out waiting for {js}"
        page.wait_for_timeout(50)


def single_file(folder: Path, out: Path) -> Path:
    """The single-file form of a built directory lesson, rendered by the builder's own render_page."""
    payload = page_json((folder / "index.html").read_text(), "payload")
    out.write_text(render_page(payload, {k: (folder / "assets" / v).read_bytes() for k, v in ASSETS.items()}))
    return out


def torch_probs(model, payload, idx) -> np.ndarray:
    x = torch.from_numpy(np.stack([png_pixels(payload["images"][i]["png"]) for i in idx])).float() / 255
    return torch.softmax(hooked(model, x, [])["logits"], 1).numpy()


def check_lesson(page, problems, ckpt, n_images=20, units_per_conv=10, views=True):
    model = load_model(ckpt)
    payload = page.evaluate("window.cnnlens.payload")
    idx = list(range(min(n_images, len(payload["images"]))))
    got = [page.evaluate("(u) => window.cnnlens.classify(u)", "data:image/png;base64," + payload["images"][i]["png"])
           for i in idx]
    probs = torch_probs(model, payload, idx)
    for g, p in zip(got, probs):
        np.testing.assert_allclose([g["probabilities"][c] for c in payload["classes"]], p, atol=1e-4)
        assert p[payload["classes"].index(g["top"])] >= p.max() - 1e-4      # the top class (ties: random weights)
    # units of every conv layer on image 0, against forward hooks on the checkpoint's own network
    convs = [r for r in payload["layers"] if r["type"] == "Conv2d"]
    x0 = torch.from_numpy(png_pixels(payload["images"][0]["png"])).float()[None] / 255
    ref = hooked(model, x0, [r["name"] for r in convs])
    rng = np.random.default_rng(0)
    checked = 0
    for r in convs:
        c, h, w = r["shape"]
        picks = [(int(rng.integers(c)), int(rng.integers(h)), int(rng.integers(w))) for _ in range(units_per_conv)]
        units = page.evaluate("async ([layer, picks]) => Promise.all(picks.map(([c, y, x]) => window.cnnlens.unit(layer, c, y, x, 0)))",
                              [r["name"], picks])
        for (ch, y, xx), u in zip(picks, units):
            want = float(ref[r["name"]][0, ch, y, xx])
            assert abs(u["onnx"] - want) <= 1e-4 * max(1.0, abs(want)), (r["name"], ch, y, xx, u["onnx"], want)
            assert abs(u["value"] - want) <= 1e-4 * max(1.0, abs(want)), (r["name"], ch, y, xx, u["value"], want)
            for s in u["steps"]:
                assert abs(s["result"] - s["onnx"]) <= 1e-4 * max(1.0, abs(s["onnx"])), (r["name"], s["kind"], s)
            checked += 1
    assert checked == units_per_conv * len(convs)
    # the head and softmax of image 0
    head = page.evaluate("window.cnnlens.head(0)")
    np.testing.assert_allclose(head["probs"], torch_probs(model, payload, [0])[0], atol=1e-4)
    if payload["head"]:
        np.testing.assert_allclose(head["logits_js"], head["logits"], atol=1e-4)
    # exercises: the answers the page reveals equal torch's
    for e in page.evaluate("window.cnnlens.exercises()"):
        d = e["data"]
        if e["kind"] in ("unit", "class"):
            xi = torch.from_numpy(png_pixels(payload["images"][d["image"]]["png"])).float()[None] / 255
            out = hooked(model, xi, [d["layer"]] if e["kind"] == "unit" else [])
            if e["kind"] == "unit":
                assert e["answer"] == pytest.approx(float(out[d["layer"]][0, d["channel"], d["row"], d["col"]]), abs=1e-4), e
            else:
                p = torch.softmax(out["logits"][0], 0)
                assert float(p[e["answer"]]) >= float(p.max()) - 1e-6, e
        elif e["kind"] == "wrong":
            p = torch_probs(model, payload, d["images"])
            wrong = [i for i, pi in zip(d["images"], p) if pi[payload["images"][i]["label"]] < pi.max()]
            assert wrong == [e["answer"]], e
    if views:
        for v in VIEWS:
            page.click(f"#tabs button[data-id='{v}']")
            section = page.locator(f"#view-{v}")
            assert section.is_visible(), v
            if v == "exercises":
                page.wait_for_selector("#exercises[data-done]", state="attached", timeout=60_000)
            assert page.evaluate("(v) => document.querySelector('#view-' + v + ' > div:last-child').childElementCount", v) > 0, v
    assert not problems, problems
    return payload


@pytest.fixture(scope="module")
def lessons(tiny_ckpt, tmp_path_factory):
    """name -> (checkpoint, lesson folder), built on first use: simple_cnn (the tiny trained one), an imported
    random-weight resnet9 (32 px) and an imported random-weight torchvision/mobilenet_v3_small (224 px)."""
    from cnnlib.models.registry import get_model
    base = tmp_path_factory.mktemp("browser-lesson")
    built = {}

    def make(name):
        if name in built:
            return built[name]
        if name == "simple_cnn":
            built[name] = (tiny_ckpt, Path(build_lesson(tiny_ckpt, base / name, images=5)).parent)
        elif name == "resnet9":
            data32 = write_image_folder(base / "d32", n_train=8, n_test=20, size=32)
            torch.manual_seed(0)
            torch.save(randomize_bn(get_model("resnet9", num_classes=4, image_size=32)).state_dict(), base / "r9.pth")
            rc, _, err = cli("import", base / "r9.pth", "--model", "resnet9", "--data", data32, "--out",
                             base / "r9.pt", "--data-root", base / "root")
            assert rc == 0, err
            built[name] = (str(base / "r9.pt"), Path(build_lesson(base / "r9.pt", base / name, images=5,
                                                                  saliency_limit=2)).parent)
        else:
            walk = bench_module("walk_pages")
            data224 = write_image_folder(base / "d224", n_train=6, n_test=6, classes=["circle", "square", "stripe"],
                                         size=224)
            weights = walk.save_weights("torchvision/mobilenet_v3_small", 3, base / "mnv3.pth")
            rc, _, err = cli("import", weights, "--model", "torchvision/mobilenet_v3_small", "--data", data224,
                             "--out", base / "mnv3.pt", "--data-root", base / "root")
            assert rc == 0, err
            built[name] = (str(base / "mnv3.pt"), Path(build_lesson(base / "mnv3.pt", base / name, images=2,
                                                                    saliency_limit=1)).parent)
        return built[name]
    return make


@pytest.mark.parametrize("name", ["simple_cnn", "resnet9", "mobilenet_v3_small"])
def test_lesson_from_a_static_server_and_from_a_file(browser, lessons, name, tmp_path):
    ckpt, folder = lessons(name)
    small = name == "mobilenet_v3_small"
    with static_server(folder) as url, lesson_page(browser, url + "index.html") as (page, problems):
        check_lesson(page, problems, ckpt, units_per_conv=3 if small else 10)
    one = single_file(folder, tmp_path / f"{name}.html")
    with lesson_page(browser, one.as_uri()) as (page, problems):
        check_lesson(page, problems, ckpt, n_images=4, units_per_conv=1 if small else 2, views=not small)


def test_what_if_reruns_every_layer(browser, lessons):
    ckpt, folder = lessons("simple_cnn")
    model = load_model(ckpt)
    with static_server(folder) as url, lesson_page(browser, url + "index.html") as (page, problems):
        page.click("#tabs button[data-id='whatif']")
        before = page.evaluate("Array.from(window.cnnlensLesson.current.outs.logits.data)")
        box = page.locator("input.w").first
        index = int(box.get_attribute("data-index"))
        box.fill("3.5")
        box.dispatch_event("change")
        poll(page, f"window.cnnlensLesson.current.outs.logits.data[0] !== {before[0]!r}")
        after = page.evaluate("Array.from(window.cnnlensLesson.current.outs.logits.data)")
        payload = page.evaluate("window.cnnlens.payload")
        w = model.conv1.weight.detach().clone()
        w.view(-1)[index] = 3.5
        model.conv1.weight.data.copy_(w)
        x0 = torch.from_numpy(png_pixels(payload["images"][0]["png"])).float()[None] / 255
        np.testing.assert_allclose(after, hooked(model, x0, [])["logits"][0].numpy(), atol=1e-4)
        assert np.abs(np.array(after) - before).max() > 1e-4
        canvas = page.locator("canvas.paint")
        canvas.hover()
        page.mouse.down()
        page.mouse.move(*[v + 20 for v in (canvas.bounding_box()["x"], canvas.bounding_box()["y"])])
        page.mouse.up()
        poll(page, f"window.cnnlensLesson.current.outs.logits.data[0] !== {after[0]!r}")
        painted = page.evaluate("Array.from(window.cnnlensLesson.current.outs.logits.data)")
        assert np.abs(np.array(painted) - after).max() > 1e-6
        assert not problems, problems


def test_click_a_unit_guess_before_reveal_and_print_a_worksheet(browser, lessons):
    ckpt, folder = lessons("simple_cnn")
    with static_server(folder) as url, lesson_page(browser, url + "index.html") as (page, problems):
        page.locator("#overview canvas.clickable").first.click(position={"x": 3, "y": 3})
        assert page.locator("#view-unit").is_visible()
        assert page.locator("#unit h2").text_content().startswith("conv1, channel 0, row 0, col 0")
        assert page.locator("#unit .check").count() >= 3                 # conv, BatchNorm, ReLU (and pool) checked
        page.click("#tabs button[data-id='confusion']")
        payload = page.evaluate("window.cnnlens.payload")
        key, ids = next(iter(payload["confusion"]["cells"].items()))
        a, b = map(int, key.split(","))
        page.locator("table.cm tr").nth(a + 1).locator("td").nth(b).click()      # the cell opens its images
        assert page.locator("#cell-images img").count() == len(ids) > 0
        page.click("#tabs button[data-id='exercises']")
        page.wait_for_selector("#exercises[data-done]", state="attached", timeout=60_000)
        card = page.locator(".exercise[data-kind='class']").first
        check = card.get_by_role("button", name="Check")
        assert check.is_disabled()                                        # no reveal before a guess
        assert card.locator(".result").text_content() == ""
        card.locator(".choice").first.click()
        check.click()
        assert re.match(r"(Right|Not quite): the model's answer is ", card.locator(".result").text_content())
        page.emulate_media(media="print")
        assert page.locator(".answer-key").is_visible() and not page.locator("#tabs").is_visible()
        assert page.locator("#view-exercises").is_visible() and not page.locator("#view-overview").is_visible()
        n = page.evaluate("window.cnnlens.exercises().length")
        assert page.locator(".answer-key li").count() == n
        assert not problems, problems


def test_markup_in_a_class_name_stays_text_and_bad_input_gets_one_sentence(browser, tmp_path):
    from modeltools import make_model
    model = make_model(name="simple_cnn", size=16)
    torch.save({"format_version": 1, "classes": [EVIL, "b", "c", "d"], "input_shape": [3, 16, 16],
                "model": {"name": "simple_cnn", "kwargs": {"num_classes": 4, "in_channels": 3, "image_size": 16}},
                "normalization": model.meta["normalization"], "state_dict": model.state_dict()}, tmp_path / "evil.pt")
    page_file = Path(build_lesson(tmp_path / "evil.pt", tmp_path / "evil.html", images=1, single_file=True))
    with lesson_page(browser, page_file.as_uri()) as (page, problems):
        page.click("#tabs button[data-id='head']")
        assert page.get_by_text(EVIL, exact=True).count() >= 1          # shown as the string itself
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"this is not an image")
        page.click("#tabs button[data-id='overview']")
        page.set_input_files("#upload", str(bad))
        poll(page, "document.getElementById('upload-status').textContent.length > 0")
        text = page.locator("#upload-status").text_content()
        assert text == "notes.png cannot be decoded as an image: choose a JPEG, PNG, GIF or WebP photo.", text
        good = tmp_path / "photo.png"
        from PIL import Image
        Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(good)
        page.set_input_files("#upload", str(good))
        poll(page, "document.getElementById('upload-status').textContent.startsWith('Showing')")
        assert not [p for p in problems if "dialog" in p or "page error" in p], problems
    _, b = browser
    ctx = b.new_context()
    try:                              # a browser without WebAssembly
        page = ctx.new_page()
        page.add_init_script("delete globalThis.WebAssembly")
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
        text = page.locator("#status").text_content()
        assert text.startswith("This browser has no WebAssembly, which the lesson needs to run the model"), text
    finally:
        ctx.close()


def test_reflect_and_circular_padding_units_match(browser, tmp_path):
    """A unit on the border of a conv that pads by reflection (or wraps around) reads the map itself, not zeros."""
    from torch import nn
    from cnnlib.models.registry import list_models, register_model
    if "lesson_test_padding" not in list_models():
        @register_model("lesson_test_padding")
        def _padded(num_classes=3, **_):
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Conv2d(4, 4, 3, padding=2, padding_mode="circular"), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
    from cnnlib.models.registry import get_model
    torch.manual_seed(0)
    net = randomize_bn(get_model("lesson_test_padding"))
    torch.save({"format_version": 1, "classes": ["a", "b", "c"], "input_shape": [3, 12, 12],
                "model": {"name": "lesson_test_padding", "kwargs": {}},
                "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "state_dict": net.state_dict()},
               tmp_path / "pad.pt")
    page_file = Path(build_lesson(tmp_path / "pad.pt", tmp_path / "pad.html", images=1, single_file=True))
    model = load_model(tmp_path / "pad.pt")
    with lesson_page(browser, page_file.as_uri()) as (page, problems):
        payload = page.evaluate("window.cnnlens.payload")
        x0 = torch.from_numpy(png_pixels(payload["images"][0]["png"])).float()[None] / 255
        ref = hooked(model, x0, ["0", "3"])
        for layer, unit in (("0", (1, 0, 0)), ("0", (2, 11, 5)), ("3", (0, 0, 0)), ("3", (3, 13, 1))):
            u = page.evaluate("([l, c, y, x]) => window.cnnlens.unit(l, c, y, x, 0)", [layer, *unit])
            want = float(ref[layer][0][unit])
            assert abs(u["value"] - want) < 1e-4 and abs(u["onnx"] - want) < 1e-4, (layer, unit, u["value"], want)
        assert not problems, problems
