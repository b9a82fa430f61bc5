"""The test set as a 2-D map of the network's penultimate features (PCA, t-SNE or UMAP), coloured by class,
prediction, correctness, confidence or label quality; a selection goes to the Errors page's gallery (class
breakdown, ordered by loss, Explain on each), can be tagged and exported."""

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import compute
import diagnose
import frame
import gallery
import pictures
import sample
import selections
import testdata
import ui

ctx = frame.begin(
    "Just before the final scores the network describes every image by a long vector of features. Squashing "
    "those vectors to two dimensions gives a map: images the network finds similar land close together. "
    "**PCA** keeps distances (instant); **t-SNE** and **UMAP** pull classes apart more clearly but keep only "
    "neighbourhoods, not distances or cluster sizes (tens of seconds the first time, then cached). ✕ marks "
    "misclassified images. Click a point to see its image beside the map; pick the lasso or box in the chart's "
    "toolbar and circle many to list them below, class by class, with **Explain** on each.")
pixels = testdata.test_pixels(ctx, why="The embedding map")
if pixels is None:
    st.stop()
classes = ctx.classes
COLOURS = {"true": "true class", "pred": "predicted class", "correct": "correct or not", "confidence": "confidence",
           "quality": "label quality score"}
MANY = 20                 # classes on the map: above this no legend, colours assigned so that neighbours differ

with ui.guard("projecting the test set"):
    n_total = len(pixels[1])
    sizes = sorted({n for n in (500, 1000, 2000, 5000) if n < n_total} | {n_total})
    c0, c1, c2 = st.columns([3, 2, 2])
    method = c0.radio("Method", list(diagnose.PROJECTIONS), format_func=diagnose.PROJECTIONS.get, horizontal=True,
                      **ui.kept("emb_method", "pca", list(diagnose.PROJECTIONS)))
    if len(sizes) > 1:
        n = c1.select_slider("Test images projected", sizes, help="A fixed random sample; all of them takes longer.",
                             format_func=lambda v: f"all {v:,}" if v == n_total else f"{v:,}",
                             **ui.kept("emb_n", min(diagnose.EMBED_DEFAULT, n_total), sizes))
    else:
        n = n_total
    colour = c2.selectbox("Colour by", list(COLOURS), format_func=COLOURS.get, **ui.kept("emb_colour", "true",
                                                                                          list(COLOURS)))
    emb = diagnose.projection(ctx, method, n, n_total)
    preds, _ = compute.evaluation(ctx, pixels)
    index, labels, pred, xy = emb["indices"], emb["labels"], emb["preds"], emb["xy"]
    conf = preds["probs"][index, pred]
    quality = diagnose.label_issues(ctx, preds)["quality"][index] if colour == "quality" else None
    d1, d2 = st.columns([3, 2])
    shown = d1.multiselect("Classes", classes, placeholder="all classes", **ui.kept("emb_classes", [], classes))
    only_wrong = d2.checkbox("Only misclassified images", **ui.kept("emb_wrong", False))
    keep = np.ones(len(labels), bool)
    if shown:
        keep &= np.isin(labels, [classes.index(c) for c in shown])
    if only_wrong:
        keep &= labels != pred
    palette = ui.class_palette(len(classes))
    trace = go.Scatter if keep.sum() <= 3000 else go.Scattergl    # WebGL only where SVG would get slow
    per_point = None              # many classes: one colour per point, no legend (see below)
    if colour in ("true", "pred"):
        key = labels if colour == "true" else pred
        present = np.unique(key[keep])
        if len(present) > MANY:
            # a legend of hundreds of entries is unreadable and 2 x K traces are slow: two traces, colours from a
            # long palette assigned so that classes next to each other on this map never share one
            centres = np.stack([xy[keep & (key == k)].mean(0) for k in present])
            long = list(dict.fromkeys(px.colors.qualitative.Alphabet + px.colors.qualitative.Dark24))   # no pale ones
            pick = dict(zip(present.tolist(), compute.distinct_colours(centres, long)))
            per_point = np.array([pick.get(int(k), "#7f7f7f") for k in key], dtype=object)
            groups = [("classes", keep, "per point")]
        else:
            groups = [(name, keep & (key == k), palette[k]) for k, name in enumerate(classes)]
    elif colour == "correct":
        groups = [("correct", keep & (labels == pred), "#1f77b4"), ("misclassified", keep & (labels != pred), "#d62728")]
    else:
        groups = [(COLOURS[colour], keep, None)]
    value = conf if colour == "confidence" else quality
    fig = go.Figure()
    trace_index = []                  # per trace: the test index of each of its points (for selections)
    for name, mask, col in groups:
        idx = np.flatnonzero(mask)
        for wrong in (False, True):       # correct points as dots, mistakes as crosses, one legend entry
            sub = idx[(labels[idx] != pred[idx]) == wrong]
            if not len(sub):
                continue
            trace_index.append(index[sub])
            marker = dict(size=10 if wrong else 6, opacity=0.9 if wrong else 0.7, symbol="x" if wrong else "circle",
                          line=dict(width=0))
            if per_point is not None:
                marker["color"] = per_point[sub].tolist()
            elif col is None:
                marker.update(color=value[sub], colorscale="Viridis", cmin=0, cmax=1, showscale=len(trace_index) == 1,
                              colorbar=dict(title=COLOURS[colour], tickformat=".0%"))
            else:
                marker["color"] = col
            fig.add_trace(trace(
                x=xy[sub, 0], y=xy[sub, 1], mode="markers", name=name, legendgroup=name,
                showlegend=col is not None and per_point is None and (not wrong or not np.any(labels[idx] == pred[idx])),
                customdata=[[int(index[j]), classes[labels[j]], classes[pred[j]], float(conf[j])] for j in sub],
                text=[("✗" if wrong else "✓") + ("" if quality is None else f" · label quality {quality[j]:.2f}")
                      for j in sub],
                marker=marker,
                hovertemplate="#%{customdata[0]} · true <b>%{customdata[1]}</b><br>predicted %{customdata[2]} "
                              f"(%{{customdata[3]:{ui.PCT_D3}}}) %{{text}}<extra></extra>"))
    axis = diagnose.PROJECTIONS[method]
    fig.update_layout(height=620, margin=dict(t=10, b=10), legend=dict(title=COLOURS[colour], itemsizing="constant"),
                      xaxis_title=f"{axis} 1", yaxis_title=f"{axis} 2",
                      dragmode="zoom", clickmode="event+select")   # a click selects its point (not in lasso mode)
    chart_col, side = st.columns([4, 1])
    with chart_col:
        event = ui.show_chart(fig, key="emb_chart", filename=f"embedding-{method}", on_select="rerun",
                              selection_mode=("points", "lasso", "box"))
    timing = "read from the disk cache" if emb["cached"] else f"computed in {ui.duration(emb['seconds'])}"
    if per_point is not None:
        st.caption(f"{len(present):,} classes on the map: too many for a legend, so {len(long)} colours each recur "
                   "only far apart, chosen so that neighbouring classes on this map differ. Hover a point for its "
                   "class, pick up to 20 classes above for a legend, or colour by correctness or confidence.")
    st.caption(f"{int(keep.sum()):,} of {n_total:,} test images shown; {axis} of the penultimate features, "
               f"{timing}; ✕ = misclassified. Click a point for its image beside the map; to select many, pick the "
               "lasso or box in the chart's toolbar and drag. Double-click resets the view.")

