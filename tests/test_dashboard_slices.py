"""The Failure slices page (dashboard/views/slices.py) with AppTest: the tiny checkpoint on a test folder where a
quarter of one class is turned upside down (tests/test_slices.py's planted slice) shows that slice first, the
same as cnnlib's slices_for_checkpoint; its images open in the gallery, are tagged and appear in the Selections
page's CSV with their files; the verdict mix after "Find out why"; a model whose mistakes form no slice, and a
folder too small for any, get one sentence; no exception in any case."""
from __future__ import annotations

import numpy as np
import pytest

from test_dashboard_support import _env, app, block, images_in, ok, texts, widget  # noqa: F401
from test_slices import turned_folder  # noqa: F401 - the fixture: the planted slice on disk

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")
PAGE = "views/slices.py"


def button(at, key: str):
    found = [b for b in at.button if b.key == key]
    assert found, (key, [b.key for b in at.button])
    return found[0]


def open_slices(lens_checkpoints, data: str = "", ckpt: str = "tiny"):
    at = app()
    widget(at, "side_ckpt").set_value(lens_checkpoints[ckpt]).run()
    if data:
        widget(at, "side_data").set_value(data).run()
    ok(at)
    at.switch_page(PAGE).run()
    ok(at)
    return at


@pytest.fixture
def fresh():
    """No slices or verdicts from an earlier test in this process (the caches are keyed by checkpoint and data)."""
    import failslices
    import streamlit as st
    st.cache_data.clear()
    failslices._DONE.clear()


def test_the_planted_slice_is_first_and_its_images_reach_the_selections_csv(lens_checkpoints, turned_folder, fresh):
    from cnnlib.diagnose.slices import slices_for_checkpoint
    from cnnlib.inference import load_model
    folder, turned = turned_folder
    at = open_slices(lens_checkpoints, folder)
    assert "#### 1. " not in texts(at)                           # a new folder: found on request
    button(at, "slices_run").click().run()
    ok(at)
    want = slices_for_checkpoint(load_model(lens_checkpoints["tiny"]), data=folder)      # cnnlib's own answer
    first = want["slices"][0]
    page = texts(at)
    assert f"#### 1. {first['size']:,} images, " in page, page[:2000]
    assert f"**{len(want['slices'])}** failure slice" in page
    assert "**Classes:** red " in page                           # the turned images are all red ones
    typical = [c for _, c in images_in(block(at, "slices_typical_1"))]
    assert [int(c.split()[0][1:]) for c in typical] == first["typical"], typical
    assert not images_in(block(at, "slices_gallery"))            # the gallery opens on request

    button(at, "slices_show_1").click().run()
    ok(at)
    cells = images_in(block(at, "slices_gallery"))
    assert len(cells) == min(first["size"], 48) and [c for _, c in cells][0] == f"#{first['indices'][0]}"
    widget(at, "slices_tag_name").set_value("turned red").run()
    button(at, "slices_tag").click().run()
    ok(at)
    assert "Tagged as **turned red**" in texts(at)

    at.switch_page("views/selections.py").run()
    ok(at)
    import selections
    rows = selections.rows(at.session_state["selections.sets"]["turned red"]["csv"])
    files = {r["path"] for r in rows}
    assert len(rows) == first["size"] and {int(r["index"]) for r in rows} == set(first["indices"])
    assert len(files & turned) >= 0.7 * len(turned) and len(files & turned) / len(files) >= 0.5, len(files & turned)
    assert any("turned red" in e.label for e in at.expander)


def test_after_a_restart_the_slices_show_at_once_from_the_disk_cache(lens_checkpoints, turned_folder, fresh):
    import diagnose
    import failslices
    folder, _ = turned_folder
    at = open_slices(lens_checkpoints, folder)
    if any(b.key == "slices_run" for b in at.button):            # not yet on disk (this test run alone)
        button(at, "slices_run").click().run()
    first = texts(at)
    assert "#### 1. " in first
    import streamlit as st
    st.cache_data.clear()                                         # as after a restart: only the disk cache
    failslices._DONE.clear()
    diagnose._INDEXES.clear()
    again = open_slices(lens_checkpoints, folder)
    assert not any(b.key == "slices_run" for b in again.button)  # no button: read from disk at once
    assert [ln for ln in texts(again).splitlines() if ln.startswith("#### ")] == \
        [ln for ln in first.splitlines() if ln.startswith("#### ")]


