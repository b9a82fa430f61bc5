"""The dashboard (issue 4) with streamlit.testing.v1.AppTest: every page against small checkpoints built from
the tiny_ckpt fixture (see `lens_checkpoints` in conftest.py): no exception, the key elements present, the
main widgets change what is shown, bad inputs end in one clear sentence, caching holds."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

DASH = Path(__file__).resolve().parent.parent / "dashboard"
if str(DASH) not in sys.path:
    sys.path.insert(0, str(DASH))
import lens  # noqa: E402  (the module the pages import: same object, so its counters are visible here)
import ui  # noqa: E402

TIMEOUT = 120
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")


@pytest.fixture(autouse=True)
def _env(monkeypatch, lens_checkpoints):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", lens_checkpoints["dir"])
    monkeypatch.setenv("CNNLENS_PREFETCH", "0")          # no background warm-up: deterministic counters


def app(page: str | None = None, errors: bool = False) -> AppTest:
    """Home, then (optionally) a page, as one browser session would open them."""
    at = AppTest.from_file(str(DASH / "Home.py"), default_timeout=TIMEOUT).run()
    ok(at, errors)
    if page:
        at.switch_page(f"pages/{page}.py").run()
        ok(at, errors)
    return at


def ok(at: AppTest, errors: bool = False) -> None:
    assert not at.exception, [(e.message, e.stack_trace[-6:]) for e in at.exception]
    if not errors:
        assert not at.error, [e.value for e in at.error]


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def block(at: AppTest, key: str) -> Block | None:
    for root in (at.main, at.sidebar):
        for n in walk(root):
            if isinstance(n, Block) and n.key == key:
                return n
    return None


def images_in(node) -> list:
    """(url, caption) of every image under a node (none under None)."""
    out = []
    for n in walk(node) if node is not None else ():
        if getattr(n, "type", None) == "image":
            out += list(zip(n.value, n.captions))
    return out


def widget(at: AppTest, key: str):
    for root in (at.main, at.sidebar):
        for n in walk(root):
            if getattr(n, "key", None) == key and hasattr(n, "set_value"):
                return n
    raise AssertionError(f"no widget with key {key!r}")


def chart(at: AppTest, key: str) -> dict:
    for n in walk(at.main):
        if getattr(n, "type", None) == "plotly_chart" and f"-{key}" in n.proto.id:
            return json.loads(n.proto.spec)
    raise AssertionError(f"no plotly chart {key!r}")


def arr(value) -> np.ndarray:
    """A Plotly JSON array: a plain list, or plotly's typed-array form {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        import base64
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return a.reshape([int(v) for v in str(shape).split(",")]) if shape else a
    return np.asarray(value)


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def png(size=(20, 14), mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares an enormous size (a decompression bomb) without the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# -----------------------------------------------------------------------------
# home, the picker, persistence

def test_home_without_a_checkpoint_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(tmp_path))
    at = app()
    assert lens.TRAIN_COMMAND == ("python -m cnnlib train --data cifar10 --model simple_cnn --epochs 10 "
                                  "--out checkpoints/simple_cnn.pt")
    assert [c.value for c in at.code] == [lens.TRAIN_COMMAND]
    assert "No checkpoint yet" in texts(at)
    at.switch_page("pages/2_Evaluation.py").run()
    ok(at)
    assert [c.value for c in at.code] == [lens.TRAIN_COMMAND]


