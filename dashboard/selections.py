"""Tagged selections: sets of test images picked on one page (a confusion-matrix cell, an embedding selection,
the label-issue list, a disagreement list) kept under a name in this browser session, listed on the Selections
page and exported as CSV by cnnlib.diagnose.compare.selection_csv (index, file path for ImageFolder data, label,
prediction, confidence, score, tag). A tagged set keeps its CSV rows, so it survives switching checkpoints."""
from __future__ import annotations

import csv
import datetime
import io

import numpy as np
import streamlit as st

import diagnose
import ui
from checkpoints import Ctx

_STATE = "selections.sets"      # session state: {name: {"kind", "checkpoint", "count", "csv", "created"}}


def tagged() -> dict:
    """{name: {"kind", "checkpoint", "count", "indices", "csv" (bytes), "created"}} of this session."""
    return st.session_state.setdefault(_STATE, {})


def csv_for(ctx: Ctx, preds: dict, indices, scores=None, tag: str = "") -> bytes:
    """cnnlib.diagnose.compare.selection_csv of test images `indices` (whole-split `scores` or None)."""
    from cnnlib.diagnose import compare
    return compare.selection_csv(np.asarray(indices, np.int64), preds["targets"], preds["preds"], preds["probs"],
                                 ctx.classes, paths=diagnose.split_paths(ctx), scores=scores, tag=tag)


def rows(blob: bytes) -> list[dict]:
    """A selection CSV back as rows (for previews and tests)."""
    return list(csv.DictReader(io.StringIO(blob.decode("utf-8"))))


def add(name: str, kind: str, ctx: Ctx, preds: dict, indices, scores=None) -> None:
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    tagged()[name] = {"kind": kind, "checkpoint": ctx.label, "count": len(idx), "indices": idx,
                      "csv": csv_for(ctx, preds, idx, scores, tag=name),
                      "created": datetime.datetime.now().strftime("%H:%M:%S")}


def remove(name: str) -> None:
    tagged().pop(name, None)


def tag_box(ctx: Ctx, preds: dict, indices, prefix: str, kind: str, default_name: str, filename: str,
            scores=None) -> None:
    """One row under a list of images: a name, **Tag** (keeps the set for the Selections page) and a direct
    CSV download of the same rows. Widget keys: <prefix>_tag_name, <prefix>_tag, <prefix>_sel_csv."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    with st.container(key=f"{prefix}_tagbox"):
        c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        name = c1.text_input(f"Tag these {len(idx):,} images as", key=f"{prefix}_tag_name",
                             placeholder=default_name,
                             help="Keeps the set under this name for the Selections page (this browser session).")
        name = (name or default_name).strip()
        c2.button("Tag", key=f"{prefix}_tag", icon=":material/sell:", width="stretch", disabled=not len(idx),
                  on_click=_tag, args=(name, kind, ctx, preds, idx, scores))
        c3.download_button("CSV", lambda: csv_for(ctx, preds, idx, scores, tag=name), file_name=filename,
                           mime="text/csv", key=f"{prefix}_sel_csv", icon=":material/download:", on_click="ignore",
                           width="stretch", disabled=not len(idx))
        if name in tagged() and tagged()[name]["count"] == len(idx):
            st.caption(f"Tagged as **{name}**: see the Selections page.")
        problem = st.session_state.pop(f"{_STATE}.error", None)
        if problem:
            st.error(f"Could not tag the images: {problem}")


def _tag(name: str, kind: str, ctx: Ctx, preds: dict, idx, scores) -> None:
    try:
        add(name, kind, ctx, preds, idx, scores)
    except Exception as e:  # noqa: BLE001 - a callback must not end in a traceback
        st.session_state[f"{_STATE}.error"] = ui.one_sentence(str(e))
