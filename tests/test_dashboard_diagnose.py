"""The "why is it wrong" pages with AppTest: Probably mislabelled, Two models, Selections, Nearest training
images, Faithfulness, and what they added to Errors, Embeddings, Evaluation and Saliency. Each renders for the
tiny checkpoints and an imported model (no stored predictions); the numbers shown are cnnlib's."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from test_dashboard_support import (_env, app, arr, block, chart, images_in, imported_ckpt, ok, texts,  # noqa: F401
                                    walk, widget)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")

NEW = {"Probably mislabelled": "views/label_issues.py", "Two models": "views/compare.py",
       "Selections": "views/selections.py", "Nearest training images": "views/neighbours.py",
       "Faithfulness": "views/faithfulness.py"}


def go(at, title: str, errors: bool = False):
    at.switch_page(NEW.get(title) or {"Errors": "views/errors.py", "Embeddings": "views/embeddings.py",
                                      "Evaluation": "views/evaluation.py", "Saliency": "views/saliency.py"}[title])
    at.run()
    ok(at, errors)
    return at


def meta(path: str) -> dict:
    from cnnlib.inference import load_model
    return load_model(path).meta


COLUMNS = {"cmp_table": "B right", "li_table": "suggested label", "faith_one_table": "insertion − deletion",
           "faith_table": "seconds per map", "sel_list": "tagged at", "sel_rows_0": "prediction"}


def table(at, key: str):
    """A dataframe by key (read-only ones carry no id in AppTest: then by a column only it has)."""
    found = [d.value for d in at.dataframe if getattr(d, "key", None) == key]
    if not found:
        found = [d.value for d in at.dataframe if COLUMNS[key] in d.value.columns
                 and (key != "faith_one_table" or "seconds per map" not in d.value.columns)]
    assert found, f"no table {key!r}"
    return found[0]


def test_every_new_page_renders_for_the_tiny_checkpoint():
    at = app()
    for title in NEW:
        go(at, title)
        assert at.title[0].value == title


def test_every_new_page_renders_for_an_imported_model(imported_ckpt, lens_checkpoints, tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(imported_ckpt["path"], folder / "imported.pt")
    shutil.copy(lens_checkpoints["tiny"], folder / "tiny.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = app()
    widget(at, "side_ckpt").set_value(str(folder / "imported.pt")).run()
    ok(at)
    go(at, "Probably mislabelled")
    assert "computed from the test images" in texts(at)
    go(at, "Two models")                                     # imported (no stored predictions) against tiny
    assert table(at, "cmp_table")["B right"].sum() + table(at, "cmp_table")["B wrong"].sum() == 32
    go(at, "Nearest training images")
    assert len(images_in(block(at, "nn_result"))) == 9
    go(at, "Faithfulness")
    assert not table(at, "faith_one_table").empty
    go(at, "Embeddings")
    assert chart(at, "emb_chart")["data"]
    go(at, "Selections")


def test_label_issues_in_cnnlibs_order(lens_checkpoints):
    from cnnlib.diagnose import labels
    at = go(app(), "Probably mislabelled")
    expect = labels.label_issues_for(meta(lens_checkpoints["wrong"]))
    shown = list(table(at, "li_table")["index"])
    flagged = expect["indices"].tolist()
    assert shown == (flagged or expect["ranking"].tolist())[:24] and shown
    caps = [c for _, c in images_in(block(at, "li_gallery"))]
    assert [int(re.match(r"#(\d+)", c).group(1)) for c in caps] == shown
    suggested = expect["suggested"]
    cls = lens_checkpoints["classes"]
    from cnnlib.diagnose.evaluate import stored_predictions
    targets = stored_predictions(meta(lens_checkpoints["wrong"]))["targets"]
    assert caps == [f"#{i} {cls[targets[i]]} → {cls[suggested[i]]} · {expect['quality'][i]:.2f}" for i in shown]
    widget(at, "li_list").set_value("all").run()
    ok(at)
    assert list(table(at, "li_table")["index"]) == expect["ranking"].tolist()[:24]


def test_embedding_method_switch_and_colour_by():
    at = go(app(), "Embeddings")
    assert chart(at, "emb_chart")["layout"]["xaxis"]["title"]["text"] == "PCA 1"
    pca = np.concatenate([arr(t["x"]) for t in chart(at, "emb_chart")["data"]])
    widget(at, "emb_method").set_value("tsne").run()
    ok(at)
    spec = chart(at, "emb_chart")
    assert spec["layout"]["xaxis"]["title"]["text"] == "t-SNE 1"
    assert sum(len(arr(t["x"])) for t in spec["data"]) == 32
    assert not np.allclose(np.sort(pca), np.sort(np.concatenate([arr(t["x"]) for t in spec["data"]])))
    widget(at, "emb_colour").set_value("correct").run()
    ok(at)
    assert {t["name"] for t in chart(at, "emb_chart")["data"]} <= {"correct", "misclassified"}
    widget(at, "emb_colour").set_value("confidence").run()
    ok(at)
    traces = chart(at, "emb_chart")["data"]
    assert all(t["marker"].get("colorscale") for t in traces)
    assert all(0 <= v <= 1 for t in traces for v in arr(t["marker"]["color"]))
    widget(at, "emb_colour").set_value("quality").run()
    ok(at)
    assert "label quality" in str(chart(at, "emb_chart")["data"][0]["text"])


def test_embedding_selection_feeds_the_errors_gallery_and_tags():
    at = go(app(), "Embeddings")
    spec = chart(at, "emb_chart")
    points = [{"curve_number": c, "point_index": i} for c, t in enumerate(spec["data"]) for i in range(len(arr(t["x"])))]
    at.session_state["emb_chart"] = {"selection": {"points": points[:10], "point_indices": [], "box": [], "lasso": []}}
    at.run()
    ok(at)
    assert "10 selected" in texts(at)
    cells = [n.key for n in walk(block(at, "emb_selected")) if str(getattr(n, "key", "")).startswith("emb_sel_cell_")]
    assert len(cells) == 10
    at.button(key=f"emb_sel_btn_{cells[0].rsplit('_', 1)[1]}").click().run()
    ok(at)
    assert len(images_in(block(at, "emb_sel_explain_panel"))) >= 3
    widget(at, "emb_tag_name").set_value("my lasso").run()
    at.button(key="emb_tag").click().run()
    ok(at)
    from selections import rows
    sel = at.session_state["selections.sets"]["my lasso"]
    assert sel["count"] == 10 and sorted(int(r["index"]) for r in rows(sel["csv"])) == sorted(sel["indices"])


def test_confusion_cell_tagged_and_its_csv_has_the_cells_rows(lens_checkpoints):
    at = go(app(), "Evaluation")
    classes = lens_checkpoints["classes"]
    from cnnlib.diagnose.evaluate import stored_predictions
    p = stored_predictions(meta(lens_checkpoints["wrong"]))
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (p["targets"], p["preds"]), 1)
    np.fill_diagonal(cm, 0)
    t, q = np.unravel_index(cm.argmax(), cm.shape)
    widget(at, "eval_true").set_value(classes[t])
    widget(at, "eval_pred").set_value(classes[q]).run()
    ok(at)
    at.button(key="eval_cell_tag").click().run()
    ok(at)
    name = f"{classes[t]} as {classes[q]}"
    from selections import rows
    sel = at.session_state["selections.sets"][name]
    got = rows(sel["csv"])
    expect = np.flatnonzero((p["targets"] == t) & (p["preds"] == q))
    assert sorted(int(r["index"]) for r in got) == expect.tolist() and len(got) == cm[t, q]
    assert {r["label"] for r in got} == {classes[t]} and {r["prediction"] for r in got} == {classes[q]}
    assert all(r["path"].endswith(".png") and f"/{classes[t]}/" in r["path"] for r in got)   # ImageFolder files
    assert {r["tag"] for r in got} == {name}
    go(at, "Selections")
    assert list(table(at, "sel_list")["tag"]) == [name]
    assert len(table(at, "sel_rows_0")) == len(expect)
    at.button(key="sel_remove_0").click().run()
    ok(at)
    assert "Nothing tagged yet" in texts(at)


def test_comparison_equals_cnnlibs(lens_checkpoints):
    from cnnlib.diagnose import compare
    at = go(app(), "Two models")                          # A = wrong.pt (newest), B = tiny.pt
    c = compare.compare_checkpoints(meta(lens_checkpoints["wrong"]), meta(lens_checkpoints["tiny"]))
    got = table(at, "cmp_table")
    assert [list(got["B right"]), list(got["B wrong"])] == [[c["table"][0][0], c["table"][1][0]],
                                                            [c["table"][0][1], c["table"][1][1]]]
    mc = c["mcnemar"]
    pv = "< 0.0001" if mc["p_value"] < 1e-4 else f"= {mc['p_value']:.3g}"
    assert f"p {pv}" in texts(at) and f"statistic {mc['statistic']:.3g}" in texts(at)
    assert ("exact binomial test" if mc["exact"] else "chi-square") in texts(at)
    bars = chart(at, "cmp_per_class")["data"][0]
    assert np.allclose(arr(bars["y"]), [100 * r["diff"] for r in c["per_class"]])
    n_a = len(c["only_a"])
    assert len(images_in(block(at, "cmp_gallery"))) == 3 * min(6, n_a)      # image + both models' saliency
    widget(at, "cmp_side").set_value("only_b").run()
    ok(at)


def test_faithfulness_shows_aucs(monkeypatch):
    at = go(app(), "Faithfulness")
    one = table(at, "faith_one_table")
    assert list(one["method"]) == ["Saliency", "Integrated Gradients", "Grad-CAM"]
    assert ((one["deletion AUC"] >= 0) & (one["deletion AUC"] <= 1) & (one["insertion AUC"] <= 1)).all()
    assert len(chart(at, "faith_one")["data"]) == 6                           # deletion + insertion per method
    widget(at, "faith_n").set_value(4)
    widget(at, "faith_methods").set_value(["saliency", "gradcam"]).run()
    at.button(key="faith_run").click().run()
    ok(at)
    mean = table(at, "faith_table")
    assert set(mean["method"]) == {"Saliency", "Grad-CAM", "Random map"}
    assert (mean["insertion − deletion"].diff().dropna() <= 0).all()          # sorted, best first
    assert "depends" in texts(at) or "not in general" in texts(at)


def test_neighbours_on_the_page_and_in_the_errors_explain_panel():
    at = go(app(), "Nearest training images")
    caps = [c for _, c in images_in(block(at, "nn_result"))]
    assert len(caps) == 9 and all(re.fullmatch(r"\w+ · -?\d\.\d\d", c) for c in caps), caps
    sims = [float(c.split(" · ")[1]) for c in caps]
    assert sims == sorted(sims, reverse=True)
    widget(at, "nn_k").set_value(4).run()
    ok(at)
    assert len(images_in(block(at, "nn_result"))) == 4
    go(at, "Errors")
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    assert len(images_in(block(at, "err_neighbours"))) == 9


def test_saliency_offers_the_cam_family_with_their_options():
    at = go(app(), "Saliency")
    import compute
    methods = compute.attribution_methods()
    assert {"gradcam_pp", "scorecam", "layercam", "eigencam", "finercam"} <= set(methods)
    widget(at, "sal_method").set_value("finercam").run()
    ok(at)
    assert widget(at, "sal_comparisons").value == 3 and widget(at, "sal_comp_weight").value == 1.0
    widget(at, "sal_comparisons").set_value(1).run()
    ok(at)
    assert images_in(block(at, "sal_result"))
    widget(at, "sal_method").set_value("scorecam").run()
    ok(at)
    assert images_in(block(at, "sal_result")) and "Score-CAM layer" in widget(at, "sal_layer").label


# ----------------------------------------------------------------------------- issue 18: what a new user tripped over

def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_a_folder_with_unreadable_images_is_used_and_says_what_was_skipped(tmp_path):
    from conftest import write_image_folder
    from test_newuser_library import spoil
    folder = write_image_folder(tmp_path / "spoilt", n_train=16, n_test=32)
    spoil(folder)                                                # a text file named .jpg and a truncated JPEG
    at = app()
    widget(at, "side_data").set_value(folder).run()              # the sidebar's Data folder
    ok(at)
    for title in ("Errors", "Evaluation"):
        go(at, title)
        assert "Skipped 2 unreadable images" in captions(at), (title, captions(at))
        assert "0-notes.jpg" in captions(at)
    go(at, "Errors")
    assert "needs the test images" not in " ".join(i.value for i in at.info)
    import frame
    for entry in frame.PAGES[1:]:                                # every page works on the spoilt folder
        if entry.path.endswith("train_live.py"):
            continue
        at.switch_page(entry.path).run()
        ok(at)


def shipped_plus_other_folder(tmp_path, tiny_cifar_ckpt):
    """The shipped CIFAR-10 checkpoints and, newest, a finished run with the same class names on another folder."""
    from pathlib import Path
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "checkpoints"
    for name in ("resnet9.pt", "simple_cnn.pt", "simple_cnn_seed.pt"):
        shutil.copy(shipped / name, folder / name)
    shutil.copy(tiny_cifar_ckpt, folder / "other_folder.pt")
    return folder


def test_two_models_defaults_b_to_a_checkpoint_tested_on_the_same_images(tmp_path, tiny_cifar_ckpt, monkeypatch):
    folder = shipped_plus_other_folder(tmp_path, tiny_cifar_ckpt)
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    import adapters
    from cnnlib.errors import DatasetError

    def not_on_disk(meta, override=""):
        raise DatasetError("the CIFAR-10 test images are not on disk")
    monkeypatch.setattr(adapters, "load_test_split", not_on_disk)   # the stored predictions are enough
    at = app()
    widget(at, "side_ckpt").set_value(str(folder / "resnet9.pt")).run()
    go(at, "Two models")
    assert widget(at, "cmp_other").value in (str(folder / "simple_cnn.pt"), str(folder / "simple_cnn_seed.pt"))
    got = table(at, "cmp_table")
    assert int(got["B right"].sum() + got["B wrong"].sum()) == 10000
    assert "tested on different images" not in texts(at)


def test_two_models_evaluates_b_on_as_test_images_when_it_was_tested_on_others(tmp_path, tiny_cifar_ckpt, monkeypatch):
    folder = shipped_plus_other_folder(tmp_path, tiny_cifar_ckpt)
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = app()
    widget(at, "side_ckpt").set_value(str(folder / "other_folder.pt")).run()   # its synthetic images are on disk
    go(at, "Two models")
    assert any("No other checkpoint with these classes was tested on A's test images" in i.value for i in at.info)
    widget(at, "cmp_other").set_value(str(folder / "simple_cnn.pt")).run()
    ok(at)
    got = table(at, "cmp_table")
    assert int(got["B right"].sum() + got["B wrong"].sum()) == 100              # A's 100 test images


def test_saliency_always_explains_the_prediction_and_resets_the_targets_for_a_new_image(lens_checkpoints):
    at = go(app(), "Saliency")
    classes = lens_checkpoints["classes"]

    def explained():
        caps = [c for _, c in images_in(block(at, "sal_result"))][1:]
        return [re.search(r" for (\w+) \(", c).group(1) for c in caps]
    pred = explained()
    assert len(pred) == 1
    others = [i for i, c in enumerate(classes) if c != pred[0]][:2]
    widget(at, "sal_targets").set_value(others).run()
    ok(at)
    shown = explained()
    assert shown == [pred[0]] + [classes[i] for i in others]                  # the prediction stays, two more are added
    widget(at, "sal_pos").set_value(2).run()                         # the next image
    ok(at)
    assert len(explained()) == 1 and widget(at, "sal_targets").value == []


def test_probably_mislabelled_says_what_its_count_is(lens_checkpoints):
    from cnnlib.diagnose import labels
    at = go(app(), "Probably mislabelled")
    expect = labels.label_issues_for(meta(lens_checkpoints["wrong"]))
    text = texts(at)
    assert "mislabelled — an estimate of how many labels are wrong" not in text       # the untrue claim (issue 18.9)
    assert f"flags **{expect['n_issues']:,}** of" in text and "whose given label this model contradicts" in text
    if expect["accuracy"] >= labels.TRUSTED_ACCURACY:
        assert "confident learning's estimate of how many labels are wrong" in text
    else:
        assert "It is not an estimate of how many labels are wrong" in text


def test_a_folder_without_training_images_gets_a_notice_not_an_error(tmp_path):
    import os
    from conftest import write_image_folder
    flat = os.path.join(write_image_folder(tmp_path / "flat", n_train=8, n_test=16), "test")   # <class>/*: all test
    at = app()
    widget(at, "side_data").set_value(flat).run()
    ok(at)
    go(at, "Nearest training images")                 # ok(): no st.error on the page
    assert any("training images" in i.value for i in at.info), [i.value for i in at.info]
    go(at, "Errors")
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    assert any("training images" in i.value for i in at.info)


def test_error_sentences_start_with_a_capital_letter(monkeypatch):
    import ui
    from cnnlib.diagnose import compare
    from cnnlib.errors import CNNLibError

    def refuse(*a, **k):
        raise CNNLibError("comparing needs the same images: got 3 targets")
    monkeypatch.setattr(compare, "compare", refuse)
    import twomodels
    twomodels._compare.clear()                                  # computed by an earlier test: not cached here
    at = go(app(), "Two models", errors=True)
    assert [e.value for e in at.error] == ["Comparing needs the same images: got 3 targets."]
    assert ui.capitalised("x.pt was refused.") == "x.pt was refused."          # a file name stays as written


def test_training_table_best_epoch_column_has_one_type(lens_checkpoints, imported_ckpt, tmp_path, monkeypatch):
    import logging
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage() + str(record.exc_info or ""))
    arrow_log = logging.getLogger("streamlit.dataframe_util")   # Streamlit's loggers do not propagate
    keep = Keep(logging.DEBUG)
    arrow_log.addHandler(keep)
    monkeypatch.setattr(arrow_log, "level", logging.DEBUG)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(lens_checkpoints["tiny"], folder / "tiny.pt")
    shutil.copy(imported_ckpt["path"], folder / "imported.pt")         # no best epoch
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = app()
    widget(at, "side_ckpt").set_value(str(folder / "tiny.pt")).run()
    try:
        at.switch_page("views/training.py").run()
    finally:
        arrow_log.removeHandler(keep)
    ok(at)
    df = next(d.value for d in at.dataframe if "best epoch" in d.value.columns)
    assert len(df) == 2 and "—" in list(df["best epoch"]) and len({type(v) for v in df["best epoch"]}) == 1
    assert not [m for m in seen if "Arrow" in m], seen      # no pyarrow conversion failure in the server log


def test_two_models_says_when_b_cannot_take_as_images(lens_checkpoints, tmp_path, monkeypatch):
    from cnnlib.io.checkpoint import save_checkpoint
    from cnnlib.models.registry import get_model
    classes = lens_checkpoints["classes"]
    kwargs = {"num_classes": len(classes), "image_size": 8}           # B reads 8 x 8 images, A's are 16 x 16
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_checkpoint({"model": {"name": "simple_cnn", "kwargs": kwargs}, "state_dict": get_model("simple_cnn", **kwargs)
                     .state_dict(), "classes": classes, "input_shape": [3, 8, 8],
                     "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                     "data": {"name": "elsewhere", "path": str(tmp_path / "elsewhere"), "split_seed": 0}},
                    str(folder / "small.pt"))
    shutil.copy(lens_checkpoints["tiny"], folder / "tiny.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = app()
    widget(at, "side_ckpt").set_value(str(folder / "tiny.pt")).run()
    go(at, "Two models", errors=True)
    assert widget(at, "cmp_other").value == str(folder / "small.pt")
    assert [e.value for e in at.error] == ["B takes 3x8x8 images and A's test images are 3x16x16 (C x H x W), so the "
                                           "two cannot be compared on the same pixels."]
