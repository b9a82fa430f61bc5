"""Every dashboard page (dashboard/views/*.py) with AppTest through the st.navigation frame: the key elements,
the main widgets change what is shown, caching holds (cache misses counted by wrapping the cnnlib function the
cached loader calls), the defects found walking the dashboard stay fixed, and an imported model (no history)
works everywhere."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from test_dashboard_support import (_env, app, arr, block, chart, encoded, go, has_widget,  # noqa: F401
                                    images_in, imported_ckpt, misses, ok, one_true_sentence, png,
                                    png_header_only, texts, walk, widget)

import ui  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")


# ----------------------------------------------------------------------------- Training

def test_training_curves_and_run_comparison(lens_checkpoints):
    at = app("Training")
    spec = chart(at, "train_curves")
    names = {t.get("name") for t in spec["data"]}
    assert {"wrong.pt · train", "wrong.pt · validation"} <= names
    assert any(t.get("marker", {}).get("symbol") == "star" for t in spec["data"])       # best epoch marked
    assert len(at.dataframe[0].value) == 2                     # tiny.pt (same classes) overlaid by default
    assert lens_checkpoints["tiny"] in widget(at, "train_compare").value
    runs = at.dataframe[0].value
    assert list(runs["test accuracy"]) == [ui.pct(lens_checkpoints["accuracy"]), "100.0%"]   # checkpoint_summary
    bars = chart(at, "train_class_bars")
    assert [b["name"] for b in bars["data"]] == ["wrong.pt", "tiny.pt"]
    per_class = at.dataframe[-1].value
    assert list(per_class.columns) == ["class", "wrong.pt", "tiny.pt"]
    assert list(per_class["class"]) == lens_checkpoints["classes"]
    assert (per_class["tiny.pt"] == 100.0).all()
    widget(at, "train_compare").set_value([]).run()
    ok(at)
    assert {t.get("name") for t in chart(at, "train_curves")["data"]} & {"tiny.pt · train"} == set()


def test_learning_rate_axis_is_logarithmic():
    """Defect: a 3e-3 schedule was a flat line next to a 0.2 one."""
    layout = chart(app("Training"), "train_curves")["layout"]
    assert layout["yaxis3"]["type"] == "log"


def test_many_epochs_get_readable_ticks(lens_checkpoints, tmp_path, monkeypatch):
    """Issue 18 (10): 20 epochs labelled one by one in a third of the column ran together."""
    import torch
    ckpt = torch.load(lens_checkpoints["tiny"], weights_only=True)
    row = ckpt["history"][-1]
    ckpt["history"] = [{**row, "epoch": e} for e in range(1, 21)]
    torch.save(ckpt, tmp_path / "long.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(tmp_path))
    layout = chart(app("Training"), "train_curves")["layout"]
    assert 20 / layout["xaxis"]["dtick"] <= 10                  # at most 10 labels per panel
    assert ui.epoch_ticks(3, 260)["dtick"] == 1                 # a short run keeps every epoch


def test_toolbar_leaves_room_for_titles():
    """Issue 18 (10): Plotly's toolbar sat on the Embeddings legend title and the Training subplot titles."""
    for page, key in (("Training", "train_curves"), ("Embeddings", "emb_chart")):
        layout = chart(app(page), key)["layout"]
        titles_on_top = any(a.get("yref") == "paper" and a.get("y", 0) >= 1 for a in layout.get("annotations", []))
        assert layout["margin"]["t"] >= ui.MODEBAR_PX + (30 if titles_on_top else 10), (page, layout["margin"])


# ----------------------------------------------------------------------------- Evaluation

def test_evaluation_metrics_matrix_cell_images_and_calibration(lens_checkpoints):
    at = app("Evaluation")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1 accuracy"] == ui.pct(lens_checkpoints["accuracy"])
    assert "Top-4 accuracy" in metrics and metrics["Test images"] == "32"
    spec = chart(at, "eval_cm")
    cm = arr(spec["data"][0]["z"])
    assert cm.sum() == 32 and spec["data"][1]["type"] == "scatter"       # the clickable cell layer
    c = lens_checkpoints["best_class"]
    name = lens_checkpoints["classes"][c]
    widget(at, "eval_true").set_value(name)
    widget(at, "eval_pred").set_value(name).run()
    ok(at)
    assert f"{cm[c, c]} test images of **{name}** predicted as **{name}** (correct)" in texts(at)
    assert len(images_in(block(at, "eval_cell_grid"))) == cm[c, c]
    assert list(at.dataframe[0].value["class"])[:4] == lens_checkpoints["classes"]
    assert chart(at, "eval_reliability")["data"][0]["type"] == "bar"
    assert "Calibration (ECE" in texts(at)


