"""The One image page (dashboard/views/sample.py) with AppTest on the tiny checkpoints: opened by its address
(?i=N) and by the Open button under an image on Errors, Evaluation's cell, Probably mislabelled and the
Embeddings map's clicked point; the verdict and its evidence after Find out why (cnnlib's triage on the same
checkpoint); a tag saved into <checkpoint>.tags.json that a fresh session finds again; a damaged tags file is
one sentence; and the verdicts on the Embeddings selection's gallery."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from test_dashboard_support import (_env, app, arr, block, chart, images_in, ok, one_true_sentence, texts,  # noqa: F401
                                    walk, widget)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")
VERDICTS = ("label error", "ambiguous", "out of distribution", "model error")


@pytest.fixture(autouse=True)
def _verdicts_on_request_again():
    """Verdicts worked out here must not count as already there for the next test file (test_dashboard_triage
    checks that Errors offers Find out why first)."""
    import verdicts
    before = set(verdicts._TRIAGED)
    yield
    verdicts._TRIAGED.intersection_update(before)


def stored(path: str) -> dict:
    from cnnlib.diagnose.evaluate import stored_predictions
    from cnnlib.inference import load_model
    return stored_predictions(load_model(path).meta)


def triaged(path: str) -> dict:
    from cnnlib.diagnose.triage import triage_for_checkpoint
    from cnnlib.inference import load_model
    return {r["index"]: r for r in triage_for_checkpoint(load_model(path))["records"]}


def on_sample_page(at, i: int) -> None:
    """The page is One image, showing test image i (number input, address, image caption)."""
    ok(at)
    assert at.title[0].value == "One image"
    assert widget(at, "sample_index").value == i and str(at.query_params["i"]) == str(i)
    caps = [c for _, c in images_in(at.main)]
    assert any(c.startswith(f"#{i} as the model sees it: 16\u00a0×\u00a016 pixels") for c in caps), caps[:3]


def sample(at, i) -> object:
    at.query_params["i"] = str(i)
    at.switch_page("views/sample.py").run()
    return at


def test_the_address_opens_an_image_with_its_facts(lens_checkpoints):
    p = stored(lens_checkpoints["wrong"])
    classes = lens_checkpoints["classes"]
    i = int(np.flatnonzero(p["preds"] != p["targets"])[0])
    at = sample(app(), i)
    on_sample_page(at, i)
    t, q = int(p["targets"][i]), int(p["preds"][i])
    assert f"Label **{classes[t]}** · predicted **{classes[q]}**" in texts(at) and "✗ wrong" in texts(at)
    top = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    probs = np.asarray(p["probs"][i], np.float32)
    assert f"confidence {100 * float(probs[q]):.1f}% · loss {-np.log(float(probs[t])):.3f}" in texts(at)
    assert list(top["probability"]) == pytest.approx(sorted(100 * probs, reverse=True), abs=1e-3)
    assert len(images_in(block(at, "sample_explain_panel"))) >= 3            # the image and two saliency maps
    assert len(images_in(block(at, "sample_neighbours"))) == 9               # nearest training images
    assert block(at, "sample_influence") is not None                          # most influential: on request
    similar = images_in(block(at, "sample_similar"))
    assert len(similar) == 8 and all(not c.startswith(f"#{i} ") for _, c in similar)
    assert f"File: {classes[t]}/" in texts(at)

    widget(at, "sample_index").set_value(i + 1).run()                         # another image: the address follows
    on_sample_page(at, i + 1)
    look_alike = int(re.match(r"#(\d+)", similar[0][1]).group(1))
    assert look_alike != i + 1
    at.button(key=f"sample_similar_open_{look_alike}").click().run()             # a look-alike opens here
    on_sample_page(at, look_alike)

    at.switch_page("views/errors.py").run()                                   # the page list's link: the last image
    at.query_params.clear()
    at.switch_page("views/sample.py").run()
    on_sample_page(at, look_alike)

    at = sample(app(), "9999")                                                 # no such image: one sentence
    ok(at)
    said = [x.value for x in at.info if "does not have" in x.value]
    assert said and one_true_sentence(said[0]) and "numbered 0 to 31" in said[0]


@pytest.mark.parametrize("page, key", [("views/errors.py", "err_open_"), ("views/evaluation.py", "eval_cell_open_"),
                                       ("views/label_issues.py", "li_open_")])
def test_open_under_an_image_goes_to_its_page(lens_checkpoints, page, key):
    at = app()
    at.switch_page(page).run()
    ok(at)
    buttons = [b for b in at.button if str(b.key).startswith(key)]
    assert buttons, [b.key for b in at.button][:20]
    pressed = buttons[-1]
    i = int(pressed.key.rsplit("_", 1)[1])
    pressed.click().run()
    on_sample_page(at, i)


def test_the_embeddings_point_opens_and_the_selection_shows_verdicts(lens_checkpoints):
    at = app()
    at.switch_page("views/embeddings.py").run()
    ok(at)
    spec = chart(at, "emb_chart")
    point = int(spec["data"][0]["customdata"][0][0])
    at.session_state["emb_chart"] = {"selection": {"points": [{"curve_number": 0, "point_index": 0}],
                                                   "point_indices": [0], "box": [], "lasso": []}}
    at.run()
    ok(at)
    at.button(key="emb_point_open").click().run()
    on_sample_page(at, point)

    at.switch_page("views/embeddings.py").run()                              # a selection: verdicts on request
    points = [{"curve_number": c, "point_index": j} for c, t in enumerate(spec["data"])
              for j in range(len(arr(t["x"])))]
    at.session_state["emb_chart"] = {"selection": {"points": points, "point_indices": [], "box": [], "lasso": []}}
    at.run()
    ok(at)
    at.button(key="emb_sel_triage_btn").click().run()
    ok(at)
    want = triaged(lens_checkpoints["wrong"])
    cells = {int(n.key.rsplit("_", 1)[1]): n for n in walk(block(at, "emb_selected"))
             if str(getattr(n, "key", "")).startswith("emb_sel_cell_")}
    badged = {i for i, c in cells.items() if any("-badge[" in str(getattr(m, "value", "")) for m in walk(c))}
    assert badged == set(cells) & set(want) and badged, (sorted(badged), sorted(want))
    one = max(VERDICTS, key=lambda v: sum(r["verdict"] == v for r in want.values()))
    widget(at, "emb_sel_verdicts").set_value([one]).run()
    ok(at)
    shown = [int(n.key.rsplit("_", 1)[1]) for n in walk(block(at, "emb_selected"))
             if str(getattr(n, "key", "")).startswith("emb_sel_cell_")]
    assert shown and all(want[i]["verdict"] == one for i in shown)


def test_verdict_and_evidence_after_find_out_why(lens_checkpoints):
    import gallery
    import verdicts
    verdicts._TRIAGED.clear()                                   # as in a fresh server: on request only
    want = triaged(lens_checkpoints["wrong"])
    i = min(want)
    at = sample(app(), i)
    on_sample_page(at, i)
    assert "badge[" not in texts(at)
    at.button(key="sample_triage_btn").click().run()
    ok(at)
    r = want[i]
    assert f"badge[{r['verdict']}] {r['confidence']:.0%} sure" in texts(at)
    assert gallery.evidence_line(r, lens_checkpoints["classes"]) + "." in texts(at)
    assert r["evidence"]["rule"] in texts(at)
    p = stored(lens_checkpoints["wrong"])
    right = int(np.flatnonzero(p["preds"] == p["targets"])[0])
    widget(at, "sample_index").set_value(right).run()
    ok(at)
    assert "gets this image right" in texts(at) and "badge[" not in texts(at)


@pytest.fixture
def own_folder(lens_checkpoints, tmp_path, monkeypatch):
    """wrong.pt alone in a fresh checkpoint folder (its tags file is this test's)."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(lens_checkpoints["wrong"], folder / "wrong.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    return folder


def test_a_tag_is_saved_beside_the_checkpoint_and_found_by_a_fresh_session(own_folder, lens_checkpoints):
    from cnnlib.diagnose import tags
    from cnnlib.inference import load_model
    ckpt = str(own_folder / "wrong.pt")
    at = sample(app(), 3)
    on_sample_page(at, 3)
    assert widget(at, "sample_tag_text").value == ""
    widget(at, "sample_tag_text").set_value("  two objects,\n*not* a <b>label</b> error ")
    at.button(key="sample_tag_save").click().run()
    ok(at)
    saved = tags.load_tags(ckpt, load_model(ckpt).meta)
    assert [(e["index"], e["tag"], e["label"]) for e in saved] == \
        [(3, "two objects, *not* a <b>label</b> error", lens_checkpoints["classes"][int(stored(ckpt)["targets"][3])])]
    assert saved[0]["path"].endswith(".png")                                  # a folder's image: its file too
    assert "wrong.pt.tags.json" in texts(at) and widget(at, "sample_tag_text").value == saved[0]["tag"]

    fresh = sample(app(), 3)                                                  # another session, after a restart
    assert widget(fresh, "sample_tag_text").value == saved[0]["tag"]
    fresh.switch_page("views/selections.py").run()
    ok(fresh)
    listed = next(d.value for d in fresh.dataframe if "tag" in d.value.columns and "file" in d.value.columns)
    assert list(listed["index"]) == [3] and list(listed["tag"]) == [saved[0]["tag"]]
    fresh = sample(fresh, 4)
    assert widget(fresh, "sample_tag_text").value == ""                      # a tag for that image alone
    fresh = sample(fresh, 3)
    fresh.button(key="sample_tag_remove").click().run()
    ok(fresh)
    assert tags.load_tags(ckpt, load_model(ckpt).meta) == []
    assert widget(fresh, "sample_tag_text").value == ""


def test_a_damaged_or_foreign_tags_file_is_one_sentence_and_kept(own_folder):
    from cnnlib.diagnose import tags
    path = tags.tags_path(str(own_folder / "wrong.pt"))
    for content, says in ((b"{not json at all", "is damaged (not JSON)"),
                          (b'{"format": "cnnlens-tags", "version": 1, "checkpoint": {"identity": "0"}, "tags": []}',
                           "belongs to another checkpoint")):
        with open(path, "wb") as f:
            f.write(content)
        at = sample(app(), 2)
        assert not at.exception
        assert len(at.error) == 1 and says in at.error[0].value, [e.value for e in at.error]
        assert one_true_sentence(at.error[0].value) and at.error[0].value[0].isupper()
        assert images_in(block(at, "sample_explain_panel"))                    # the rest of the page works
        assert open(path, "rb").read() == content                              # nothing lost


def test_without_the_test_images_the_facts_and_the_tag_still_work(lens_checkpoints, tmp_path, monkeypatch):
    from cnnlib.diagnose import tags
    from cnnlib.inference import load_model
    folder = tmp_path / "nodata"
    folder.mkdir()
    shutil.copy(lens_checkpoints["nodata"], folder / "nodata.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    at = sample(app(), 2)
    ok(at)
    assert at.title[0].value == "One image" and widget(at, "sample_index").value == 2
    assert any("needs the test images" in x.value for x in at.info)           # one sentence on the pixels
    assert "Label **" in texts(at) and not images_in(at.main)
    widget(at, "sample_tag_text").set_value("check the file")
    at.button(key="sample_tag_save").click().run()
    ok(at)
    saved = tags.load_tags(str(folder / "nodata.pt"), load_model(str(folder / "nodata.pt")).meta)
    assert [(e["index"], e["path"], e["tag"]) for e in saved] == [(2, None, "check the file")]   # by index


def test_an_uploaded_checkpoint_says_where_tags_can_be_kept(lens_checkpoints):
    at = app()
    blob = open(lens_checkpoints["wrong"], "rb").read()
    at.sidebar.file_uploader(key="side_upload").set_value(("mine.pt", blob, "application/octet-stream")).run()
    ok(at)
    at = sample(at, 1)
    on_sample_page(at, 1)
    said = [x.value for x in at.info if "uploaded checkpoint" in x.value]
    assert len(said) == 1 and one_true_sentence(said[0])
    assert not [b for b in at.button if b.key == "sample_tag_save"]
