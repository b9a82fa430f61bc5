"""The Failure slices page's computations: cnnlib.diagnose.slices.find_slices on the penultimate features of the
test images (the test split's neighbour index of dashboard/diagnose.py: built once per checkpoint and data with
a progress bar, kept on disk, shared with the verdicts) and the test predictions the Errors page uses; each
slice's verdict mix from the triage verdicts when they exist (dashboard/verdicts.py); class mixes cut to the
largest few ("and 12 others") for many classes. cnnlib is imported inside each loader, so a test can
monkeypatch it."""
from __future__ import annotations

import os

import numpy as np
import streamlit as st

import diagnose
import testdata
import ui
from checkpoints import Ctx

MIX_TOP = 3                 # classes named in a slice's class mix; the rest are counted ("and 4 others")
_DONE: set = set()          # (checkpoint key, data key, source) whose slices are in the cache: shown at once


def config():
    """cnnlib's slice settings (SliceConfig: min_size, alpha, typical, ...)."""
    from cnnlib.diagnose import slices
    return slices.SliceConfig()


def _key(ctx: Ctx, preds: dict) -> tuple:
    return ctx.key, testdata.pixels_key(ctx), diagnose._source(ctx, preds)


@st.cache_data(show_spinner=False, max_entries=16)
def _model_key(ckpt_key: str, _model) -> str:
    from cnnlib.diagnose import neighbors
    return neighbors.model_key(_model)


def _index_on_disk(ctx: Ctx) -> bool:
    """Are the test images' features in cnnlib's disk cache already (diagnose.neighbour_index's entry, the one
    `cnnlib slices` and index_for_checkpoint(split="test") write)?"""
    from cnnlib.diagnose import features, neighbors
    try:
        folder, key = features.checkpoint_feature_key(ctx.meta, "test", ctx.data or None)
        name = neighbors.index_name(_model_key(ctx.key, ctx.model), key) + ".json"
        return os.path.isfile(os.path.join(folder, name))
    except Exception:  # noqa: BLE001 - not knowing means computing on request
        return False


def ready(ctx: Ctx, preds: dict) -> bool:
    """Can the slices be shown without reading every test image through the network (found before in this
    process, or the test features are in memory or on disk)?"""
    return _key(ctx, preds) in _DONE or (ctx.key, testdata.pixels_key(ctx), "test") in diagnose._INDEXES \
        or _index_on_disk(ctx)


@st.cache_data(show_spinner=False, max_entries=16)     # the index and predictions unhashed: keyed by their names
def _find(ckpt_key: str, data_key: str, source: str, _features, _preds: dict) -> list[dict]:
    from cnnlib.diagnose import slices
    return slices.find_slices(_features, _preds["targets"], _preds["preds"])


def find(ctx: Ctx, preds: dict, pixels) -> list[dict]:
    """cnnlib's failure slices of the test images, worst first (find_slices' records; no verdicts in them).
    The first time, the network reads every test image (a progress bar); then the features come from disk."""
    index = diagnose.neighbour_index(ctx, pixels, split="test")
    key = _key(ctx, preds)
    k = len(np.unique(np.asarray(preds["targets"])))
    slow = " With this many classes it takes minutes, once." if k > 100 else ""
    with ui.spinner(f"Grouping the {len(pixels[1]):,} test images the network sees alike (k-means within each of "
                    f"the {k:,} classes) and testing each group's error rate…{slow}"):
        found = _find(*key, index.features, preds)
    _DONE.add(key)
    return found


def model_error_rate(preds: dict) -> float:
    return float(np.mean(np.asarray(preds["targets"]) != np.asarray(preds["preds"])))


def mix(pairs, total: int, distinct: int, classes: list[str], top: int = MIX_TOP) -> str:
    """A class mix as text: the largest `top` classes with their counts (and share of `total`), then how many
    other classes there are ("cat 40 (80%), dog 6 and 3 others")."""
    shown = [f"{classes[int(c)] if int(c) < len(classes) else c} {int(n):,} ({ui.pct(int(n) / max(total, 1))})"
             for c, n in list(pairs)[:top]]
    rest = distinct - len(shown)
    text = ", ".join(shown)
    return text + (f" and {rest:,} other{'s' if rest > 1 else ''}" if rest > 0 else "")


def distinct(values, indices) -> int:
    """How many different classes `values` (targets or predictions) take on the images `indices`."""
    return int(len(np.unique(np.asarray(values)[np.asarray(indices, np.int64)])))


def verdict_mix(indices, records: dict) -> dict:
    """{verdict: count} of the slice's mistakes that have a triage verdict, as cnnlib's find_slices(verdicts=...)
    counts them; the most frequent first (ties: the verdict of the more typical image first)."""
    names = [records[int(i)]["verdict"] for i in indices if int(i) in records]
    return {v: names.count(v) for v in sorted(set(names), key=lambda v: (-names.count(v), names.index(v)))}


def p_text(p: float) -> str:
    """A p-value as people read it: 0.003, 2e-7, or "< 1e-300"."""
    if p <= 0:
        return "< 1e-300"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}".replace("e-0", "e-")


def table(found: list[dict], classes: list[str], preds: dict) -> list[dict]:
    """One row per slice, for the table and its CSV."""
    rows = []
    for s in found:
        rows.append({"rank": s["rank"], "images": s["size"], "wrong": s["errors"],
                     "error rate": round(s["error_rate"], 4), "excess": round(s["excess"], 4),
                     "p-value": float(f"{s['p_value']:.3g}"),
                     "classes": mix(s["classes"], s["size"], distinct(preds["targets"], s["indices"]), classes),
                     "predicted": mix(s["predicted"], s["size"], distinct(preds["preds"], s["indices"]), classes)})
    return rows