def test_evaluation_writes_the_report_on_request(lens_checkpoints):
    """Share these results: nothing is built until asked; then one self-contained HTML file to download."""
    at = app("Evaluation")
    assert not [b for b in at.get("download_button") if b.label == "Download the report"]
    at.button(key="eval_report_build").click().run()
    ok(at)
    (button,) = [b for b in at.get("download_button") if b.label == "Download the report"]
    assert any("KiB, self-contained" in c.value for c in at.caption)


def test_evaluation_preselects_the_reports_most_confused_cell(lens_checkpoints, monkeypatch):
    """The preselected cell is report["most_confused"][0] (cnnlib's), not a re-computation on the page."""
    from cnnlib.diagnose import evaluate
    real = evaluate.compute_report

    def report(*a, **kw):
        out = real(*a, **kw)
        out["most_confused"] = [{"true": 2, "pred": 3, "count": 1}] + out["most_confused"]
        return out
    monkeypatch.setattr(evaluate, "compute_report", report)
    import streamlit as st
    st.cache_data.clear()                                                  # no report computed by earlier tests
    at = app()
    widget(at, "side_ckpt").set_value(lens_checkpoints["tiny"]).run()
    go(at, "Evaluation")
    classes = lens_checkpoints["classes"]
    assert (widget(at, "eval_true").value, widget(at, "eval_pred").value) == (classes[2], classes[3])


def test_percentages_have_one_format():
    """Defect: "33%" beside "54.2%". One helper, one decimal, everywhere."""
    assert ui.pct(0.33) == "33.0%" and ui.pct(0.5423) == "54.2%" and ui.pct(None) == "—"
    at = app("Errors")
    found = re.findall(r"\d+(?:\.\d+)?%", texts(at) + " ".join(c for _, c in images_in(at.main)))
    assert found and all(re.fullmatch(r"\d+\.\d%", f) for f in found), found


# ----------------------------------------------------------------------------- Errors

def test_errors_gallery_filters_and_explanation_caching(lens_checkpoints, misses):
    at = app("Errors")
    n_wrong = round(32 * (1 - lens_checkpoints["accuracy"]))
    assert f"**{n_wrong}** misclassified images match" in texts(at)
    gallery = images_in(block(at, "err_gallery"))
    assert len(gallery) == min(n_wrong, 24)
    assert len([b for b in at.button if b.label == "Explain"]) == len(gallery)
    total = 0
    for t_name in lens_checkpoints["classes"]:
        widget(at, "err_true").set_value(t_name).run()
        ok(at)
        count = int(re.search(r"\*\*(\d+)\*\* misclassified images match", texts(at)).group(1))
        assert len(images_in(block(at, "err_gallery"))) == min(count, 24)
        assert all(f"(true: {t_name})" in m.value for m in at.markdown if "✗ (true:" in m.value)
        total += count
    assert total == n_wrong
    widget(at, "err_true").set_value("any class")
    widget(at, "err_sort").set_value("loss").run()
    ok(at)
    before = misses["attribute_many"]
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    neighbours = images_in(block(at, "err_neighbours"))                 # the nearest training images, below
    caps = [c for _, c in images_in(block(at, "err_explain_panel"))][:-len(neighbours)]
    assert len(neighbours) == 9
    assert len(caps) == 3 and "predicted" in caps[1] and "true class" in caps[2]
    assert misses["attribute_many"] == before + 1
    widget(at, "err_alpha").set_value(0.8).run()                        # unrelated to the attribution
    widget(at, "err_sort").set_value("confidence").run()
    ok(at)
    assert misses["attribute_many"] == before + 1
    widget(at, "err_method").set_value("gradcam").run()
    ok(at)
    assert misses["attribute_many"] == before + 2
    at.button(key="err_close").click().run()
    ok(at)
    assert block(at, "err_explain_panel") is None


def _gallery_rows(at):
    """The gallery's rows in order: per row, the test indices of its cells, and what follows each row."""
    gallery = block(at, "err_gallery")
    out = []
    for child in gallery.children.values():
        keys = [n.key for n in walk(child) if getattr(n, "key", None) and str(n.key).startswith("err_cell_")]
        panel = any(getattr(n, "key", None) == "err_explain_panel" for n in walk(child))
        out.append((keys, panel))
    return out


