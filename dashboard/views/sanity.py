"""Are these saliency maps about the model? The cascading model-randomisation test (Adebayo et al. 2018): the map
of the trained model beside the maps of copies whose layers are re-initialised from the top down."""
import math

import frame
import imagepick
import pictures
import streamlit as st
import teaching
import ui

ctx = frame.begin(
    "**How to read this:** a saliency map claims to show what *the model* used. Test it: replace the model's "
    "learned weights with random ones, layer by layer from the classifier down, and recompute the map. If the map "
    "hardly changes, it was showing the image (its edges), not the model. Under each map: its **rank "
    "correlation** (Spearman) with the trained model's map — 1 means the same ranking of pixels, 0 unrelated.")
SIZE = 150

with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "san")

if pick is not None:
    with ui.guard("running the sanity check"):
        methods = teaching.sanity_methods()
        c1, c2 = st.columns([2, 3])
        method = c1.selectbox("Method", list(methods), format_func=methods.get,
                              **ui.kept("san_method", teaching.SANITY_METHOD, list(methods)))
        options = ["predicted"] + ctx.classes
        target = c2.selectbox("Explain the class", options, **ui.kept("san_target", "predicted", options))
        rows = teaching.sanity(ctx, pick, method, None if target == "predicted" else ctx.classes.index(target))
        st.markdown(f"**{methods[method]}** for class **{ctx.classes[rows[0]['target']]}**; left: the trained "
                    "model; then, from left to right, one more layer randomised each time (cascading, from the "
                    "top):")
        ncols = 6
        with st.container(key="san_maps"):
            for start in range(0, len(rows) + 1, ncols):
                cols = st.columns(ncols)
                for col, i in zip(cols, range(start - 1, start - 1 + ncols)):
                    if i < 0:
                        col.image(pictures.enlarge(pick.x01, SIZE), caption="the image", width="stretch")
                        continue
                    if i >= len(rows):
                        break
                    r = rows[i]
                    rho = r["spearman"]
                    label = "trained model" if r["step"] == "trained" else f"… + {r['step']} random"
                    col.image(pictures.enlarge(pictures.heat_colours(r["heatmap"]), SIZE),
                              caption=f"{label} · ρ = {'—' if math.isnan(rho) else f'{rho:.2f}'}", width="stretch")
        drops = [r["spearman"] for r in rows[1:] if not math.isnan(r["spearman"])]
        if drops:
            st.markdown(f"Rank correlation after randomising everything: **{drops[-1]:.2f}** "
                        f"(lowest along the way: {min(drops):.2f}).")
        st.info("Reading guide: gradient methods that depend on the learned weights (Saliency, Integrated "
                "Gradients, Grad-CAM) should decorrelate quickly — their maps change as soon as the weights do; "
                "edge-detector-like methods (Guided Backprop and friends) stay similar even on a random network, "
                "so they show the image more than the model.", icon=":material/lightbulb:")
        ui.download_csv([{"step": r["step"], "randomized": " ".join(r["randomized"]), "spearman": r["spearman"]}
                         for r in rows], f"sanity-{method}.csv", key="san_csv")
