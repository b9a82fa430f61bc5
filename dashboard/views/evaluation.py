"""Test-set evaluation: accuracy, confusion matrix (click a cell for its images), per-class scores, calibration."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import compute
import confusion
import report
import frame
import sample
import selections
import testdata
import ui

ctx = frame.begin(
    "How the model does on test images it never trained on. In the **confusion matrix** each row is the true "
    "class and each column the predicted one: the diagonal holds the correct answers, every other cell a "
    "specific mix-up — click one to see its images. The **reliability diagram** asks whether the model's "
    "confidence can be trusted: a well-calibrated model is right 80% of the time when it says 80%.")

pixels = testdata.test_pixels(ctx, notice=False)
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions (its training did not finish, or it was imported) and "
               "the test images are not on disk, so there is nothing to evaluate yet.")
    testdata.test_pixels(ctx, why="Evaluating this checkpoint")
    st.stop()
classes = ctx.classes
K = len(classes)

with ui.guard("drawing the summary metrics"):
    m = st.columns(5)
    m[0].metric("Top-1 accuracy", ui.pct(rep["accuracy"]), help="The most likely class is the true one.")
    m[1].metric(f"Top-{rep['top5_k']} accuracy", ui.pct(rep["top5_accuracy"]),
                help=f"The true class is among the {rep['top5_k']} most likely ones.")
    m[2].metric("Mean loss", f"{rep['mean_loss']:.3f}", help="Average cross-entropy of the true class.")
    m[3].metric("ECE", f"{rep['ece']:.3f}", help="Expected calibration error: the average gap between "
                "confidence and accuracy, weighted by how many images fall in each confidence bin. 0 is perfect.")
    m[4].metric("Test images", f"{rep['n']:,}")
    st.caption("Predictions stored in the checkpoint at the end of training." if preds["source"] == "stored"
               else "Predictions computed now on the test images on disk.")


def _cell_clicked():
    """Chart click -> the true/predicted selectboxes below (a callback runs before the page is drawn); a click
    on an overview block zooms in around that block pair's largest mix-up."""
    state = st.session_state.get("eval_cm")
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    if points:
        custom = points[0].get("customdata") or []
        if len(custom) >= 5:
            t, p, block = int(custom[2]), int(custom[3]), bool(custom[4])
            ui.remember("eval_true", ctx.classes[t])
            ui.remember("eval_pred", ctx.classes[p])
            if block:
                ui.remember("eval_view", "zoom")
        else:
            ui.remember("eval_true", points[0]["y"])
            ui.remember("eval_pred", points[0]["x"])
        st.session_state[_CLICKS] = st.session_state.get(_CLICKS, 0) + 1
        st.session_state[_SCROLL] = True                 # this run only: bring the cell's images into view


def _pair_picked():
    """A row of the most-confused table -> the true/predicted selectboxes."""
    rows = (st.session_state.get("eval_pairs") or {}).get("selection", {}).get("rows", [])
    pairs = st.session_state.get(_PAIRS) or []
    if rows and rows[0] < len(pairs):
        ui.remember("eval_true", pairs[rows[0]]["true class"])
        ui.remember("eval_pred", pairs[rows[0]]["predicted as"])
        ui.remember("eval_view", "zoom")


_CLICKS, _SCROLL = "evaluation.cell_clicks", "evaluation.scroll"     # session state: the scroll's token; pending
_WINDOW, _PAIRS = "evaluation.window", "evaluation.pairs"            # the zoom's first row/column; the pair table
cm, cmn = np.array(rep["confusion_matrix"]), np.array(rep["confusion_normalized"])
worst = rep["most_confused"][0] if rep.get("most_confused") else {"true": 0, "pred": 0}
many = K > confusion.OVERVIEW_ABOVE