def test_explanation_appears_right_under_the_pressed_images_row(tmp_path, monkeypatch, lens_checkpoints):
    """Defect: Explain on a 4th-row image drew the panel above the gallery, far out of view."""
    at = app("Errors")
    widget(at, "err_limit").set_value(6).run()                  # rows of 6: several rows with few errors too
    ok(at)
    buttons = [b for b in at.button if b.label == "Explain"]
    last = buttons[-1]
    last.click().run()
    ok(at)
    rows = _gallery_rows(at)
    pressed = f"err_cell_{last.key.rsplit('_', 1)[1]}"
    row_of = next(i for i, (keys, _) in enumerate(rows) if pressed in keys)
    assert rows[row_of + 1][1], rows                           # the panel is the element right after that row
    assert block(at, "err_explain_panel") is not None
    main_keys = [n.key for n in walk(at.main) if getattr(n, "key", None) in ("err_explain_panel", "err_gallery")]
    assert main_keys.index("err_gallery") < main_keys.index("err_explain_panel")   # never above the gallery


def test_every_gallery_cell_has_the_same_structure():
    """Defect: Explain buttons out of line under captions of different lengths: every cell is image, a
    fixed-height caption box, the button."""
    at = app("Errors")
    cells = [n for n in walk(block(at, "err_gallery")) if str(getattr(n, "key", "")).startswith("err_cell_")]
    assert cells
    heights = set()
    for cell in cells:
        kinds = [getattr(c, "type", type(c).__name__) for c in cell.children.values()]
        assert kinds[0] == "image" and kinds[-1] == "button", kinds
        box = list(cell.children.values())[1]
        heights.add(box.proto.height_config.pixel_height if box.proto.HasField("height_config") else None)
    assert len(heights) == 1 and None not in heights, heights


# ----------------------------------------------------------------------------- Filters

def test_filters_epoch_zero_change_view_and_deeper_layers():
    at = app("Filters")
    epoch = widget(at, "filt_epoch")
    assert list(epoch.options) == ["0 (random start)", "1", "2", "3"]       # epoch 0: the random initialisation
    first = images_in(block(at, "filt_first"))
    assert len(first) == 1 and "32 kernels of 3×3" in first[0][1]
    epoch.set_value(0).run()
    ok(at)
    start = images_in(block(at, "filt_first"))
    assert "random initialisation" in start[0][1] and start[0][0] != first[0][0]
    epoch = widget(at, "filt_epoch")
    epoch.set_value(3).run()
    ok(at)
    later = images_in(block(at, "filt_first"))
    assert later[0][0] != start[0][0] and "epoch 3" in later[0][1]
    widget(at, "filt_view").set_value("change").run()
    ok(at)
    change = images_in(block(at, "filt_first"))
    assert "minus epoch 0" in change[0][1] and change[0][0] != later[0][0]
    assert not has_widget(at, "filt_scale")                     # one shared symmetric scale, no choice
    widget(at, "filt_view").set_value("kernels").run()
    widget(at, "filt_scale").set_value("shared").run()
    ok(at)
    assert images_in(block(at, "filt_first"))[0][0] != later[0][0]
    deep = images_in(block(at, "filt_deep"))
    assert "conv2" in deep[0][1] and "16 of 64 output filters" in deep[0][1]
    widget(at, "filt_nout").set_value(4).run()
    ok(at)
    assert "4 of 64 output filters" in images_in(block(at, "filt_deep"))[0][1]


def test_change_since_initialisation_is_symmetric_and_zero_at_epoch_zero():
    import pictures
    w0 = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    tiles, vmax = pictures.change_tiles(w0, w0)
    assert np.allclose(tiles, 0.5)
    w1 = w0.copy()
    w1[0, 0, 0, 0] += 2.0
    w1[1, 0, 0, 0] -= 1.0
    tiles, vmax = pictures.change_tiles(w1, w0)
    assert vmax == pytest.approx(2.0) and tiles.max() == pytest.approx(1.0) and tiles.min() == pytest.approx(0.25)


# ----------------------------------------------------------------------------- Feature maps

def test_feature_maps_layer_scale_upload_and_tile_size():
    at = app("Feature maps")
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