def test_find_out_why_adds_each_slices_verdict_mix(lens_checkpoints, turned_folder, fresh):
    from cnnlib.diagnose.slices import find_slices
    from cnnlib.diagnose.triage import triage
    folder, _ = turned_folder
    at = open_slices(lens_checkpoints, folder)
    if any(b.key == "slices_run" for b in at.button):
        button(at, "slices_run").click().run()
    assert "**Why wrong:**" not in texts(at)
    button(at, "slices_triage_btn").click().run()
    ok(at)
    import diagnose
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import predictions_for
    from cnnlib.inference import load_model
    (key, test), = [(k, v) for k, v in diagnose._INDEXES.items() if k[2] == "test" and "tiny.pt" in k[0]]
    train = diagnose._INDEXES[(key[0], key[1], "train")]                # the features the page used
    model = load_model(lens_checkpoints["tiny"])
    x, y = load_checkpoint_split(model.meta, "test", folder)
    p = predictions_for(model, "test", x, y)
    records = triage(model.meta, p["probs"], p["targets"], test.features, train.features, train.labels,
                     preds=p["preds"])
    first = find_slices(test.features, p["targets"], p["preds"], verdicts=records)[0]
    line = next(m.value for m in at.markdown if m.value.startswith("**Why wrong:**"))
    for verdict, count in first["verdicts"].items():
        assert f"[{verdict} {count}]" in line, (line, first["verdicts"])
    assert sum(first["verdicts"].values()) == first["errors"]


def test_a_model_whose_mistakes_form_no_slice_says_so(lens_checkpoints, monkeypatch, fresh):
    """A family-wise level no group can reach (p below 1e-300): find_slices finds no slice, the page says so."""
    from dataclasses import replace

    from cnnlib.diagnose import slices
    strict = replace(slices.SliceConfig(), alpha=1e-300)
    monkeypatch.setattr(slices, "SliceConfig", lambda: strict)
    at = open_slices(lens_checkpoints, ckpt="wrong")
    if any(b.key == "slices_run" for b in at.button):
        button(at, "slices_run").click().run()
        ok(at)
    said = [i.value for i in at.info if i.value.startswith("No failure slice")]
    assert len(said) == 1 and "at least 8 similar test images" in said[0], [i.value for i in at.info]
    err = 1 - lens_checkpoints["accuracy"]
    assert f"the model's {100 * err:.1f}%" in said[0]
    assert not any((b.key or "").startswith("slices_show_") for b in at.button)


def test_too_few_test_images_is_one_sentence(lens_checkpoints, tmp_path, fresh):
    from conftest import write_image_folder
    small = write_image_folder(tmp_path / "small", n_train=8, n_test=8)
    at = open_slices(lens_checkpoints, small, ckpt="wrong")
    said = [i.value for i in at.info if "Failure slices need" in i.value]
    assert said == ["Failure slices need at least 16 test images, and this data has 8."], [i.value for i in at.info]
    assert not np.any([b.key == "slices_run" for b in at.button])
    seven = write_image_folder(tmp_path / "seven", n_train=8, n_test=28)    # 7 per class: enough images, no group
    at = open_slices(lens_checkpoints, seven, ckpt="wrong")
    said = [i.value for i in at.info if "within each class" in i.value]
    assert said == ["Failure slices are looked for within each class, and no class has 8 test images or more (the "
                    "largest has 7), so there is no group large enough to test."], [i.value for i in at.info]


def test_no_training_images_or_no_test_images_is_one_sentence(lens_checkpoints, turned_folder, monkeypatch, fresh):
    import os
    flat = os.path.join(turned_folder[0], "test")                 # <class>/* only: all of it is the test split
    at = open_slices(lens_checkpoints, flat)
    if any(b.key == "slices_run" for b in at.button):
        button(at, "slices_run").click().run()
    assert texts(at).count("#### 1. ") == 1                       # the slices need no training images
    button(at, "slices_triage_btn").click().run()
    ok(at)
    said = [i.value for i in at.info if "verdicts need the training images" in i.value]
    assert len(said) == 1 and "**Why wrong:**" not in texts(at), [i.value for i in at.info]
    assert texts(at).count("#### 1. ") == 1                       # the cards stay

    monkeypatch.setenv("CNNLENS_CHECKPOINTS", lens_checkpoints["nodata_dir"])
    at = app()
    at.switch_page(PAGE).run()
    ok(at)
    said = [i.value for i in at.info if "needs the test images" in i.value]
    assert len(said) == 1 and said[0].startswith("**Finding the failure slices needs the test images.**"), said
    assert not any((b.key or "").startswith("slices_") for b in at.button)


def test_mixes_name_the_largest_classes_and_count_the_others():
    import failslices
    classes = [f"{k:03d} class" for k in range(1000)]            # ImageNet-sized: the text stays short
    pairs = [[512, 40], [7, 6], [999, 2], [3, 1], [4, 1]]
    text = failslices.mix(pairs, 52, 7, classes)
    assert text == "512 class 40 (76.9%), 007 class 6 (11.5%), 999 class 2 (3.8%) and 4 others", text
    assert failslices.mix([[1, 9]], 9, 1, classes) == "001 class 9 (100.0%)"
    assert failslices.mix([[1, 9], [2, 1], [3, 1], [4, 1]], 12, 4, classes).endswith(" and 1 other")
    records = {1: {"verdict": "ambiguous"}, 2: {"verdict": "label error"}, 3: {"verdict": "label error"}}
    assert list(failslices.verdict_mix([1, 2, 3, 4], records).items()) == [("label error", 2), ("ambiguous", 1)]
    assert [failslices.p_text(p) for p in (0.0031, 2.4e-7, 0.0)] == ["0.0031", "2e-7", "< 1e-300"]
