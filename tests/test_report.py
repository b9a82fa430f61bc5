"""`cnnlib report`: one self-contained HTML file. Built for the tiny checkpoint with its data (some test images
moved to another class, so there are mistakes to show), for a copy whose data is gone (the sections that need
pixels say why, the rest renders), for a copy whose class names are markup (shown as text, no element made);
CLI exit codes and one-sentence errors; the shared static-page helpers (cnnlib.io.webpage); and one Chromium
check from file:// with every request but the file itself aborted."""
from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlib.__main__ import main
from cnnlib.io.checkpoint import load_checkpoint, save_checkpoint
from cnnlib.io import webpage

SECTIONS = ["summary", "curves", "confusion", "per-class", "calibration", "errors", "labels", "slices", "robustness"]
EVIL = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]
EVIL_FILE = "<i onmouseover=alert(1)>"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "report"


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of every <h2>."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.h2, self._in_h2 = [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def run_cli(args, capsys) -> tuple[int, str, str]:
    rc = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def self_contained(text: str) -> Tags:
    """No address outside the file, no script, no event handler; every image a decodable PNG data: URL."""
    low = text.lower()
    for bad in ("http://", "https://", 'src="//', "<script", "javascript:"):
        assert bad not in low, bad
    tags = Tags(text)
    assert not [t for t, _ in tags.tags if t in ("script", "iframe", "object", "embed", "link", "base", "form")]
    for tag, attrs in tags.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            assert im.width > 0 and im.height > 0
    return tags