def test_an_upload_of_another_shape_shows_what_the_model_sees(lens_checkpoints):
    """Issue 18 (10): a 1000 x 700 upload was squeezed to the model's square input without saying so."""
    import torch
    _, h, w = torch.load(lens_checkpoints["wrong"], weights_only=True)["input_shape"]
    at = app("Feature maps")
    widget(at, "fm_src").set_value("Upload an image").run()
    at.file_uploader(key="fm_upload").set_value(("wide.png", png((100, 70)), "image/png")).run()
    ok(at)
    view = block(at, "fm_model_view")
    assert view is not None and len(images_in(view)) == 2           # the upload and the model's input
    sentence = [c.value.replace("\u00a0", " ") for c in walk(view) if getattr(c, "type", None) == "caption"]
    assert sentence == [f"What the model sees: your 100 × 70 image squeezed to {w} × {h} (its proportions change)."]
    at.file_uploader(key="fm_upload").set_value(("fits.png", png((w, h)), "image/png")).run()
    ok(at)
    assert block(at, "fm_model_view") is None                       # nothing to explain


def test_feature_map_tiles_fill_the_column():  # noqa: D103
    """Defect: tiles at 64 px left half the column empty: the grid is built about as wide as its column."""
    import pictures
    for tile, ncols in ((16, 8), (8, 8), (4, 8), (2, 3)):
        f = pictures.fit_factor(tile, ncols, 880)
        width = ncols * tile * f + 2 * (ncols - 1)
        assert 880 * 0.8 <= width <= 880, (tile, ncols, width)


# ----------------------------------------------------------------------------- Saliency

def test_an_upload_is_still_there_after_another_page():
    """Streamlit drops an uploader's file when the user leaves the page; coming back to Saliency must show the
    same upload (the Upload choice is remembered, so an empty uploader would be a dead end), and removing the
    file forgets it."""
    at = app("Saliency")
    widget(at, "sal_src").set_value("Upload an image").run()
    at.file_uploader(key="sal_upload").set_value(("photo.png", png((64, 48)), "image/png")).run()
    ok(at)
    go(at, "Evaluation")
    go(at, "Saliency")
    assert any("photo.png, which you uploaded earlier" in c.value for c in at.caption), [c.value for c in at.caption]
    caps = [c for _, c in images_in(block(at, "sal_result"))]
    assert caps and caps[0].startswith("photo.png"), caps
    at.button(key="sal_forget").click().run()
    ok(at)
    assert "Upload an image to see what the model makes of it." in [i.value for i in at.info]


def test_saliency_every_method_targets_and_caching(misses):
    at = app("Saliency")
    assert "Prediction:" in texts(at)
    assert chart(at, "sal_topk")["data"][0]["orientation"] == "h"
    widget(at, "sal_src").set_value("Upload an image").run()
    at.file_uploader(key="sal_upload").set_value(("photo.png", png((64, 48), "RGBA"), "image/png")).run()
    ok(at)
    import compute
    for method in compute.attribution_methods():
        widget(at, "sal_method").set_value(method).run()
        ok(at)
        caps = [c for _, c in images_in(block(at, "sal_result"))]
        assert len(caps) == 2 and caps[0].startswith("photo.png"), (method, caps)
    before = misses["attribute_many"]
    widget(at, "sal_alpha").set_value(0.9).run()
    widget(at, "sal_bare").set_value(True).run()
    ok(at)
    assert misses["attribute_many"] == before                    # opacity: no recomputation
    assert len(images_in(block(at, "sal_result"))) == 3
    sal = widget(at, "sal_targets")                              # the prediction + one more class (issue 18.7)
    sal.set_value([v for v in range(4) if sal.format_func(v) in sal.options][:1])
    widget(at, "sal_scale").set_value("shared").run()
    ok(at)
    assert misses["attribute_many"] == before + 1
    assert len(images_in(block(at, "sal_result"))) == 5
    assert any(b.label == "Download PNG" for b in at.get("download_button"))


def test_saliency_options_start_at_cnnlibs_defaults(monkeypatch):
    """The option widgets read cnnlib.explain.attribution.option_defaults instead of restating 48 / 25 / 0.15."""
    from cnnlib.explain import attribution
    real = attribution.option_defaults
    mine = {"integrated_gradients": {"n_steps": 36, "baseline": "white"},
            "smoothgrad": {"nt_samples": 15, "stdev": 0.07}, "occlusion": {"window": 3, "baseline": "mean"}}
    monkeypatch.setattr(attribution, "option_defaults",
                        lambda method, shape: {**real(method, shape), **mine.get(method, {})})
    at = app("Saliency")
    widget(at, "sal_method").set_value("integrated_gradients").run()
    ok(at)
    assert widget(at, "sal_steps").value == 36 and widget(at, "sal_base_integrated_gradients").value == "white"
    widget(at, "sal_method").set_value("smoothgrad").run()
    assert widget(at, "sal_samples").value == 15 and widget(at, "sal_stdev").value == pytest.approx(0.07)
    widget(at, "sal_method").set_value("occlusion").run()
    ok(at)
    assert widget(at, "sal_window").value == 3 and widget(at, "sal_base_occlusion").value == "mean"


