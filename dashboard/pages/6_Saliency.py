"""Attribution maps for any image: which pixels drove the prediction, by eight methods."""
import plotly.graph_objects as go
import streamlit as st

import lens
import ui

ctx = lens.setup(
    "Saliency",
    "An attribution method answers *which pixels made the network say this class?* and paints the answer "
    "over the image: warm colours mark the pixels that mattered most. Methods disagree in instructive ways — "
    "gradients are sharp but noisy, **Grad-CAM** is coarse but follows objects, **Occlusion** simply hides "
    "patches and watches the score drop. Pick several target classes to compare the evidence for each.",
    icon="🔥")

with ui.guard("choosing the image"):
    pick = lens.pick_image(ctx, "sal")

if pick is not None:
    classes = ctx.classes
    with ui.guard("classifying the image"):
        probs = lens.probabilities(ctx, pick)
        order = probs.argsort()[::-1]
        pred = int(order[0])
        k = min(5, len(classes))
        st.markdown(f"### Prediction: **{classes[pred]}** ({probs[pred]:.1%})"
                    + (f" — true class: **{classes[pick.label]}**" if pick.label is not None else ""))
        bar = go.Figure(go.Bar(x=[float(probs[i]) for i in order[:k]][::-1], y=[classes[i] for i in order[:k]][::-1],
                               orientation="h", marker_color=["#d62728" if i == pred else "#1f77b4"
                                                              for i in order[:k]][::-1],
                               text=[f"{probs[i]:.1%}" for i in order[:k]][::-1], textposition="auto",
                               hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
        bar.update_layout(height=60 + 32 * k, margin=dict(t=5, b=5, l=5, r=5),
                          xaxis=dict(range=[0, 1], tickformat=".0%"))
        top_col, img_col = st.columns([3, 1])
        with top_col:
            ui.show_chart(bar, key="sal_topk", filename="top-k")
        with img_col:
            if pick.original is not None:
                st.image(pick.original, caption="the upload as sent", width="stretch")

    with ui.guard("computing the attribution"):
        methods = lens.attribution_methods()
        c1, c2, c3 = st.columns([2, 2, 3])
        method = c1.selectbox("Method", list(methods), format_func=methods.get,
                              **ui.kept("sal_method", "gradcam", list(methods)))
        layer = None
        if method in lens.LAYER_METHODS:
            spatial = [r["name"] for r in lens.layers(ctx) if r["output_shape"][1] * r["output_shape"][2] > 1]
            default = lens.gradcam_default(ctx)
            layer = c2.selectbox("Grad-CAM layer", spatial, **ui.kept("sal_layer", default, spatial),
                                 help="Grad-CAM weighs this layer's maps by their gradients. Later layers: "
                                      "more meaning, coarser maps.")
        targets = c3.multiselect("Explain the classes", list(range(len(classes))), format_func=lambda i: classes[i],
                                 max_selections=4, placeholder="the predicted class",
                                 **ui.kept("sal_targets", [], list(range(len(classes)))))
        targets = targets or [pred]
        d1, d2, d3 = st.columns(3)
        alpha = d1.slider("Overlay opacity", 0.0, 1.0, step=0.05, **ui.kept("sal_alpha", 0.5))
        scale = d2.radio("Colour scale", ["image", "shared"], horizontal=True, **ui.kept("sal_scale", "image"),
                         format_func={"image": "per image", "shared": "shared across classes"}.get,
                         help="Shared: one scale for all the maps, so a weaker map looks weaker.")
        show_map = d3.checkbox("Show the bare heatmap too", **ui.kept("sal_bare", False))
        options = {}
        with st.expander("Method options"):
            if method == "integrated_gradients":
                options["n_steps"] = st.slider("Steps along the path", 8, 200, step=8, **ui.kept("sal_steps", 48))
                options["baseline"] = st.selectbox("Baseline", ["black", "white", "mean"],
                                                   **ui.kept("sal_base", "black"))
            elif method == "smoothgrad":
                options["nt_samples"] = st.slider("Noisy copies", 5, 100, step=5, **ui.kept("sal_samples", 25))
                options["stdev"] = st.slider("Noise level", 0.01, 0.5, step=0.01, **ui.kept("sal_stdev", 0.15))
            elif method == "occlusion":
                side = int(ctx.meta["input_shape"][1])
                top = max(3, side // 2)
                options["window"] = st.slider("Patch size (pixels)", 2, top,
                                              **ui.kept("sal_window", max(2, side // 8), bounds=(2, top)))
                options["baseline"] = st.selectbox("Patch colour", ["black", "white", "mean"],
                                                   **ui.kept("sal_obase", "black"))
            else:
                st.caption("This method has no options.")

        results = lens.attributions(ctx, pick, method, targets, layer=layer, scale=scale, **options)
        views, caps = [ui.big(pick.x01, 224)], [pick.caption]
        for r in results:
            t = r["target"]
            views.append(ui.big(lens.overlay(pick.x01, r["heatmap"], alpha), 224))
            caps.append(f"{methods[method]} for {classes[t]} ({r['probs'][t]:.1%})")
            if show_map:
                views.append(ui.big(ui.viz.colorize(r["heatmap"], "jet"), 224))
                caps.append(f"heatmap for {classes[t]}")
        with st.container(key="sal_result"):
            cols = st.columns(max(4, min(len(views), 5)))
            for i, (im, cap) in enumerate(zip(views, caps)):
                cols[i % len(cols)].image(im, caption=cap, width="stretch")
        notes = []
        if layer:
            notes.append(f"Grad-CAM layer: {layer}.")
        if "delta" in results[0]:
            notes.append(f"Integrated Gradients completeness error: {results[0]['delta']:.2g} "
                         "(how far the attributions miss summing to the score change; small is good).")
        if scale == "shared":
            notes.append("One colour scale for all maps.")
        if notes:
            st.caption(" ".join(notes))
        ui.download_png(ui.viz.hstack(views), f"saliency-{method}.png", key="sal_png")

lens.prefetch(ctx)   # warm the caches the other pages read (background, once per checkpoint)
