"""Test-set evaluation: accuracy, confusion matrix (click a cell for its images), per-class scores, calibration."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import compute
import report
import frame
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
    """Chart click -> the true/predicted selectboxes below (a callback runs before the page is drawn)."""
    state = st.session_state.get("eval_cm")
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    if points:
        ui.remember("eval_true", points[0]["y"])
        ui.remember("eval_pred", points[0]["x"])
        st.session_state[_CLICKS] = st.session_state.get(_CLICKS, 0) + 1
        st.session_state[_SCROLL] = True                 # this run only: bring the cell's images into view


_CLICKS, _SCROLL = "evaluation.cell_clicks", "evaluation.scroll"     # session state: the scroll's token; pending


with ui.guard("drawing the confusion matrix"):
    st.subheader("Confusion matrix")
    cm, cmn = np.array(rep["confusion_matrix"]), np.array(rep["confusion_normalized"])
    mode = st.radio("Show", ["Counts", "Normalized by row"], horizontal=True, **ui.kept("eval_norm", "Counts"),
                    help="Normalized: each row sums to 100%, so the diagonal is each class's recall.")
    normalized = mode != "Counts"
    z = cmn if normalized else cm
    text = [[(ui.pct(v) if normalized else f"{v:d}") for v in row] for row in z.tolist()]
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=classes, colorscale="Blues", text=text,
                               texttemplate="%{text}" if K <= 20 else None, hoverinfo="skip",
                               zmin=0, zmax=1 if normalized else None,
                               colorbar=dict(title="share" if normalized else "images")))
    cell = max(6, min(60, int(430 / K)))
    fig.add_trace(go.Scatter(   # one invisible square per cell: plotly reports clicks on these points
        x=[classes[j] for i in range(K) for j in range(K)], y=[classes[i] for i in range(K) for j in range(K)],
        customdata=[[int(cm[i, j]), float(cmn[i, j])] for i in range(K) for j in range(K)],
        mode="markers", showlegend=False,
        marker=dict(symbol="square", size=int(cell * 0.9), color="rgba(0,0,0,0)"),
        selected=dict(marker=dict(color="rgba(255,165,0,0.45)")), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="true <b>%{y}</b>, predicted <b>%{x}</b><br>%{customdata[0]} images "
                      f"(%{{customdata[1]:{ui.PCT_D3}}} of the row)<extra>click to see them</extra>"))
    fig.update_xaxes(title_text="predicted class", tickangle=-45 if K > 6 else 0, range=[-0.5, K - 0.5],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="true class", range=[K - 0.5, -0.5], showgrid=False, zeroline=False)
    fig.update_layout(height=max(380, min(900, 40 * K + 180)), margin=dict(t=10, b=10, l=10, r=10),
                      clickmode="event+select", plot_bgcolor="rgba(0,0,0,0)")
    ui.show_chart(fig, key="eval_cm", filename="confusion-matrix", on_select=_cell_clicked,
                  selection_mode=("points",))
    cm_rows = [{"true class": c, **{p: int(v) for p, v in zip(classes, row)}} for c, row in zip(classes, cm.tolist())]
    ui.download_csv(cm_rows, "confusion-matrix.csv", key="eval_cm_csv", label="Download the matrix (CSV)")

with ui.guard("showing the images of a cell"):
    if st.session_state.pop(_SCROLL, False):      # a clicked cell's images start far below the matrix
        ui.scroll_into_view("eval_cell_block", token=st.session_state[_CLICKS], block="start")
    with st.container(key="eval_cell_block"):
        worst = rep["most_confused"][0] if rep.get("most_confused") else {"true": 0, "pred": 0}
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
            ui.image_grid(res["images"], caps, key="eval_cell_grid")
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
    per_class = [{"class": r["class"], "precision": 100 * r["precision"], "recall": 100 * r["recall"],
                  "F1": 100 * r["f1"], "support": r["support"]} for r in rep["per_class"]]
    per_class.append({"class": "macro average", "precision": 100 * rep["macro"]["precision"],
                      "recall": 100 * rep["macro"]["recall"], "F1": 100 * rep["macro"]["f1"], "support": rep["n"]})
    st.dataframe(per_class, hide_index=True, width="stretch", key="eval_per_class",
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
