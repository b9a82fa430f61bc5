"""Tagged selections: sets of test images picked on one page (a confusion-matrix cell, an embedding selection,
the label-issue list, a disagreement list) kept under a name in this browser session, listed on the Selections
page and exported as CSV by cnnlib.diagnose.compare.selection_csv (index, file path for ImageFolder data, label,
prediction, confidence, score, tag). A tagged set keeps its CSV rows, so it survives switching checkpoints.
Also the images tagged one by one on the One image page (saved beside the checkpoint: dashboard/sample.py), and
`page_of`, the paging of a selection's gallery."""
from __future__ import annotations

import csv
import datetime
import io

import numpy as np
import streamlit as st

import compute
import diagnose
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

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


def image_tags(ctx: Ctx | None) -> int:
    """The open checkpoint's images tagged one by one (its tags file): a table whose row opens that image on the
    One image page, and a CSV; nothing when there are none (or for an uploaded checkpoint). Returns their count."""
    import sample
    if ctx is None or sample.checkpoint_file(ctx) is None:
        return 0
    try:
        found = sample.tagged(ctx)
    except CNNLibError as e:
        st.error(ui.capitalised(ui.one_sentence(str(e))))
        return 0
    if not found:
        return 0
    st.subheader(f"Images tagged one by one ({len(found):,}, {ctx.label})")
    rows = [{"index": i, "label": e.get("label") or "", "tag": e["tag"], "file": e.get("path") or "",
             "saved (UTC)": (e.get("updated") or "")[:16].replace("T", " ")} for i, e in sorted(found.items())]
    event = st.dataframe(rows, hide_index=True, width="stretch", key="sel_image_tags", on_select="rerun",
                         selection_mode="single-row")
    st.caption("Kept in the checkpoint's tags file beside it; pick a row to open that image.")
    ui.download_csv(rows, "image-tags.csv", key="sel_image_tags_csv")
    picked = (event or {}).get("selection", {}).get("rows", []) if event else []
    if picked and picked[0] < len(rows):
        sample.go_to(rows[picked[0]]["index"])
    return len(found)


def _tag(name: str, kind: str, ctx: Ctx, preds: dict, idx, scores) -> None:
    try:
        add(name, kind, ctx, preds, idx, scores)
    except Exception as e:  # noqa: BLE001 - a callback must not end in a traceback
        st.session_state[f"{_STATE}.error"] = ui.one_sentence(str(e))


def page_of(ordered, column, prefix: str) -> np.ndarray:
    """One page (compute.SELECTION_PAGE images) of the test indices `ordered`, chosen by a page number in
    `column` (key <prefix>_page), with a caption saying which images it holds."""
    size = compute.SELECTION_PAGE
    pages = max(1, -(-len(ordered) // size))
    page = int(column.number_input(f"Page (of {pages})", 1, pages, **ui.kept(f"{prefix}_page", 1, bounds=(1, pages))))
    part = ordered[(page - 1) * size: page * size]
    st.caption(f"Images {(page - 1) * size + 1}–{(page - 1) * size + len(part)} of {len(ordered):,}, {size} per page.")
    return part
