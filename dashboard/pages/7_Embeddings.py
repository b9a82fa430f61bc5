"""The test set as a 2-D map of the network's penultimate features (PCA), coloured by class."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import lens
import ui

ctx = lens.setup(
    "Embeddings",
    "Just before the final scores the network describes every image by a long vector of features. Squashing "
    "those vectors to two dimensions (PCA) gives a map: images the network finds similar land close together. "
    "Well-separated colour clouds mean easy classes; ✕ marks misclassified images, usually in the border zones. "
    "Hover a point for its prediction; click one (or pick the lasso in the chart's toolbar and circle several) "
    "to see the images.", icon="🌌")

pixels = lens.test_pixels(ctx, why="The embedding map")
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
                             **ui.kept("emb_n", min(lens.EMBED_DEFAULT, n_total), sizes))
    else:
        n = n_total
    emb = lens.embedding(ctx, pixels, n)
    preds, _ = lens.evaluation(ctx, pixels)
    index, labels, pred = emb["indices"], emb["labels"], emb["preds"]
    xy = emb["xy"]
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
        if not len(idx):
            continue
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
                              "(%{customdata[2]:.0%})<extra></extra>"))
    fig.update_layout(height=620, margin=dict(t=10, b=10), legend=dict(title="true class", itemsizing="constant"),
                      xaxis_title=f"PC 1 ({emb['explained_variance'][0]:.0%} of the variance)",
                      yaxis_title=f"PC 2 ({emb['explained_variance'][1]:.0%} of the variance)")
    event = ui.show_chart(fig, key="emb_chart", filename="embedding", on_select="rerun",
                            selection_mode=("points", "lasso", "box"))
    st.caption(f"{int(keep.sum()):,} of {n_total:,} test images shown; features: the {emb['dim']}-dimensional input "
               f"of `{emb['layer']}`; ✕ = misclassified. Double-click the chart to reset the zoom.")

with ui.guard("showing the selected images"):
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    chosen = []
    for p in points:
        curve, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and i is not None and curve < len(trace_index) and i < len(trace_index[curve]):
            chosen.append(int(trace_index[curve][i]))
    if chosen:
        chosen = chosen[:48]
        st.markdown(f"**{len(points)} selected** (showing {len(chosen)}):")
        probs = preds["probs"] if preds is not None else None
        caps = [f"#{i} {classes[int(pixels[1][i])]} → {classes[int(probs[i].argmax())]}" if probs is not None
                else f"#{i} {classes[int(pixels[1][i])]}" for i in chosen]
        ui.image_grid(pixels[0][chosen], caps, key="emb_selected")
    else:
        st.caption("Click a point, or circle several with the lasso tool (chart toolbar), to see their images here.")
    rows = [{"index": int(index[j]), "pc1": round(float(xy[j, 0]), 5), "pc2": round(float(xy[j, 1]), 5),
             "true": classes[labels[j]], "predicted": classes[pred[j]]} for j in range(len(labels))]
    ui.download_csv(rows, "embedding.csv", key="emb_csv")

lens.prefetch(ctx)   # warm the caches the other pages read (background, once per checkpoint)