def test_saliency_grid_has_one_column_per_image_and_no_toolbar_over_the_top_label():
    """Defects: the multi-target grid wrapped into ragged rows; Plotly's toolbar covered the top-1 label."""
    at = app("Saliency")
    sal = widget(at, "sal_targets")                              # the prediction + the three other classes
    sal.set_value([v for v in range(4) if sal.format_func(v) in sal.options])
    widget(at, "sal_bare").set_value(True).run()
    ok(at)
    rows = [c for c in block(at, "sal_result").children.values()]
    assert len(rows) == 2                                                   # overlays, then their heatmaps
    widths = [len(list(r.children.values())) for r in rows]
    assert widths == [5, 5], widths                                         # the image + one column per class
    assert chart(at, "sal_topk", full=True)["config"].get("displayModeBar") is False


def test_upload_unlike_the_training_data_gets_a_warning(monkeypatch):
    """Defect: a colour photo on a grayscale model said "Bag 79.6%" with no hint. cnnlib's sentence is shown."""
    from cnnlib import inference
    seen = []

    def fake(meta, x01, probs, *a, **kw):
        seen.append(np.asarray(x01).shape)
        return "This image looks unlike the training images."
    monkeypatch.setattr(inference, "ood_warning", fake, raising=False)
    for page, prefix in (("Saliency", "sal"), ("Feature maps", "fm")):
        at = app(page)
        assert not any("unlike" in w.value for w in at.warning)            # test images: no hint
        widget(at, f"{prefix}_src").set_value("Upload an image").run()
        at.file_uploader(key=f"{prefix}_upload").set_value(("photo.png", png((64, 48)), "image/png")).run()
        ok(at)
        assert [w.value for w in at.warning] == ["This image looks unlike the training images."]
    assert seen and seen[0] == (3, 16, 16)


@pytest.mark.parametrize("page", ["Saliency", "Feature maps"])
def test_bad_image_uploads_give_one_sentence(page):
    prefix = {"Saliency": "sal", "Feature maps": "fm"}[page]
    at = app(page)
    widget(at, f"{prefix}_src").set_value("Upload an image").run()
    good = png((40, 40))
    bad = {"notes.png": b"this is not an image at all", "cut.png": good[: len(good) // 2],
           "bomb.png": png_header_only(30000, 30000), "empty.png": b"", "wide.png": png_header_only(20000, 3)}
    for name, blob in bad.items():
        at.file_uploader(key=f"{prefix}_upload").set_value((name, blob, "image/png")).run()
        ok(at, errors=True)
        assert len(at.error) == 1 and at.error[0].value.startswith(f"{name} cannot be used:"), (name, at.error)
        assert one_true_sentence(at.error[0].value), at.error[0].value
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


# ----------------------------------------------------------------------------- Embeddings

def test_embeddings_chart_and_palette():
    at = app("Embeddings")
    spec = chart(at, "emb_chart")
    assert spec["data"] and all(t["type"] == "scatter" for t in spec["data"])      # SVG below 3000 points
    assert sum(len(arr(t["x"])) for t in spec["data"]) == 32
    assert "32 of 32 test images shown" in texts(at)
    widget(at, "emb_wrong").set_value(True).run()
    ok(at)
    assert sum(len(arr(t["x"])) for t in chart(at, "emb_chart")["data"]) < 32


def test_a_clicked_point_shows_its_image_and_a_lasso_scrolls_to_its_images(lens_checkpoints):
    """Issue 18 (3, 6): a click on the map did nothing (the lasso drag mode ate it), and a lasso's images were
    drawn 1,400 px down without a scroll."""
    at = app("Embeddings")
    layout = chart(at, "emb_chart")["layout"]
    assert "select" in layout["clickmode"] and layout.get("dragmode") not in ("lasso", "select")
    spec = chart(at, "emb_chart")
    at.session_state["emb_chart"] = {"selection": {"points": [{"curve_number": 0, "point_index": 0}],
                                                   "point_indices": [0], "box": [], "lasso": []}}
    at.run()
    ok(at)
    beside = images_in(block(at, "emb_point"))
    assert len(beside) == 1 and " · true " in beside[0][1] and " · predicted " in beside[0][1]
    assert not [h for h in at.get("html") if "emb_results" in h.proto.body]      # one point: the map stays put
    points = [{"curve_number": c, "point_index": i} for c, t in enumerate(spec["data"]) for i in range(len(arr(t["x"])))]
    at.session_state["emb_chart"] = {"selection": {"points": points, "point_indices": [], "box": [], "lasso": []}}
    at.run()
    ok(at)
    assert [h for h in at.get("html") if "scrollIntoView" in h.proto.body and "emb_results" in h.proto.body]
    assert block(at, "emb_results") is not None and images_in(block(at, "emb_point")) == []


def test_class_palette_is_clearly_distinct():
    """Defect: airplane / cat and T-shirt / Dress got near-identical colours."""
    def rgb(c):
        c = c.lstrip("#")
        return np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)], float)
    for n in (4, 10, 12):
        cols = [rgb(c) for c in ui.class_palette(n)]
        assert len({tuple(c) for c in cols}) == n
        gap = min(np.linalg.norm(a - b) for i, a in enumerate(cols) for b in cols[i + 1:])
        assert gap >= (60 if n <= 10 else 45), (n, gap)