def section_html(text: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


@pytest.fixture(scope="module")
def moved_data(tiny_ckpt, tmp_path_factory):
    """A copy of the tiny checkpoint's data where 4 test images of one class sit in another class's folder: the
    model keeps their true class, so the report has confident mistakes (and triage something to judge)."""
    src = Path(load_checkpoint(tiny_ckpt)["data"]["path"])
    dst = tmp_path_factory.mktemp("moved") / "data"
    shutil.copytree(src, dst)
    reds = sorted((dst / "test" / "red").iterdir())[:4]
    for i, f in enumerate(reds):                # one file name holds markup: shown as text
        f.rename(dst / "test" / "green" / (f"moved_{f.name}" if i else f"moved_{EVIL_FILE}{f.name}"))
    return dst


@pytest.fixture(scope="module")
def with_data(tiny_ckpt, moved_data, tmp_path_factory):
    """The report on the moved copy, its caches in a fresh data root holding one robustness result."""
    from cnnlib.diagnose.robustness import robustness_for_checkpoint
    from cnnlib.inference import load_model
    base = tmp_path_factory.mktemp("report")
    root = str(base / "root")
    robustness_for_checkpoint(load_model(tiny_ckpt), str(moved_data), root, images=8,
                              corruptions=["brightness", "pixelate"], severities=[1, 3])
    out = base / "tiny.html"
    assert main(["report", tiny_ckpt, "--data", str(moved_data), "--data-root", root, "--out", str(out),
                 "--errors", "4"]) == 0
    return out.read_text(encoding="utf-8")


def ckpt_copy(tiny_ckpt, tmp_path, classes=None, temperature=None) -> str:
    """The tiny checkpoint with its data path pointing nowhere (other class names, a temperature, when given)."""
    ck = load_checkpoint(tiny_ckpt)
    if temperature is not None:
        ck["temperature"] = temperature
    missing = str(tmp_path / "gone")
    ck["data"] = {**ck["data"], "path": missing}
    ck["config"] = {**ck.get("config", {}), "data": missing}
    if classes is not None:
        ck["classes"] = list(classes)
    path = str(tmp_path / "copy.pt")
    save_checkpoint(ck, path)
    return path


def test_report_with_data_has_every_section_and_is_self_contained(with_data):
    tags = self_contained(with_data)
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in with_data, sid
    assert len(tags.h2) == len(SECTIONS)
    errors = section_html(with_data, "errors")
    cards = errors.count('class="err"')
    assert 1 <= cards <= 4
    assert errors.count("<img") == 3 * cards               # the image, saliency for predicted and for true class
    assert "true <b>red</b>, predicted <b>green</b>" not in errors   # the moved ones: given green, model says red
    assert "true <b>green</b>, predicted <b>red</b>" in errors
    assert "moved_" in errors                                # the file name is shown, as text
    assert "moved_&lt;i onmouseover=alert(1)&gt;" in errors and EVIL_FILE not in with_data
    assert ("Triage: " in errors) or ("Triage verdicts are left out" in errors)
    assert "<table" in section_html(with_data, "confusion") and "<img" in section_html(with_data, "curves")
    assert "best epoch" in section_html(with_data, "curves")
    assert "ECE" in section_html(with_data, "calibration")
    slices = section_html(with_data, "slices")                   # a table of slices, or the sentence that there are none
    assert ("ranked by size times excess error" in slices and "<table" in slices) or "No group of similar" in slices
    assert "top-" in section_html(with_data, "per-class")
    robust = section_html(with_data, "robustness")               # the one cached result, found by its key
    assert "Accuracy on 8 test images" in robust and "pixelate" in robust and "<th>s3</th>" in robust


def test_report_without_the_test_images_says_why_and_renders_the_rest(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "r.html"
    temp = {"T": 1.7, "ece_before": 0.2, "ece_after": 0.05, "nll_before": 0.7, "nll_after": 0.4,
            "fitted_on": "validation split"}
    rc, stdout, err = run_cli([ckpt_copy(tiny_ckpt, tmp_path, temperature=temp), "--out", out], capsys)
    assert rc == 0 and "wrote" in stdout and err == ""
    text = out.read_text(encoding="utf-8")
    self_contained(text)
    for sid in ("confusion", "per-class"):                                   # from the stored predictions
        assert 'class="absent"' not in section_html(text, sid) and "<table" in section_html(text, sid), sid
    assert "cleanlab flags" in section_html(text, "labels")
    cal = section_html(text, "calibration")                 # before and after the stored temperature
    assert "T = 1.7000" in cal and "0.2000 → 0.0500" in cal and 'class="absent"' not in cal
    for sid in ("errors", "robustness"):
        absent = re.findall(r'<p class="absent">(.*?)</p>', section_html(text, sid), re.S)
        assert len(absent) == 1 and "test images" in absent[0], (sid, absent)
    assert str(tmp_path / "gone") in section_html(text, "errors")             # which folder is missing


def test_class_names_holding_markup_stay_text(tiny_ckpt, tmp_path, capsys):
    ckpt = ckpt_copy(tiny_ckpt, tmp_path, classes=EVIL + ["a & b", "plain"])
    out = tmp_path / "evil.html"
    rc, _, err = run_cli([ckpt, "--out", out], capsys)
    assert rc == 0, err
    text = out.read_text(encoding="utf-8")
    tags = self_contained(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "a &amp; b" in text
    assert all(a.get("src", "").startswith("data:") for t, a in tags.tags if t == "img")
    for evil in EVIL:
        assert evil not in text


@pytest.mark.parametrize("with_pixels", [True, False])
def test_an_imported_checkpoint_without_history_or_predictions(tiny_ckpt, moved_data, tmp_path, capsys,
                                                               with_pixels):
    """As `cnnlib import` writes it: no history, no metrics, no stored predictions. With its test images the
    metrics are computed from them; without, every part but the summary says why in one sentence."""
    ck = load_checkpoint(tiny_ckpt)
    ck.update(history=[], best_epoch=None, metrics={})
    ck.pop("test_predictions", None)
    if not with_pixels:
        ck["data"] = {**ck["data"], "path": str(tmp_path / "gone")}
    path = str(tmp_path / "imported.pt")
    save_checkpoint(ck, path)
    out = tmp_path / "imported.html"
    data = ["--data", moved_data] if with_pixels else []
    rc, _, err = run_cli([path, "--out", out, "--errors", "2", "--no-triage", *data], capsys)
    assert rc == 0, err
    text = out.read_text(encoding="utf-8")
    self_contained(text)
    assert "no training history" in section_html(text, "curves")
    for sid in ("confusion", "per-class", "calibration", "errors", "labels"):
        absent = re.findall(r'<p class="absent">(.*?)</p>', section_html(text, sid), re.S)
        if with_pixels:
            assert "stores no test predictions" not in section_html(text, sid), sid
        else:
            assert len(absent) == 1 and "stores no test predictions" in absent[0], (sid, absent)
    if with_pixels:
        assert "Metrics computed on the test images." in section_html(text, "summary")
        assert "left out (asked for with --no-triage)" in section_html(text, "errors")
        assert "<table" in section_html(text, "confusion")


def test_many_classes_get_the_most_confused_pairs_instead_of_the_matrix():
    from cnnlib.diagnose import report_sections as rs
    from cnnlib.diagnose.evaluate import compute_report
    rng = np.random.default_rng(0)
    k = rs.MATRIX_MAX + 5
    probs = rng.dirichlet(np.ones(k), size=300)
    rep = compute_report(rng.integers(0, k, 300), probs, [f"c<{i}>" for i in range(k)], top=30)
    text = rs.confusion(rep)
    assert f"The full {k} × {k} matrix is left out" in text and 'class="cm' not in text
    assert text.count("<tr>") == len(rep["most_confused"]) + 1 and "c&lt;" in text and "c<" not in text
    small = compute_report(rng.integers(0, 12, 300), rng.dirichlet(np.ones(12), size=300), [str(i) for i in range(12)])
    assert 'class="cm' in rs.confusion(small) and "left out" not in rs.confusion(small)


def test_cli_errors_are_one_sentence(tiny_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "--errors" in capsys.readouterr().out
    cases = [
        ([tmp_path / "nope.pt", "--out", tmp_path / "x.html"], "nope.pt"),
        ([tiny_ckpt, "--out", tmp_path], "is a folder"),
    ]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases.append(([tiny_ckpt, "--out", blocker / "r.html"], "cannot write"))
    cases.append(([tiny_ckpt, "--out", tmp_path / "r.html", "--errors", "-1"], "--errors"))
    for args, word in cases:
        rc, out, err = run_cli(args, capsys)
        assert rc == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert word in err, err
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "r.html").exists()


def test_webpage_helpers_are_the_lessons_and_escape():
    from cnnlib.lesson import build, payload
    assert build.script_json is webpage.script_json and payload.png is webpage.png      # written once
    obj = {"name": "</script><b>&\u2028", "v": [1, 2.5, None]}
    assert json.loads(webpage.script_json(obj)) == obj
    assert "<" not in webpage.script_json(obj) and "&" not in webpage.script_json(obj)
    rng = np.random.default_rng(0)
    for a, want in ((rng.integers(0, 255, (5, 7, 3), dtype=np.uint8), None),
                    (rng.integers(0, 255, (3, 5, 7), dtype=np.uint8), "chw"),
                    (rng.integers(0, 255, (6, 4), dtype=np.uint8), None)):
        back = np.asarray(Image.open(io.BytesIO(base64.b64decode(webpage.png(a)))))
        assert np.array_equal(back, a.transpose(1, 2, 0) if want == "chw" else a)
    a = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    url = webpage.png_data_url(a)
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert url.startswith("data:image/png;base64,") and np.array_equal(back, a)
    assert webpage.esc('<a href="x">\'') == "&lt;a href=&quot;x&quot;&gt;&#x27;"
    doc = webpage.page("<t>", "<p>body</p>", "p{color:red}</style><script>")
    assert "<title>&lt;t&gt;</title>" in doc and "Content-Security-Policy" in doc and "</style><script>" not in doc
    with pytest.raises(ValueError):
        webpage.img("https://example.com/x.png")


@pytest.mark.browser
def test_report_in_chromium_loads_nothing_and_shows_its_images(with_data, tmp_path):
    from playwright.sync_api import sync_playwright
    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.fail(f"Chromium not found at {chromium} (or skip with --no-browser)")
    path = tmp_path / "report.html"
    path.write_text(with_data, encoding="utf-8")
    url = path.as_uri()
    requests, problems = [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = b.new_page(viewport={"width": 1400, "height": 900})

            def route(r):
                if r.request.url == url:
                    r.continue_()
                else:
                    requests.append(r.request.url)
                    r.abort()
            page.route("**/*", route)
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: r.url not in (url,) and not r.url.startswith("data:")
                    and requests.append(r.url))
            page.goto(url, wait_until="load")
            heads = page.locator("h2").all_text_contents()
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "tiny_report_top.png"))
            page.locator("#errors").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "tiny_report_errors.png"))
        finally:
            b.close()
    assert requests == [] and problems == [], (requests, problems)
    assert len(heads) == len(SECTIONS) and "Summary" in heads and "Calibration" in heads
    assert widths and min(widths) > 0
    assert overflow <= 0, f"the page is {overflow} px wider than the window"


