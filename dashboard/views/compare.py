"""Two models side by side on the same test images: the agreement table, McNemar's test, per-class accuracy
differences, and the images one gets right and the other wrong, each with both models' saliency."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

import checkpoints
import compute
import twomodels
import frame
import imagepick
import pictures
import sample
import selections
import testdata
import ui

ctx = frame.begin(
    "Is the second model really better, or just lucky on this test set? The **agreement table** counts the "
    "test images both models get right, only one, or neither. **McNemar's test** looks only at the images where "
    "exactly one is right: if those split about evenly, the difference in accuracy could be chance. Below, the "
    "accuracy difference per class, and the images one model gets right and the other wrong, with what each "
    "model looked at.")

BARS = 30                    # the most per-class bars drawn; above, the largest differences and a table
c = None
with ui.guard("choosing the second checkpoint"):
    current = ui.value("side_ckpt")
    choices = [c for c in checkpoints.same_dataset(checkpoints.checkpoint_choices(), ctx.classes) if c != current]
    choices += [c for c in checkpoints.checkpoint_choices() if c.startswith("upload:") and c != current
                and c not in choices]
    if not choices:
        st.info("Comparing needs a second checkpoint trained on the same classes: train one, or upload it in the "
                "sidebar.")
        st.stop()
    choices, n_same = twomodels.comparable_first(ctx, choices)    # tested on A's test images first: the default
    other = st.selectbox(f"Compare **A = {ctx.label}** (the sidebar's checkpoint) with **B =**", choices,
                         format_func=checkpoints.choice_label, **ui.kept("cmp_other", choices[0], choices))
    if not n_same:
        st.info("No other checkpoint with these classes was tested on A's test images, so B is evaluated on A's "
                "test images when they are on disk.", icon=":material/info:")
    elif other not in choices[:n_same]:
        st.caption("B was tested on other images than A, so both are evaluated on A's test images.")
    opened, problems = checkpoints.open_many([other])
    for p in problems:
        st.error(p)
    if not opened:
        st.stop()
    b = twomodels.on_data_of(opened[0], ctx)          # B on A's test images
    pixels = testdata.test_pixels(ctx, notice=False)
    c, pa, pb = ui.checked("comparing the two checkpoints", twomodels.comparison, ctx, b, pixels)

if c is None:
    st.stop()
classes = ctx.classes
with ui.guard("drawing the comparison"):
    m = st.columns(4)
    m[0].metric(f"A: {ctx.label}", ui.pct(c["acc_a"]), help="Test accuracy of A.")
    m[1].metric(f"B: {b.label}", ui.pct(c["acc_b"]), f"{100 * (c['acc_b'] - c['acc_a']):+.1f} points",
                help="Test accuracy of B, and its difference to A.")
    mc = c["mcnemar"]
    m[2].metric("McNemar p-value", "< 0.0001" if mc["p_value"] < 1e-4 else f"{mc['p_value']:.3g}", help="The chance of a split at least this uneven if "
                "both models had the same error rate.")
    m[3].metric("Test images", f"{c['n']:,}")
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Agreement** (test images)")
        t = c["table"]
        table = [{"": "A right", "B right": t[0][0], "B wrong": t[0][1]},
                 {"": "A wrong", "B right": t[1][0], "B wrong": t[1][1]}]
        st.dataframe(table, hide_index=True, width="stretch", key="cmp_table")
        pv = "< 0.0001" if mc["p_value"] < 1e-4 else f"= {mc['p_value']:.3g}"
        kind = "exact binomial test" if mc["exact"] else "chi-square with continuity correction"
        verdict = ("significant at the 5% level: the two error rates very probably differ" if mc["p_value"] < 0.05
                   else "not significant at the 5% level: this test set cannot tell the two error rates apart")
        st.markdown(f"**McNemar's test** ({kind}, {mc['discordant']} images where exactly one is right): "
                    f"statistic {mc['statistic']:.3g}, p {pv} — {verdict}.")
    with right:
        per = c["per_class"]
        if len(per) > BARS:          # hundreds of bars are unreadable: the largest differences, the rest below
            per = sorted(sorted(per, key=lambda r: -abs(r["diff"]))[:BARS], key=lambda r: -r["diff"])
        bars = go.Figure(go.Bar(x=[r["class"] for r in per], y=[100 * r["diff"] for r in per],
                                marker_color=["#2ca02c" if r["diff"] >= 0 else "#d62728" for r in per],
                                customdata=[[r["acc_a"], r["acc_b"], r["support"]] for r in per],
                                hovertemplate=f"%{{x}}: A %{{customdata[0]:{ui.PCT_D3}}}, B "
                                              f"%{{customdata[1]:{ui.PCT_D3}}} (%{{customdata[2]}} images)"
                                              "<extra></extra>"))
        bars.update_layout(height=300, margin=dict(t=30, b=10), title="Per-class accuracy, B minus A",
                           yaxis_title="points", xaxis_tickangle=-45 if len(per) > 6 else 0)
        ui.show_chart(bars, key="cmp_per_class", filename="per-class-difference")
        if len(c["per_class"]) > BARS:
            st.caption(f"The {BARS} classes whose accuracy differs most, of {len(c['per_class']):,}; every class is "
                       "in the table below.")
    if len(c["per_class"]) > BARS:
        find = st.text_input("Find a class", placeholder="part of a class name", key="cmp_find",
                             help="Filters the per-class table; click a column header to sort it.")
        rows = [{"class": r["class"], "A": 100 * r["acc_a"], "B": 100 * r["acc_b"], "B − A (points)": 100 * r["diff"],
                 "images": r["support"]} for r in c["per_class"]
                if find.strip().lower() in r["class"].lower()]
        st.dataframe(rows, hide_index=True, width="stretch", height=260, key="cmp_per_class_table",
                     column_config={k: st.column_config.NumberColumn(format="%.1f%%") for k in ("A", "B")}
                     | {"B − A (points)": st.column_config.NumberColumn(format="%+.1f")})

with ui.guard("showing the images they disagree on"):
    st.subheader("Where they disagree")
    sides = {"only_a": f"A right, B wrong ({len(c['only_a'])})", "only_b": f"B right, A wrong ({len(c['only_b'])})"}
    d1, d2, d3 = st.columns([3, 2, 1])
    side = d1.radio("Images", list(sides), format_func=sides.get, horizontal=True, **ui.kept("cmp_side", "only_a",
                                                                                               list(sides)))
    methods = compute.attribution_methods()
    method = d2.selectbox("Saliency method", list(methods), format_func=methods.get,
                          **ui.kept("cmp_method", "gradcam", list(methods)))
    limit = int(d3.number_input("Show", 1, 48, **ui.kept("cmp_limit", 6)))
    chosen = np.asarray(c[side], np.int64)
    if len(classes) > BARS:          # many classes: narrow the images down by their true class (type to search)
        y_all = np.asarray(pa["targets"])
        present = [classes[k] for k in np.unique(y_all[chosen])] if len(chosen) else []
        only = st.multiselect("True class", present, placeholder="any class", **ui.kept("cmp_classes", [], present))
        if only:
            chosen = chosen[np.isin(y_all[chosen], [classes.index(n) for n in only])]
    if pixels is None:
        testdata.test_pixels(ctx, why="Showing the images")
    elif not len(chosen):
        st.caption("No such images: the two models agree on every one of them.")
    else:
        x, y = pixels
        with st.container(key="cmp_gallery"):
            for i in chosen[:limit].tolist():
                cols = st.columns(3)
                cols[0].image(pictures.enlarge(x[i], 160), caption=f"#{i} · true {classes[int(y[i])]}",
                              width="stretch")
                with cols[0]:
                    sample.open_button(i, f"cmp_open_{i}")
                for col, run, pr, name in ((cols[1], ctx, pa, "A"), (cols[2], b, pb, "B")):
                    p = int(pr["preds"][i])
                    pick = imagepick.test_image(run, x, y, i)
                    heat = compute.attributions(run, pick, method, [p])[0]["heatmap"]
                    col.image(pictures.enlarge(pictures.overlay(pick.x01, heat, 0.5), 160), width="stretch",
                              caption=f"{name}: {classes[p]} {'✓' if p == int(y[i]) else '✗'} "
                                      f"{ui.pct(pr['probs'][i][p])}")
        st.caption(f"{methods[method]} of each model for its own answer: where the maps differ, the two models "
                   "used different evidence.")
    selections.tag_box(ctx, pa, chosen, "cmp", "disagreement", f"{sides[side].split(' (')[0]}",
                       f"disagreement-{side}.csv")