def test_selection_breakdown_sorting_and_pages(lens_checkpoints, monkeypatch):
    """Defect: a 300-point lasso showed the first 48 in class order. Now: counts by true and predicted class,
    images ordered by loss or confidence, every one of them reachable page by page."""
    at = app("Embeddings")
    spec = chart(at, "emb_chart")
    # select every point: the chart's selection state as Streamlit's frontend sends it after a lasso
    points = [{"curve_number": c, "point_index": i} for c, t in enumerate(spec["data"]) for i in range(len(arr(t["x"])))]
    at.session_state["emb_chart"] = {"selection": {"points": points, "point_indices": [], "box": [], "lasso": []}}
    at.run()
    ok(at)
    assert "32 selected" in texts(at)
    table = next(d.value for d in at.dataframe if "true class" in d.value.columns)
    assert table["true class"].sum() == 32 and table["predicted as"].sum() == 32
    assert set(table["class"]) <= set(lens_checkpoints["classes"])
    assert len(images_in(block(at, "emb_selected"))) == 32            # one page of up to 48
    assert widget(at, "emb_page").value == 1 and "Page (of 1)" in widget(at, "emb_page").label
    caps_loss = [c for _, c in images_in(block(at, "emb_selected"))]
    widget(at, "emb_sort").set_value("confidence").run()
    ok(at)
    caps_conf = [c for _, c in images_in(block(at, "emb_selected"))]
    assert sorted(caps_loss) == sorted(caps_conf) and caps_loss != caps_conf


def test_selection_pager_reaches_every_image(monkeypatch):
    import compute
    monkeypatch.setattr(compute, "SELECTION_PAGE", 10)
    at = app("Embeddings")
    spec = chart(at, "emb_chart")
    points = [{"curve_number": c, "point_index": i} for c, t in enumerate(spec["data"]) for i in range(len(arr(t["x"])))]
    at.session_state["emb_chart"] = {"selection": {"points": points, "point_indices": [], "box": [], "lasso": []}}
    at.run()
    ok(at)
    seen = []
    for page in (1, 2, 3, 4):
        widget(at, "emb_page").set_value(page).run()
        ok(at)
        assert "Page (of 4)" in widget(at, "emb_page").label
        seen += [c.split(" ")[0] for _, c in images_in(block(at, "emb_selected"))]
    assert len(seen) == 32 and len(set(seen)) == 32                 # every selected image, each once


# ----------------------------------------------------------------------------- an imported model

def test_imported_model_works_on_every_page(imported_ckpt, monkeypatch):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", imported_ckpt["dir"])
    at = app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epochs"] == "—" and metrics["Best validation accuracy"] == "—"
    go(at, "Training")
    assert "no training history" in texts(at)
    assert sum("no training history" in i.value for i in at.info) == 1
    for page, key in (("Evaluation", "eval_cm"), ("Embeddings", "emb_chart")):
        go(at, page)
        assert chart(at, key)["data"], page
    go(at, "Errors")
    go(at, "Filters")
    assert "no per-epoch filter history" in texts(at) and images_in(block(at, "filt_first"))
    go(at, "Feature maps")
    assert images_in(block(at, "fm_grid"))
    go(at, "Saliency")
    assert images_in(block(at, "sal_result"))
