"""Two checkpoints on the same test images, for the Two models page: which checkpoints can be compared with A
(tested on A's test images first), B looking at A's test images, and the cached comparison (cnnlib.diagnose.compare:
agreement table, McNemar, per-class differences) on the stored predictions or on predictions computed from A's
pixels. cnnlib is imported inside the loader as a module, so a test can monkeypatch it."""
from __future__ import annotations

import numpy as np
import streamlit as st

import adapters
import compute
import testdata
from checkpoints import Ctx
from cnnlib.errors import CNNLibError


@st.cache_data(show_spinner=False, max_entries=16)
def _compare(key_a: str, key_b: str, source: str, classes: tuple, _meta_a, _meta_b, _pa, _pb) -> dict:
    from cnnlib.diagnose import compare
    if source == "stored":
        return compare.compare_checkpoints(_meta_a, _meta_b)
    return compare.compare(_pa["targets"], _pa["preds"], _pb["preds"], list(classes))


def on_data_of(b: Ctx, a: Ctx) -> Ctx:
    """Checkpoint b looking at a's test images (a's Data folder, else the dataset a records)."""
    import copy
    try:
        source = a.data or adapters.checkpoint_data_spec(a.meta, a.data).source
    except CNNLibError:
        source = a.data
    out = copy.copy(b)
    out.data = source
    return out


def test_images(meta: dict) -> tuple | None:
    """What names a checkpoint's test images: its dataset, their preprocessing and input shape (and, for a
    test split carved from train/, the seed and fraction that carved it); None when it records no dataset."""
    import os
    try:
        spec = adapters.checkpoint_data_spec(meta)
    except CNNLibError:
        return None
    carved = spec.source not in adapters.named_datasets() and not os.path.isdir(os.path.join(spec.source, "test"))
    return (spec.source, spec.image_size, spec.resize, tuple(meta.get("input_shape") or ()),
            (spec.split_seed, spec.test_fraction) if carved else None)


def _test_images_of(choice: str) -> tuple | None:
    import checkpoints
    try:
        return test_images(checkpoints.open_choice(choice).meta)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not comparable; choosing it says why
        return None


def comparable_first(a: Ctx, choices: list[str]) -> tuple[list[str], int]:
    """(choices with those tested on A's test images first, each group in its order; how many those are)."""
    mine = test_images(a.meta)
    same = [c for c in choices if mine is not None and _test_images_of(c) == mine]
    return same + [c for c in choices if c not in same], len(same)


def comparison(a: Ctx, b: Ctx, pixels) -> tuple[dict, dict, dict]:
    """(cnnlib.diagnose.compare result, predictions of a, predictions of b) on the same test images: the stored
    predictions when both checkpoints have them and were tested on the same images, else both computed from A's
    test pixels (B evaluated on A's test images)."""
    stored_a, stored_b = compute.evaluation(a, None)[0], compute.evaluation(b, None)[0]
    same = test_images(a.meta) is not None and test_images(a.meta) == test_images(b.meta)
    if stored_a is not None and stored_b is not None and same and not a.data \
            and np.array_equal(stored_a["targets"], stored_b["targets"]):
        return _compare(a.key, b.key, "stored", tuple(a.classes), a.meta, b.meta, None, None), stored_a, stored_b
    if pixels is None:
        raise CNNLibError(("B was tested on other images than A, and A's" if not same else "Comparing needs stored "
                           "test predictions in both checkpoints or A's") + " test images are not on disk to "
                          "evaluate both on them: type their folder into Data folder")
    shape_a, shape_b = (tuple(int(v) for v in m.get("input_shape") or ()) for m in (a.meta, b.meta))
    if shape_a != shape_b:
        raise CNNLibError(f"B takes {'x'.join(map(str, shape_b))} images and A's test images are "
                          f"{'x'.join(map(str, shape_a))} (C x H x W), so the two cannot be compared on the same pixels")
    key = "pixels:" + testdata.pixels_key(a)                 # B's predictions on A's pixels are keyed by A's data
    pa, pb = compute.evaluation(a, pixels)[0], compute.evaluation(b, pixels, key)[0]
    return _compare(a.key, b.key, key, tuple(a.classes), None, None, pa, pb), pa, pb
