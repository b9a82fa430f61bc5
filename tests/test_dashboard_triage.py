"""Issue 21 in the dashboard, with AppTest on the tiny checkpoints: the triage verdicts under the Errors gallery
and their filter, the most influential training images in the Explain panel, the Robustness page, and the one
sentence each says when the training images are not there."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from test_dashboard_support import _env, app, arr, block, chart, images_in, ok, texts, widget  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")
VERDICTS = ("label error", "ambiguous", "out of distribution", "model error")


def go(at, path: str):
    at.switch_page(path).run()
    ok(at)
    return at


def table(at, column: str):
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a {column!r} column"
    return found[0]


def button(at, key: str):
    return next(b for b in at.button if b.key == key)


def expected_verdicts(path: str) -> dict:
    from cnnlib.diagnose.triage import triage_for_checkpoint
    from cnnlib.inference import load_model
    return {r["index"]: r for r in triage_for_checkpoint(load_model(path))["records"]}


def test_errors_find_out_why_shows_each_verdict_and_filters_by_it(lens_checkpoints):
    at = go(app(), "views/errors.py")
    assert not any("ambiguous (" in str(o) for w in at.multiselect for o in w.options)   # nothing before the press
    button(at, "err_triage_btn").click().run()
    ok(at)
    want = expected_verdicts(lens_checkpoints["wrong"])          # cnnlib's rule on the same checkpoint
    assert want, "the fixture's wrong.pt makes mistakes"
    rows = table(at, "verdict")
    for _, row in rows.iterrows():
        assert row["verdict"] == want[int(row["index"])]["verdict"]
        assert row["verdict confidence"] == pytest.approx(want[int(row["index"])]["confidence"])
    cell_text = texts(at)
    assert any(re.search(rf"badge\[{v}\] \d+%", cell_text) for v in VERDICTS), cell_text[:500]
    assert "nearest are" in cell_text or "farther from training" in cell_text \
        or "vs" in cell_text

    counts = {v: sum(r["verdict"] == v for r in want.values()) for v in VERDICTS}
    one = max(counts, key=counts.get)
    widget(at, "err_verdicts").set_value([one]).run()
    ok(at)
    rows = table(at, "verdict")
    assert set(rows["verdict"]) == {one}
    assert f"**{counts[one]}** misclassified images match" in texts(at)
    assert len(images_in(block(at, "err_gallery"))) == min(counts[one], 24)
    others = [v for v in VERDICTS if v != one]                    # the rest: often none at all on tiny data
    widget(at, "err_verdicts").set_value(others).run()
    ok(at)
    rest = sum(counts[v] for v in others)
    assert f"**{rest}** misclassified images match" in texts(at)
    assert len(images_in(block(at, "err_gallery"))) == min(rest, 24)


def test_influence_button_shows_proponents_and_opponents(lens_checkpoints):
    at = go(app(), "views/errors.py")
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    assert not images_in(block(at, "err_influence"))              # on request only
    button(at, "err_influence_btn").click().run()
    ok(at)
    caps = [c for _, c in images_in(block(at, "err_influence"))]
    assert len(caps) == 12, caps                                   # 6 proponents, then 6 opponents
    scores = [0.0 if c.endswith("≈ 0") else float(c.rsplit(" · ", 1)[1].replace(",", "")) for c in caps]
    assert all(re.fullmatch(r"\w+ · ([+-][\d,.]+|≈ 0)", c) for c in caps), caps     # signed, no exponent
    assert min(scores[:6]) >= max(scores[6:])
    assert "proponents" in texts(at) and "opponents" in texts(at)


def test_robustness_page_runs_a_tiny_sample_and_loads_it_again_from_the_cache(lens_checkpoints):
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.robustness import robustness
    from cnnlib.inference import load_model
    at = go(app(), "views/robustness.py")
    assert "Press **Run**" in texts(at) or chart_missing(at)
    widget(at, "rob_images").set_value(8).run()
    widget(at, "rob_corruptions").set_value(["gaussian_noise", "brightness"]).run()
    button(at, "rob_run").click().run()
    ok(at)
    spec = chart(at, "rob_heatmap")
    z = arr(spec["data"][0]["z"]).astype(float)
    assert z.shape == (2, 5)
    model = load_model(lens_checkpoints["wrong"])
    x, y = load_checkpoint_split(model.meta, "test")
    ref = robustness(model, x, y, corruptions=["gaussian_noise", "brightness"], images=8)
    assert np.allclose(z, [ref["accuracy"]["gaussian_noise"], ref["accuracy"]["brightness"]])
    assert chart(at, "rob_per_class")["data"][0]["y"] == list(model.meta["classes"])

    import robust
    robust._RESULTS.clear()                                       # as after a restart: only cnnlib's disk cache
    again = go(app(), "views/robustness.py")                      # another session: cached, no Run needed
    widget(again, "rob_images").set_value(8).run()
    widget(again, "rob_corruptions").set_value(["gaussian_noise", "brightness"]).run()
    ok(again)
    assert np.allclose(arr(chart(again, "rob_heatmap")["data"][0]["z"]).astype(float), z)


def chart_missing(at) -> bool:
    try:
        chart(at, "rob_heatmap")
    except AssertionError:
        return True
    return False


def test_a_folder_without_training_images_says_so_and_keeps_the_gallery(tmp_path):
    from conftest import write_image_folder
    flat = os.path.join(write_image_folder(tmp_path / "flat", n_train=8, n_test=16), "test")   # <class>/*: all test
    at = app()
    widget(at, "side_data").set_value(flat).run()
    ok(at)
    go(at, "views/errors.py")
    button(at, "err_triage_btn").click().run()
    ok(at)
    assert any("verdicts need the training images" in i.value for i in at.info), [i.value for i in at.info]
    assert images_in(block(at, "err_gallery"))                    # the gallery still works
    next(b for b in at.button if b.label == "Explain").click().run()
    ok(at)
    button(at, "err_influence_btn").click().run()
    ok(at)
    assert any("influential training images need the training images" in i.value for i in at.info)


def test_a_head_influence_cannot_follow_gets_one_sentence(monkeypatch):
    import streamlit as st

    from cnnlib.errors import CNNLibError
    from cnnlib.explain import influence

    def refuse(*a, **kw):
        raise CNNLibError("this network's logits are not its last Linear layer's output (times a constant), so "
                          "TracIn on the final layer does not apply to it")
    monkeypatch.setattr(influence, "proponents_opponents", refuse)
    st.cache_data.clear()                                         # no earlier answer for the same image
    at = go(app(), "views/errors.py")
    next(b for b in at.button if b.label == "Explain").click().run()
    button(at, "err_influence_btn").click().run()
    ok(at)                                                        # no st.error, no exception
    said = [i.value for i in at.info if "TracIn on the final layer does not apply" in i.value]
    assert said and said[0].startswith("This network's logits") and "\n" not in said[0]
    assert not images_in(block(at, "err_influence"))
    assert images_in(block(at, "err_neighbours"))                 # the rest of the panel stays