with ui.guard("drawing the confusion matrix"):
    st.subheader("Confusion matrix")
    c1, c2, c3 = st.columns([2, 3, 2])
    mode = c1.radio("Show", ["Counts", "Normalized by row"], horizontal=True, **ui.kept("eval_norm", "Counts"),
                    help="Normalized: each row sums to 100%, so the diagonal is each class's recall.")
    normalized = mode != "Counts"
    if not many:
        fig = confusion.cells_figure(cm, cmn, classes, np.arange(K), np.arange(K), normalized)
        fig.update_xaxes(title_text="predicted class")
    else:
        order = compute.class_order(ctx, cm)
        position = np.empty(K, np.int64)
        position[order] = np.arange(K)
        views = ["overview", "zoom"]
        size, nb = confusion.blocks(K)
        side = min(K, confusion.SIDE)
        if K > confusion.SIDE:
            view = c2.radio("Matrix", views, horizontal=True, **ui.kept("eval_view", "overview", views),
                            format_func={"overview": f"overview: all {K:,} classes in {nb} blocks",
                                         "zoom": f"zoom: {side} × {side} classes"}.get,
                            help="The classes are ordered so that the ones the model confuses sit side by side. The "
                                 f"overview sums blocks of {size} neighbouring classes; click a block to zoom in.")
        else:
            view = "zoom"               # every cell fits: the whole matrix, in similarity order
        mistakes = c3.checkbox("Mistakes only", **ui.kept("eval_mistakes", True),
                               help="Leave out the correct answers (the diagonal), so the colours show the mix-ups.")
        t_now = classes.index(ui.value("eval_true", classes[worst["true"]]))
        p_now = classes.index(ui.value("eval_pred", classes[worst["pred"]]))
        if view == "overview":
            ov = confusion.overview(cm, order, mistakes)
            fig = confusion.overview_figure(ov, classes, order, normalized)
            st.caption(f"{K:,} classes, ordered by similarity (clustered by whom they are confused with) and summed "
                       f"into {nb} × {nb} blocks of {size}: the browser gets {nb * nb:,} cells, not {K * K:,}. "
                       "Hover a block for its classes; click it to zoom in on its largest mix-up; drag to zoom the "
                       "picture. The CSV below has every cell.")
        else:
            old = st.session_state.get(_WINDOW, (None, None, None))
            same = old[0] == ctx.key
            r0 = confusion.window(K, int(position[t_now]), old[1] if same else None)
            q0 = confusion.window(K, int(position[p_now]), old[2] if same else None)
            st.session_state[_WINDOW] = (ctx.key, r0, q0)
            fig = confusion.cells_figure(cm, cmn, classes, order[r0:r0 + side], order[q0:q0 + side], normalized,
                                         mistakes_only=mistakes, mark=(t_now, p_now))
            st.caption(f"All {K} classes, ordered by similarity (clustered by whom they are confused with), "
                       f"around **{classes[t_now]}** → **{classes[p_now]}** (outlined in red)." if K <= side else
                       f"True classes {r0 + 1}–{r0 + side} and predicted classes {q0 + 1}–{q0 + side} of {K:,} in "
                       f"similarity order, around **{classes[t_now]}** → **{classes[p_now]}** (outlined in red; "
                       "choose others below, or in the most confused pairs): the browser gets "
                       f"{side * side:,} cells, not {K * K:,}.")
    ui.show_chart(fig, key="eval_cm", filename="confusion-matrix", on_select=_cell_clicked,
                  selection_mode=("points",))
    st.download_button("Download the matrix (CSV)", lambda: ui.csv_bytes(
        [{"true class": c, **{p: int(v) for p, v in zip(classes, row)}} for c, row in zip(classes, cm.tolist())]),
        file_name="confusion-matrix.csv", mime="text/csv", key="eval_cm_csv", icon=":material/download:",
        on_click="ignore")      # written only when clicked: K x K numbers

if many:
    with ui.guard("listing the most confused pairs"):
        pairs = confusion.most_confused(cm, classes)
        st.session_state[_PAIRS] = pairs
        st.markdown(f"**The {len(pairs)} most confused pairs** (sortable; pick a row to see its images below):")
        st.dataframe(pairs, hide_index=True, width="stretch", height=280, key="eval_pairs", on_select=_pair_picked,
                     selection_mode="single-row",
                     column_config={"share of the true class": st.column_config.NumberColumn(format="%.1f%%")})

with ui.guard("showing the images of a cell"):
    if st.session_state.pop(_SCROLL, False):      # a clicked cell's images start far below the matrix
        ui.scroll_into_view("eval_cell_block", token=st.session_state[_CLICKS], block="start")
    with st.container(key="eval_cell_block"):
        st.markdown("**Images behind one cell** — click a cell above, or choose it here "
                    "(the most common mix-up is preselected):")
        c1, c2, c3 = st.columns([2, 2, 1])
        t_name = c1.selectbox("True class", classes, **ui.kept("eval_true", classes[worst["true"]], classes))
        p_name = c2.selectbox("Predicted class", classes, **ui.kept("eval_pred", classes[worst["pred"]], classes))
        limit = c3.number_input("Show at most", 8, 200, step=8, **ui.kept("eval_limit", 32))
        t, p = classes.index(t_name), classes.index(p_name)
        res = compute.query_cell(preds, t, p, sort="confidence", limit=int(limit),
                                 images=pixels[0] if pixels is not None else None)
        verdict = "correct" if t == p else "mistakes"
        st.markdown(f"{res['count']} test images of **{t_name}** predicted as **{p_name}** ({verdict}), "
                    "most confident first.")
        if res["count"] and res["images"] is not None:
            caps = [f"#{i} · {ui.pct(c)}" for i, c in zip(res["indices"].tolist(), res["confidence"].tolist())]
            sample.grid(res["images"], res["indices"], caps, key="eval_cell_grid", prefix="eval_cell")
        elif res["count"]:
            testdata.test_pixels(ctx, why="Showing the images of a cell")
            st.dataframe([{"index": int(i), "confidence": ui.pct(c)} for i, c in zip(res["indices"], res["confidence"])],
                         hide_index=True, key="eval_cell_table")
        if res["count"]:
            cell = compute.query_cell(preds, t, p, sort="confidence")["indices"]      # the whole cell, not only shown
            selections.tag_box(ctx, preds, cell, "eval_cell", "confusion-matrix cell", f"{t_name} as {p_name}",
                               f"cell-{t_name}-as-{p_name}.csv")