with ui.guard("showing the selected images"):
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    chosen = []
    for p in points:
        curve, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and i is not None and curve < len(trace_index) and i < len(trace_index[curve]):
            chosen.append(int(trace_index[curve][i]))
    chosen = np.unique(np.asarray(chosen, np.int64))
    with side, st.container(key="emb_point"):
        if len(chosen) == 1:
            i = int(chosen[0])
            t, p = int(pixels[1][i]), int(preds["preds"][i])
            st.image(pictures.enlarge(pixels[0][i], 192), width="stretch",
                     caption=f"#{i} · true {classes[t]} · predicted {classes[p]} {ui.pct(preds['probs'][i][p])}")
            sample.open_button(i, "emb_point_open", label="Open this image")
        else:
            st.caption("Click a point to see its image here.")
    if len(chosen):
        if len(chosen) > 1:       # a lasso or box: its results start below the fold, so bring them up
            ui.scroll_into_view("emb_results", token=hash(chosen.tobytes()), block="start")
        with st.container(key="emb_results"):
            y_true = np.asarray(pixels[1])[chosen]
            y_pred = np.asarray(preds["preds"])[chosen]
            wrong = int((y_true != y_pred).sum())
            st.subheader(f"{len(chosen):,} selected · {wrong:,} misclassified ({ui.pct(wrong / len(chosen))})")
            counts = [{"class": c, "true class": int((y_true == k).sum()), "predicted as": int((y_pred == k).sum())}
                      for k, c in enumerate(classes)]
            counts = [r for r in counts if r["true class"] or r["predicted as"]]
            left, right = st.columns([1, 3])
            with left, st.container(key="emb_breakdown"):
                st.markdown("**By class** (images in the selection)")
                st.dataframe(counts, hide_index=True, width="stretch", key="emb_breakdown_table")
            with right:
                s1, s2 = st.columns([2, 1])
                order_by = s1.radio("Order the images by", ["loss", "confidence"], horizontal=True,
                                    format_func={"loss": "loss (hardest first)",
                                                 "confidence": "confidence (most sure first)"}.get,
                                    **ui.kept("emb_sort", "loss"))
                verdicts = gallery.verdict_filter(ctx, preds, pixels, prefix="emb_sel")   # None until pressed
                ordered = gallery.keep_indices(compute.selection_order(chosen, preds, order_by), verdicts)
                part = selections.page_of(ordered, s2, "emb")
                selections.tag_box(ctx, preds, ordered, "emb", "embedding selection", f"{axis} selection",
                                   f"embedding-{method}-selection.csv")
            gallery.show(ctx, preds, pixels, part, prefix="emb_sel", key="emb_selected", verdicts=verdicts)
    else:
        st.caption("Click a point, or pick the lasso in the chart's toolbar and circle several, to list their "
                   "images here.")
    rows = [{"index": int(index[j]), "x": round(float(xy[j, 0]), 5), "y": round(float(xy[j, 1]), 5),
             "true": classes[labels[j]], "predicted": classes[pred[j]]} for j in range(len(labels))]
    ui.download_csv(rows, f"embedding-{method}.csv", key="emb_csv", label="Download the map (CSV)")
