"""The test set as a 2-D map of the network's penultimate features (PCA), coloured by class; a selection is
broken down by class and paged through in full."""
import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import compute
import frame
import testdata
import ui

ctx = frame.begin(
    "Just before the final scores the network describes every image by a long vector of features. Squashing "
    "those vectors to two dimensions (PCA) gives a map: images the network finds similar land close together. "
    "Well-separated colour clouds mean easy classes; ✕ marks misclassified images, usually in the border zones. "
    "Hover a point for its prediction; click one (or pick the lasso or box in the chart's toolbar and circle "
    "many) to see what you selected, class by class, and page through its images.")
pixels = testdata.test_pixels(ctx, why="The embedding map")
if pixels is None:
    st.stop()
classes = ctx.classes

with ui.guard("projecting the test set"):
    n_total = len(pixels[1])
    sizes = sorted({n for n in (500, 1000, 2000, 5000) if n < n_total} | {n_total})
    c0, c1, c2 = st.columns([2, 3, 2])
    if len(sizes) > 1:
        n = c0.select_slider("Test images projected", sizes, help="A fixed random sample; all of them takes longer.",
                             format_func=lambda v: f"all {v:,}" if v == n_total else f"{v:,}",
                             **ui.kept("emb_n", min(compute.EMBED_DEFAULT, n_total), sizes))
    else:
        n = n_total
    emb = compute.embedding(ctx, pixels, n)
    preds, _ = compute.evaluation(ctx, pixels)
    index, labels, pred, xy = emb["indices"], emb["labels"], emb["preds"], emb["xy"]
    conf = preds["probs"][index, pred] if preds is not None else np.full(len(pred), np.nan)
    shown = c1.multiselect("Classes", classes, placeholder="all classes", **ui.kept("emb_classes", [], classes))
    only_wrong = c2.checkbox("Only misclassified images", **ui.kept("emb_wrong", False))
    keep = np.ones(len(labels), bool)
    if shown:
        keep &= np.isin(labels, [classes.index(c) for c in shown])
    if only_wrong:
        keep &= labels != pred
    palette = ui.class_palette(len(classes))
    trace = go.Scatter if keep.sum() <= 3000 else go.Scattergl    # WebGL only where SVG would get slow
    fig = go.Figure()
    trace_index = []                  # per trace: the test index of each of its points (for selections)
    for k, name in enumerate(classes):
        idx = np.flatnonzero(keep & (labels == k))
        for wrong in (False, True):       # correct points as dots, mistakes as crosses, one legend entry
            sub = idx[(labels[idx] != pred[idx]) == wrong]
            if not len(sub):
                continue
            trace_index.append(index[sub])
            fig.add_trace(trace(
                x=xy[sub, 0], y=xy[sub, 1], mode="markers", name=name, legendgroup=name,
                showlegend=not wrong or not np.any(labels[idx] == pred[idx]),
                customdata=np.stack([index[sub], pred[sub], conf[sub]], 1).tolist(),
                text=[f"predicted {classes[p]}" + (" ✗" if wrong else " ✓") for p in pred[sub]],
                marker=dict(color=palette[k], size=10 if wrong else 6, opacity=0.9 if wrong else 0.7,
                            symbol="x" if wrong else "circle", line=dict(width=0)),
                hovertemplate=f"#%{{customdata[0]}} · true <b>{name}</b><br>%{{text}} "
                              f"(%{{customdata[2]:{ui.PCT_D3}}})<extra></extra>"))
    fig.update_layout(height=620, margin=dict(t=10, b=10), legend=dict(title="true class", itemsizing="constant"),
                      xaxis_title=f"PC 1 ({ui.pct(emb['explained_variance'][0])} of the variance)",
                      yaxis_title=f"PC 2 ({ui.pct(emb['explained_variance'][1])} of the variance)",
                      dragmode="lasso")
    event = ui.show_chart(fig, key="emb_chart", filename="embedding", on_select="rerun",
                          selection_mode=("points", "lasso", "box"))
    st.caption(f"{int(keep.sum()):,} of {n_total:,} test images shown; features: the {emb['dim']}-dimensional input "
               f"of `{emb['layer']}`; ✕ = misclassified. Drag to circle points (lasso); double-click to reset.")

with ui.guard("showing the selected images"):
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    chosen = []
    for p in points:
        curve, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and i is not None and curve < len(trace_index) and i < len(trace_index[curve]):
            chosen.append(int(trace_index[curve][i]))
    chosen = np.unique(np.asarray(chosen, np.int64))
    if len(chosen):
        y_true = np.asarray(pixels[1])[chosen]
        y_pred = np.asarray(preds["preds"])[chosen] if preds is not None else y_true
        wrong = int((y_true != y_pred).sum())
        st.subheader(f"{len(chosen):,} selected · {wrong:,} misclassified ({ui.pct(wrong / len(chosen))})")
        counts = [{"class": c, "true class": int((y_true == k).sum()), "predicted as": int((y_pred == k).sum())}
                  for k, c in enumerate(classes)]
        counts = [r for r in counts if r["true class"] or r["predicted as"]]
        left, right = st.columns([1, 2])
        with left, st.container(key="emb_breakdown"):
            st.markdown("**By class** (images in the selection)")
            st.dataframe(counts, hide_index=True, width="stretch", key="emb_breakdown_table")
        with right:
            s1, s2 = st.columns([2, 1])
            order_by = s1.radio("Order the images by", ["loss", "confidence"], horizontal=True,
                                format_func={"loss": "loss (hardest first)",
                                             "confidence": "confidence (most sure first)"}.get,
                                **ui.kept("emb_sort", "loss"))
            ordered = compute.selection_order(chosen, preds, order_by) if preds is not None else chosen
            size = compute.SELECTION_PAGE
            pages = max(1, math.ceil(len(ordered) / size))
            page = int(s2.number_input(f"Page (of {pages})", 1, pages, **ui.kept("emb_page", 1, bounds=(1, pages))))
            part = ordered[(page - 1) * size: page * size]
            st.caption(f"Images {(page - 1) * size + 1}–{(page - 1) * size + len(part)} of {len(ordered):,}, "
                       f"{size} per page.")
            probs = preds["probs"] if preds is not None else None
            caps = [f"#{i} {classes[int(pixels[1][i])]} → {classes[int(probs[i].argmax())]} "
                    f"{ui.pct(probs[i].max())}" if probs is not None else f"#{i} {classes[int(pixels[1][i])]}"
                    for i in part]
            ui.image_grid(pixels[0][part], caps, size=88, key="emb_selected")
    else:
        st.caption("Click a point, or circle several with the lasso (drag on the chart), to see their images here.")
    rows = [{"index": int(index[j]), "pc1": round(float(xy[j, 0]), 5), "pc2": round(float(xy[j, 1]), 5),
             "true": classes[labels[j]], "predicted": classes[pred[j]]} for j in range(len(labels))]
    ui.download_csv(rows, "embedding.csv", key="emb_csv")