def test_home_summary_card_and_architecture(lens_checkpoints):
    at = app()
    picker = widget(at, "lens_ckpt")
    assert picker.options[:2] == [lens.choice_label(lens_checkpoints["wrong"]),
                                  lens.choice_label(lens_checkpoints["tiny"])]          # newest first
    assert picker.value == lens_checkpoints["wrong"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model"] == "simple_cnn"
    assert metrics["Test accuracy"] == ui.pct(lens_checkpoints["accuracy"])
    assert metrics["Epochs"] == "3"
    assert set(metrics) >= {"Dataset", "Parameters", "Best validation accuracy", "Training time", "Trained on"}
    table = at.dataframe[0].value
    assert list(table["layer"])[:4] == ["conv1", "bn1", "relu1", "pool1"]
    assert table["receptive field"].iloc[0] == "3×3 px"
    assert [b.label for b in at.get("download_button")] == ["Download CSV"]
    assert arr(chart(at, "home_rf")["data"][0]["y"])[0] == 3
    assert at.get("page_link")


def test_checkpoint_choice_and_widgets_persist_across_pages(lens_checkpoints):
    at = app()
    widget(at, "lens_ckpt").set_value(lens_checkpoints["tiny"]).run()
    ok(at)
    assert at.metric[0].value == "simple_cnn" and "tiny.pt" in texts(at)
    at.switch_page("pages/2_Evaluation.py").run()
    ok(at)
    assert widget(at, "lens_ckpt").value == lens_checkpoints["tiny"]
    assert at.metric[0].value == "100.0%"                       # tiny.pt classifies every test image right
    widget(at, "eval_norm").set_value("Normalized by row").run()
    ok(at)
    z = arr(chart(at, "eval_cm")["data"][0]["z"])
    assert np.allclose(z.sum(1), 1.0)
    at.switch_page("pages/3_Errors.py").run()
    ok(at)
    at.switch_page("pages/2_Evaluation.py").run()
    ok(at)
    assert widget(at, "eval_norm").value == "Normalized by row"
    assert widget(at, "lens_ckpt").value == lens_checkpoints["tiny"]


# -----------------------------------------------------------------------------
# one test per page

def test_training_curves_and_run_comparison(lens_checkpoints):
    at = app("1_Training")
    spec = chart(at, "train_curves")
    names = {t.get("name") for t in spec["data"]}
    assert {"wrong.pt · train", "wrong.pt · validation"} <= names
    assert any(t.get("marker", {}).get("symbol") == "star" for t in spec["data"])       # best epoch marked
    # by default every other run in the folder on the same classes (tiny.pt) is overlaid
    assert len(at.dataframe[0].value) == 2
    assert lens_checkpoints["tiny"] in widget(at, "train_compare").value
    widget(at, "train_compare").set_value([lens_checkpoints["tiny"]]).run()
    ok(at)
    names = {t.get("name") for t in chart(at, "train_curves")["data"]}
    assert {"wrong.pt · train", "tiny.pt · train"} <= names
    bars = chart(at, "train_class_bars")
    assert [b["name"] for b in bars["data"]] == ["wrong.pt", "tiny.pt"]
    per_class = at.dataframe[-1].value
    assert list(per_class.columns) == ["class", "wrong.pt", "tiny.pt"]
    assert list(per_class["class"]) == lens_checkpoints["classes"]
    assert (per_class["tiny.pt"] == 1.0).all()


def test_evaluation_metrics_matrix_cell_images_and_calibration(lens_checkpoints):
    at = app("2_Evaluation")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1 accuracy"] == ui.pct(lens_checkpoints["accuracy"])
    assert "Top-4 accuracy" in metrics and metrics["Test images"] == "32"
    spec = chart(at, "eval_cm")
    cm = arr(spec["data"][0]["z"])
    assert cm.sum() == 32 and spec["data"][1]["type"] == "scatter"       # the clickable cell layer
    # choose a cell with the fallback selectboxes: its images appear
    c = lens_checkpoints["best_class"]
    name = lens_checkpoints["classes"][c]
    widget(at, "eval_true").set_value(name)
    widget(at, "eval_pred").set_value(name).run()
    ok(at)
    assert f"{cm[c, c]} test images of **{name}** predicted as **{name}** (correct)" in texts(at)
    assert len(images_in(block(at, "eval_cell_grid"))) == cm[c, c]
    per_class = at.dataframe[0].value
    assert list(per_class["class"])[:4] == lens_checkpoints["classes"]
    assert chart(at, "eval_reliability")["data"][0]["type"] == "bar"
    assert "Calibration (ECE" in texts(at)


def test_errors_gallery_filters_and_explanation_caching(lens_checkpoints):
    at = app("3_Errors")
    n_wrong = round(32 * (1 - lens_checkpoints["accuracy"]))
    assert f"**{n_wrong}** misclassified images match" in texts(at)
    gallery = images_in(block(at, "err_gallery"))
    assert len(gallery) == min(n_wrong, 24)
    buttons = [b for b in at.button if b.label == "Explain"]
    assert len(buttons) == len(gallery)
    # filter by true class: the matches of all classes add up to every error, each one a mistake of that class
    total = 0
    for t_name in lens_checkpoints["classes"]:
        widget(at, "err_true").set_value(t_name).run()
        ok(at)
        count = int(re.search(r"\*\*(\d+)\*\* misclassified images match", texts(at)).group(1))
        shown = images_in(block(at, "err_gallery"))
        assert len(shown) == min(count, 24)
        assert all(f"(true: {t_name})" in m.value for m in at.markdown if "✗ (true:" in m.value)
        total += count
    assert total == n_wrong
    widget(at, "err_true").set_value("any class")
    widget(at, "err_sort").set_value("loss").run()
    ok(at)
    # explain one image: predicted vs true class side by side
    before = lens.COMPUTE_COUNTS["attributions"]
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    panel = block(at, "err_explain_panel")
    caps = [c for _, c in images_in(panel)]
    assert len(caps) == 3 and "predicted" in caps[1] and "true class" in caps[2]
    assert lens.COMPUTE_COUNTS["attributions"] == before + 1
    widget(at, "err_alpha").set_value(0.8).run()                        # unrelated to the attribution
    widget(at, "err_sort").set_value("confidence").run()
    ok(at)
    assert lens.COMPUTE_COUNTS["attributions"] == before + 1
    widget(at, "err_method").set_value("gradcam").run()
    ok(at)
    assert lens.COMPUTE_COUNTS["attributions"] == before + 2
    at.button(key="err_close").click().run()
    ok(at)
    assert block(at, "err_explain_panel") is None


def test_filters_epoch_slider_scales_and_deeper_layers():
    at = app("4_Filters")
    epoch = widget(at, "filt_epoch")
    assert list(epoch.options) == ["1", "2", "3"]
    first = images_in(block(at, "filt_first"))
    assert len(first) == 1 and "32 kernels of 3×3" in first[0][1]
    epoch.set_value(3).run()
    ok(at)
    later = images_in(block(at, "filt_first"))
    assert later[0][0] != first[0][0] and "epoch 3" in later[0][1]          # a different picture
    widget(at, "filt_scale").set_value("shared").run()
    ok(at)
    assert images_in(block(at, "filt_first"))[0][0] != later[0][0]
    deep = images_in(block(at, "filt_deep"))
    assert "conv2" in deep[0][1] and "16 of 64 output filters" in deep[0][1]
    widget(at, "filt_nout").set_value(4).run()
    ok(at)
    assert "4 of 64 output filters" in images_in(block(at, "filt_deep"))[0][1]


def test_feature_maps_layer_scale_and_upload():
    at = app("5_Feature_maps")
    grid = images_in(block(at, "fm_grid"))
    assert "relu1: the first 32 of 32 channels" in grid[0][1]
    widget(at, "fm_layer").set_value("conv2").run()
    ok(at)
    assert "conv2: the first 32 of 64 channels, each 8×8" in images_in(block(at, "fm_grid"))[0][1]
    url = images_in(block(at, "fm_grid"))[0][0]
    widget(at, "fm_scale").set_value("shared").run()
    ok(at)
    assert images_in(block(at, "fm_grid"))[0][0] != url
    widget(at, "fm_pos").set_value(5).run()
    ok(at)
    assert any("test image #" in c for _, c in images_in(at.main))
    widget(at, "fm_src").set_value("Upload an image").run()
    ok(at)
    assert "Upload an image to see" in texts(at)
    at.file_uploader(key="fm_upload").set_value(("cat.png", png((50, 30)), "image/png")).run()
    ok(at)
    assert any("cat.png" in c for _, c in images_in(at.main))
    assert images_in(block(at, "fm_grid"))


def test_saliency_every_method_targets_and_caching():
    at = app("6_Saliency")
    assert "Prediction:" in texts(at)
    assert chart(at, "sal_topk")["data"][0]["orientation"] == "h"
    widget(at, "sal_src").set_value("Upload an image").run()
    at.file_uploader(key="sal_upload").set_value(("photo.png", png((64, 48), "RGBA"), "image/png")).run()
    ok(at)
    for method in lens.attribution_methods():
        widget(at, "sal_method").set_value(method).run()
        ok(at)
        caps = [c for _, c in images_in(block(at, "sal_result"))]
        assert len(caps) == 2 and caps[0].startswith("photo.png"), (method, caps)
    before = lens.COMPUTE_COUNTS["attributions"]
    widget(at, "sal_alpha").set_value(0.9).run()
    widget(at, "sal_bare").set_value(True).run()
    ok(at)
    assert lens.COMPUTE_COUNTS["attributions"] == before                    # opacity: no recomputation
    assert len(images_in(block(at, "sal_result"))) == 3
    widget(at, "sal_targets").set_value([0, 1])
    widget(at, "sal_scale").set_value("shared").run()
    ok(at)
    assert lens.COMPUTE_COUNTS["attributions"] == before + 1
    assert len(images_in(block(at, "sal_result"))) == 5
    assert any(b.label == "Download PNG" for b in at.get("download_button"))


def test_embeddings_chart():
    at = app("7_Embeddings")
    spec = chart(at, "emb_chart")
    assert spec["data"] and all(t["type"] == "scatter" for t in spec["data"])      # SVG below 3000 points
    n_points = sum(len(arr(t["x"])) for t in spec["data"])
    assert n_points == 32
    assert "32 of 32 test images shown" in texts(at)
    widget(at, "emb_wrong").set_value(True).run()
    ok(at)
    assert sum(len(arr(t["x"])) for t in chart(at, "emb_chart")["data"]) < 32


# -----------------------------------------------------------------------------
# bad inputs and missing data

@pytest.mark.parametrize("page", ["6_Saliency", "5_Feature_maps"])
def test_bad_image_uploads_give_one_sentence(page):
    prefix = {"6_Saliency": "sal", "5_Feature_maps": "fm"}[page]
    at = app(page)
    widget(at, f"{prefix}_src").set_value("Upload an image").run()
    good = png((40, 40))
    bad = {"notes.png": b"this is not an image at all", "cut.png": good[: len(good) // 2],
           "bomb.png": png_header_only(30000, 30000), "empty.png": b"", "wide.png": png_header_only(20000, 3)}
    for name, blob in bad.items():
        at.file_uploader(key=f"{prefix}_upload").set_value((name, blob, "image/png")).run()
        ok(at, errors=True)
        assert len(at.error) == 1 and at.error[0].value.startswith(f"{name} cannot be used:"), (name, at.error)
    rng = np.random.default_rng(1)
    odd = {"gray16.png": encoded(Image.fromarray((rng.integers(0, 65535, (24, 24))).astype(np.uint16)), "PNG"),
           "cmyk.jpg": encoded(Image.new("CMYK", (30, 20), (10, 200, 30, 0)), "JPEG"),
           "palette.png": encoded(Image.new("P", (16, 16), 3), "PNG", transparency=3),
           "la.png": encoded(Image.new("LA", (16, 16), (128, 100)), "PNG"),
           "bits.bmp": encoded(Image.new("1", (16, 16), 1), "BMP"),
           "anim.gif": encoded(Image.new("P", (16, 16), 1), "GIF", save_all=True,
                               append_images=[Image.new("P", (16, 16), 2)])}
    for name, blob in odd.items():
        at.file_uploader(key=f"{prefix}_upload").set_value((name, blob, "image/png")).run()
        ok(at)
        assert any(name in c for _, c in images_in(at.main)), name


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_bad_checkpoints_give_one_sentence(tmp_path, monkeypatch, lens_checkpoints):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "garbage.pt").write_bytes(b"definitely not a checkpoint")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = app(errors=True)
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot open garbage.pt")
    for page in ("2_Evaluation", "6_Saliency"):
        at.switch_page(f"pages/{page}.py").run()
        ok(at, errors=True)
        assert at.error and at.error[0].value.startswith("Cannot open garbage.pt")
    evil = folder / "evil.pt"
    torch.save({"x": Evil()}, evil)                       # a pickle that would run a command when loaded
    at = app(errors=True)
    assert widget(at, "lens_ckpt").value == str(evil)     # the newest file
    assert len(at.error) == 1 and "refused" in at.error[0].value
    # readable, but its stored predictions do not fit its classes: the evaluation pages say so in one sentence
    ckpt = torch.load(lens_checkpoints["tiny"], weights_only=True)
    ckpt["test_predictions"]["probs"] = ckpt["test_predictions"]["probs"][:, :3]
    ckpt["created"] = "2099-01-01T00:00:00+00:00"         # the most recently trained run is listed first
    torch.save(ckpt, folder / "odd.pt")
    at = app(errors=True)
    assert widget(at, "lens_ckpt").value == str(folder / "odd.pt") and not at.error
    for page in ("2_Evaluation", "3_Errors"):
        at.switch_page(f"pages/{page}.py").run()
        ok(at, errors=True)
        assert len(at.error) == 1 and "stored test predictions are inconsistent" in at.error[0].value, at.error
    # uploads: a broken one is refused with a sentence, a good one becomes the current checkpoint everywhere
    uploader = at.sidebar.file_uploader(key="lens_upload")
    uploader.set_value(("broken.pt", b"\x00" * 100, "application/octet-stream")).run()
    ok(at, errors=True)
    assert any(e.value.startswith("The uploaded file broken.pt cannot be used") for e in at.error)
    blob = Path(lens_checkpoints["tiny"]).read_bytes()
    at.sidebar.file_uploader(key="lens_upload").set_value(("mine.pt", blob, "application/octet-stream")).run()
    ok(at)
    assert widget(at, "lens_ckpt").value.startswith("upload:")
    assert lens.choice_label(widget(at, "lens_ckpt").value) == "mine.pt (uploaded)"
    at.switch_page("pages/2_Evaluation.py").run()
    ok(at)
    assert widget(at, "lens_ckpt").value.startswith("upload:") and at.metric[0].value == "100.0%"


def test_without_the_dataset_everything_else_works(lens_checkpoints, monkeypatch):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", lens_checkpoints["nodata_dir"])
    at = app("1_Training")
    assert chart(at, "train_curves")["data"]
    at.switch_page("pages/2_Evaluation.py").run()
    ok(at)
    assert at.metric[0].value == ui.pct(lens_checkpoints["accuracy"])           # from the stored predictions
    assert chart(at, "eval_cm") and chart(at, "eval_reliability")
    assert "needs the test images" in texts(at) and "no-such-dataset" in texts(at)
    at.switch_page("pages/3_Errors.py").run()
    ok(at)
    assert "The image gallery needs the test images" in texts(at)
    assert len(at.dataframe[0].value) >= 1                                       # the errors as a table
    at.switch_page("pages/4_Filters.py").run()
    ok(at)
    assert images_in(block(at, "filt_first"))
    for page, prefix in (("5_Feature_maps", "fm"), ("6_Saliency", "sal")):
        at.switch_page(f"pages/{page}.py").run()
        ok(at)
        assert list(widget(at, f"{prefix}_src").options) == ["Upload an image"]
        at.file_uploader(key=f"{prefix}_upload").set_value(("x.png", png(), "image/png")).run()
        ok(at)
        assert images_in(block(at, "fm_grid" if prefix == "fm" else "sal_result"))
    at.switch_page("pages/7_Embeddings.py").run()
    ok(at)
    assert "The embedding map needs the test images" in texts(at)
    # pointing the sidebar's data folder at the images brings the pixel pages back
    widget(at, "lens_data").set_value(lens_checkpoints["data"]).run()
    ok(at)
    assert chart(at, "emb_chart")["data"]


def test_shared_model_attributions_from_many_threads(lens_checkpoints):
    """Several sessions share one cached model: attributions computed at once equal those computed alone."""
    import warnings
    warnings.simplefilter("ignore")
    ctx = lens.open_choice(lens_checkpoints["wrong"])
    x = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    methods = ["saliency", "integrated_gradients", "gradcam", "guided_gradcam", "occlusion", "smoothgrad"]
    alone = {m: lens._attributions.__wrapped__("k", "img", m, (1,), "relu2" if "gradcam" in m else None,
                                               "image", (), ctx.model, x)[0]["heatmap"] for m in methods}
    out, errors = {}, []

    def work(m):
        try:
            out[m] = lens._attributions.__wrapped__("k", "img", m, (1,), "relu2" if "gradcam" in m else None,
                                                    "image", (), ctx.model, x)[0]["heatmap"]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in methods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for m in methods:
        np.testing.assert_allclose(out[m], alone[m], atol=1e-5, err_msg=m)
    assert ctx.model.training is False and not ctx.model._forward_hooks
