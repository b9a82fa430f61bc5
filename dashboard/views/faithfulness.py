"""How far to trust a saliency map: deletion and insertion curves for one image, and their areas averaged over
N test images, per attribution method."""
import plotly.graph_objects as go
import streamlit as st

import compute
import diagnose
import frame
import imagepick
import testdata
import ui

ctx = frame.begin(
    "A saliency map claims *these pixels matter*. Test the claim: remove the pixels in the map's order, most "
    "important first, and watch the class probability (**deletion**: a faithful map makes it fall fast — small "
    "area under the curve); or start from a blank image and put them back (**insertion**: it should rise fast "
    "— large area). The average over many test images ranks the methods, with a random map as the bar to beat. "
    "The ranking depends on the **baseline** (what \"removed\" means: black, a blur, the mean colour): removed "
    "pixels make images the model never saw in training, so the curves measure that too.")

methods = compute.attribution_methods()
with ui.guard("choosing the settings"):
    c1, c2, c3 = st.columns([4, 1, 1])
    chosen = c1.multiselect("Methods", list(methods), format_func=methods.get, max_selections=6,
                            **ui.kept("faith_methods", list(diagnose.FAITH_METHODS), list(methods)))
    bases = list(diagnose.baselines())
    baseline = c2.selectbox("Baseline", bases, **ui.kept("faith_baseline", bases[0], bases),
                            help="What a removed pixel becomes: black (zeros), blur (a strong blur of the image: "
                                 "fewer unnatural images), mean (the training mean colour).")
    steps = int(c3.number_input("Steps", 4, 64, step=4, **ui.kept("faith_steps", diagnose.FAITH_STEPS),
                                help="Points on each curve: pixels are removed in this many equal shares."))
if not chosen:
    st.info("Pick at least one method above.")
    st.stop()


def plot(rows: list[dict], key: str, filename: str) -> None:
    """Deletion (left) and insertion (right) curves, one colour per method."""
    from plotly.subplots import make_subplots
    fig = make_subplots(1, 2, subplot_titles=("deletion (lower is better)", "insertion (higher is better)"))
    palette = ui.class_palette(len(rows))
    for k, r in enumerate(rows):
        for col, curve, auc in ((1, r["deletion"], r["deletion_auc"]), (2, r["insertion"], r["insertion_auc"])):
            fig.add_trace(go.Scatter(x=r["fractions"], y=curve, mode="lines+markers", name=r["label"],
                                     legendgroup=r["label"], showlegend=col == 1, marker=dict(size=5),
                                     line=dict(color=palette[k], dash="dot" if r["method"] == "random" else "solid"),
                                     hovertemplate=f"{r['label']}: %{{x:{ui.PCT_D3}}} of the pixels → "
                                                   f"%{{y:{ui.PCT_D3}}} (area {auc:.3f})<extra></extra>"), 1, col)
    fig.update_xaxes(title_text="share of pixels removed / inserted", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="probability of the class", tickformat=".0%", range=[0, 1.02], col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], col=2)
    fig.update_layout(height=380, margin=dict(t=60, b=10), legend=dict(orientation="h", y=-0.25))
    ui.show_chart(fig, key=key, filename=filename)


st.subheader("One image")
with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "faith")
if pick is not None:
    with ui.guard("computing the curves"):
        probs = compute.probabilities(ctx, pick)
        target = int(probs.argmax())
        rows = []
        for m in chosen:
            r = diagnose.curves(ctx, pick, m, target, steps, baseline)
            rows.append({**r, "method": m, "label": methods[m]})
        st.markdown(f"Explaining the predicted class **{ctx.classes[target]}** ({ui.pct(probs[target])}) of "
                    f"{pick.caption}:")
        plot(rows, "faith_one", "faithfulness-one-image")
        table = [{"method": r["label"], "deletion AUC": round(r["deletion_auc"], 4),
                  "insertion AUC": round(r["insertion_auc"], 4),
                  "insertion − deletion": round(r["insertion_auc"] - r["deletion_auc"], 4)} for r in rows]
        st.dataframe(table, hide_index=True, width="stretch", key="faith_one_table")

st.subheader("Averaged over test images")
pixels = testdata.test_pixels(ctx, why="The average over test images")
if pixels is not None:
    with ui.guard("averaging over test images"):
        n_total = len(pixels[1])
        a1, a2 = st.columns([1, 3], vertical_alignment="bottom")
        n = int(a1.number_input("Test images", 2, min(500, n_total),
                                **ui.kept("faith_n", min(diagnose.FAITH_N, n_total), bounds=(2, min(500, n_total)))))
        a2.button("Compute the average", key="faith_run", icon=":material/play_arrow:",
                  on_click=lambda: st.session_state.update({"faith_requested": True}))
        if st.session_state.get("faith_requested"):
            rows = diagnose.faith_table(ctx, pixels, chosen, n, steps, baseline)
            plot(rows, "faith_mean", "faithfulness-average")
            table = [{"method": r["label"], "deletion AUC": round(r["deletion_auc"], 4),
                      "± (s.e.)": round(r["deletion_auc_sem"], 4), "insertion AUC": round(r["insertion_auc"], 4),
                      "± (s.e.) ": round(r["insertion_auc_sem"], 4), "insertion − deletion": round(r["score"], 4),
                      "seconds per map": round(r["seconds_map"], 3)}
                     for r in sorted(rows, key=lambda r: -r["score"])]
            st.dataframe(table, hide_index=True, width="stretch", key="faith_table")
            ui.download_csv(table, "faithfulness.csv", key="faith_csv")
            st.caption(f"Mean over the same {min(n, n_total)} test images (a fixed random sample), each explained for "
                       f"its predicted class, baseline **{baseline}**. This ranks the methods for this model, these "
                       "images and this baseline, not in general: another baseline can reorder them.")
        else:
            st.caption(f"Runs every chosen method on {n} test images (a few seconds per method on a laptop CPU).")