def test_dashboard_builder_is_cached_per_checkpoint_and_data(tiny_ckpt, tmp_path, monkeypatch):
    import sys
    dash = str(Path(__file__).resolve().parent.parent / "dashboard")
    if dash not in sys.path:
        sys.path.insert(0, dash)
    import report as dash_report
    from checkpoints import Ctx
    from cnnlib.diagnose import report
    from cnnlib.inference import load_model
    calls = []
    real = report.build_report
    monkeypatch.setattr(report, "build_report", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    dash_report._report.clear()
    ctx = Ctx(f"{tiny_ckpt}@1", "my <model>.pt", load_model(ckpt_copy(tiny_ckpt, tmp_path)), "")
    first = dash_report.report_bytes(ctx, errors=2)
    assert dash_report.report_bytes(ctx, errors=2) == first and len(calls) == 1     # the second from the cache
    text = first.decode("utf-8")
    self_contained(text)
    assert "CNN Lens report: my &lt;model&gt;.pt" in text
    other = Ctx(f"{tiny_ckpt}@1", "my <model>.pt", ctx.model, str(tmp_path / "elsewhere"))
    dash_report.report_bytes(other, errors=2)
    assert len(calls) == 2 and calls[1][0] == str(tmp_path / "elsewhere")          # another Data folder: built
    assert dash_report.file_name(ctx) == "my__model_report.html"


def test_pictures_are_enlarged_when_small_and_shrunk_when_large():
    from cnnlib.diagnose.report import SIDE, _picture
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    big = _picture(small)
    assert big.shape == (96, 96, 3) and np.array_equal(big[::3, ::3], small.transpose(1, 2, 0))
    large = _picture(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    assert max(large.shape[:2]) <= SIDE * 4 // 3 and large.shape[2] == 3