with ui.guard("drawing the per-class table"):
    st.subheader("Per-class precision, recall and F1")
    st.markdown("**Precision**: of the images predicted as this class, the share that really are. "
                "**Recall**: of this class's images, the share found. **F1** balances both.")
    off = cm.copy()
    np.fill_diagonal(off, -1)
    mixed = off.argmax(1)
    per_class = [{"class": r["class"], "precision": 100 * r["precision"], "recall": 100 * r["recall"],
                  "F1": 100 * r["f1"], "support": r["support"],
                  "most often mistaken for": classes[mixed[i]] if off[i, mixed[i]] > 0 else "—"}
                 for i, r in enumerate(rep["per_class"])]
    per_class.append({"class": "macro average", "precision": 100 * rep["macro"]["precision"],
                      "recall": 100 * rep["macro"]["recall"], "F1": 100 * rep["macro"]["f1"], "support": rep["n"],
                      "most often mistaken for": ""})
    shown = per_class
    if K > 10:
        find = st.text_input("Find a class", placeholder="part of a class name", key="eval_find",
                             help="Filters the table; click a column header to sort it.")
        if find.strip():
            shown = [r for r in per_class[:-1] if find.strip().lower() in r["class"].lower()]
            st.caption(f"{len(shown):,} of {K:,} classes contain “{find.strip()}”.")
    st.dataframe(shown, hide_index=True, width="stretch", key="eval_per_class",
                 column_config={k: st.column_config.ProgressColumn(k, min_value=0.0, max_value=100.0,
                                                                   format="%.1f%%")
                                for k in ("precision", "recall", "F1")})
    ui.download_csv(per_class, "per-class-metrics.csv", key="eval_per_class_csv")

with ui.guard("drawing the reliability diagram"):
    st.subheader(f"Calibration (ECE {rep['ece']:.3f})")
    cal = rep["calibration"]
    centers = [(lo + hi) / 2 for lo, hi in zip(cal["bin_lower"], cal["bin_upper"])]
    width = cal["bin_upper"][0] - cal["bin_lower"][0]
    filled = [i for i, n in enumerate(cal["count"]) if n]
    rel = go.Figure()
    rel.add_trace(go.Bar(x=[centers[i] for i in filled], y=[cal["accuracy"][i] for i in filled], width=width * 0.95,
                         name="accuracy in the bin", marker_color="#1f77b4",
                         customdata=[[cal["count"][i], cal["confidence"][i]] for i in filled],
                         hovertemplate=f"confidence %{{customdata[1]:{ui.PCT_D3}}}<br>accuracy %{{y:{ui.PCT_D3}}}"
                                       "<br>%{customdata[0]} images<extra></extra>"))
    rel.add_trace(go.Scatter(x=[centers[i] for i in filled], y=[cal["confidence"][i] for i in filled],
                             mode="markers", name="mean confidence in the bin",
                             marker=dict(color="#d62728", symbol="line-ew-open", size=18, line=dict(width=3))))
    rel.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="gray", dash="dash")))
    rel.update_layout(height=400, xaxis=dict(title="confidence (probability of the predicted class)", range=[0, 1]),
                      yaxis=dict(title="accuracy", range=[0, 1]), margin=dict(t=10, b=10),
                      legend=dict(orientation="h", y=1.12))
    left, right = st.columns([3, 2])
    with left:
        ui.show_chart(rel, key="eval_reliability", filename="reliability-diagram")
    with right:
        st.markdown("Bars below the dashed diagonal mean **over-confidence** (the model says 90% but is right less "
                    "often); bars above it mean under-confidence. Red marks show each bin's average confidence; "
                    "the gap to the bar top is what ECE averages.")
        cal_rows = [{"bin": f"({cal['bin_lower'][i]:.2f}, {cal['bin_upper'][i]:.2f}]", "images": cal["count"][i],
                     "mean confidence": cal["confidence"][i], "accuracy": cal["accuracy"][i]}
                    for i in range(len(cal["count"]))]
        ui.download_csv(cal_rows, "calibration-bins.csv", key="eval_cal_csv")

st.subheader("Share these results")
st.markdown("One HTML file for a colleague or a pull request: the summary card, curves, this confusion matrix, "
            "per-class scores, calibration, the most confident errors with their saliency and verdicts, label "
            "issues and robustness. It opens in any browser with no network and no server "
            "(the same file as `python -m cnnlib report CKPT --out FILE.html`).")
if st.button("Write the report", key="eval_report_build", icon=":material/description:"):
    st.session_state["eval_report_for"] = (ctx.key, ctx.data)
if st.session_state.get("eval_report_for") == (ctx.key, ctx.data):
    page = ui.checked("writing the report", report.report_bytes, ctx)
    if page is not None:
        st.download_button("Download the report", page, report.file_name(ctx), "text/html",
                           key="eval_report_download", icon=":material/download:")
        st.caption(f"{len(page) / 1024:,.0f} KiB, self-contained.")
