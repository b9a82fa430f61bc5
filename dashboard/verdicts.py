"""Why each mistake was made, for the Errors page and its Explain panel: triage's verdicts for every
misclassified test image (cnnlib.diagnose.triage, on the neighbour indexes of dashboard/diagnose.py, worked out on
request and then shown to every session at once) and the most influential training images of one prediction
(cnnlib.explain.influence, TracIn on the final layer; the training features computed once per checkpoint, kept
on disk). cnnlib is imported inside each loader as a module, so a test can monkeypatch it."""
from __future__ import annotations


import numpy as np
import streamlit as st

import diagnose
import testdata
import ui
from checkpoints import Ctx


_TRIAGED: set = set()       # (checkpoint key, data key, source) whose verdicts are in the cache: shown at once


@st.cache_data(show_spinner=False, max_entries=8)      # the indexes unhashed: keyed by checkpoint and data
def _triage(ckpt_key: str, data_key: str, source: str, _meta: dict, _preds: dict, _test, _train) -> dict:
    from cnnlib.diagnose import triage
    records = triage.triage(_meta, _preds["probs"], _preds["targets"], _test.features, _train.features,
                            _train.labels, preds=_preds["preds"])
    return {int(r["index"]): r for r in records}


def triage_ready(ctx: Ctx, preds: dict) -> bool:
    """Have this checkpoint's verdicts been worked out already (by any session)?"""
    return (ctx.key, testdata.pixels_key(ctx), diagnose._source(ctx, preds)) in _TRIAGED


def triage(ctx: Ctx, preds: dict, pixels) -> dict | None:
    """cnnlib.diagnose.triage's verdicts for the misclassified test images, {test index: record}, from the
    penultimate features of the test and training images (the neighbour indexes, built once with a bar);
    None, with one sentence, when the training images are not on disk."""
    train = diagnose.train_pixels(ctx, notice=False)
    if train is None:
        st.info("**The verdicts need the training images**, and they are not on disk for this checkpoint (or this "
                "data folder holds only a test set): the gallery works without them.", icon=":material/info:")
        return None
    if pixels is None or len(pixels[1]) != len(preds["targets"]):
        st.info("**The verdicts need the test images** the predictions were made on, and they are not on disk.",
                icon=":material/image_not_supported:")
        return None
    test_index = diagnose.neighbour_index(ctx, pixels, split="test")
    train_index = diagnose.neighbour_index(ctx, train)
    key = (ctx.key, testdata.pixels_key(ctx), diagnose._source(ctx, preds))
    with ui.spinner("Weighing the evidence for every mistake…"):
        out = _triage(*key, ctx.meta, preds, test_index, train_index)
    _TRIAGED.add(key)
    return out


def _influence_features(ctx: Ctx, train) -> np.ndarray:
    """The training images' unnormalised penultimate features (TracIn's input): the checkpoint's one feature
    pass of its training split (warmup.split_features: memory, disk, or one pass with a bar), shared by sessions."""
    import warmup
    return warmup.split_features(ctx, "train", train)["features"]


@st.cache_data(show_spinner=False, max_entries=64)
def _influence(ckpt_key: str, data_key: str, image_key: str, k: int, _model, _x01, _y, _f) -> dict:
    from cnnlib.explain import influence
    return influence.proponents_opponents(_model, _x01, train_y=_y, k=k, features=_f)


def influence(ctx: Ctx, pick, k: int = 6) -> dict | None:
    """TracIn's proponents and opponents (cnnlib.explain.influence) of a pick's prediction, with their pixels;
    None (one sentence) without training images; CNNLibError for a head that is not a final Linear layer."""
    train = diagnose.train_pixels(ctx, notice=False)
    if train is None:
        st.info("**The most influential training images need the training images**, and they are not on disk "
                "for this checkpoint (or this data folder holds only a test set).", icon=":material/info:")
        return None
    f = _influence_features(ctx, train)
    with ui.spinner("Scoring every training image's influence (TracIn)…"):
        res = _influence(ctx.key, testdata.pixels_key(ctx), pick.key, int(k), ctx.model, pick.x01, train[1], f)
    return {**res, **{w: {**res[w], "images": train[0][res[w]["indices"]]} for w in ("proponents", "opponents")}}
