"""Attribution maps for any image: which pixels drove the prediction, by every method of cnnlib.explain.attribution
(gradients, Captum's, occlusion and the CAM family: Grad-CAM++, Score-CAM, LayerCAM, EigenCAM, Finer-CAM)."""
import plotly.graph_objects as go
import streamlit as st

import adapters
import compute
import frame
import imagepick
import pictures
import ui

ctx = frame.begin(
    "An attribution method answers *which pixels made the network say this class?* and paints the answer "
    "over the image: warm colours mark the pixels that mattered most. Methods disagree in instructive ways — "
    "gradients are sharp but noisy, **Grad-CAM** is coarse but follows objects, **Occlusion** simply hides "
    "patches and watches the score drop; the CAM family (Grad-CAM++, Score-CAM, LayerCAM, EigenCAM, Finer-CAM) "
    "refines Grad-CAM. Pick several target classes to compare the evidence for each, and see the **Faithfulness** "
    "page for how far to trust each map.")
SIZE = 224


def method_options(method: str) -> dict:
    """The widgets of a method's options, starting at cnnlib's defaults for this input size."""
    d = adapters.option_defaults(method, ctx.meta["input_shape"])
    side = int(ctx.meta["input_shape"][1])
    out = {}
    if "n_steps" in d:
        out["n_steps"] = st.slider("Steps along the path", 8, 200, step=2, **ui.kept("sal_steps", int(d["n_steps"])))
    if "nt_samples" in d:
        out["nt_samples"] = st.slider("Noisy copies", 5, 100, step=5, **ui.kept("sal_samples", int(d["nt_samples"])))
    if "stdev" in d:
        out["stdev"] = st.slider("Noise level", 0.01, 0.5, step=0.01, **ui.kept("sal_stdev", float(d["stdev"])))
    if "window" in d:
        top = max(3, side // 2)
        out["window"] = st.slider("Patch size (pixels)", 2, top,
                                  **ui.kept("sal_window", int(d["window"]), bounds=(2, top)))
    if "baseline" in d:
        label = "Patch colour" if method == "occlusion" else "Baseline"
        out["baseline"] = st.selectbox(label, ["black", "white", "mean"],
                                       **ui.kept(f"sal_base_{method}", d["baseline"], ["black", "white", "mean"]))
    if "comparisons" in d:          # Finer-CAM: against the classes with the nearest scores
        most = max(1, len(ctx.classes) - 1)
        out["comparisons"] = st.slider("Classes compared against", 1, most,
                                       **ui.kept("sal_comparisons", min(int(d["comparisons"]), most), bounds=(1, most)))
    if "comparison_weight" in d:
        out["comparison_weight"] = st.slider("Comparison weight (0 = plain Grad-CAM)", 0.0, 2.0, step=0.1,
                                             **ui.kept("sal_comp_weight", float(d["comparison_weight"])))
    if "batch_size" in d:
        st.caption(f"Score-CAM masks the image with each of the layer's maps, {d['batch_size']} masked images per "
                   "forward pass: slower than Grad-CAM, but no gradients.")
    if not out and "batch_size" not in d:
        st.caption("This method has no options.")
    return out


with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "sal")

if pick is not None:
    classes = ctx.classes
    with ui.guard("classifying the image"):
        probs = compute.probabilities(ctx, pick)
        order = probs.argsort()[::-1]
        pred = int(order[0])
        k = min(5, len(classes))
        st.markdown(f"### Prediction: **{classes[pred]}** ({ui.pct(probs[pred])})"
                    + (f" — true class: **{classes[pick.label]}**" if pick.label is not None else ""))
        imagepick.ood_notice(ctx, pick, probs)
        top = [int(i) for i in order[:k]][::-1]
        bar = go.Figure(go.Bar(x=[float(probs[i]) for i in top], y=[classes[i] for i in top], orientation="h",
                               marker_color=["#d62728" if i == pred else "#1f77b4" for i in top],
                               text=[ui.pct(probs[i]) for i in top], textposition="auto", cliponaxis=False,
                               hovertemplate=f"%{{y}}: %{{x:{ui.PCT_D3}}}<extra></extra>"))
        bar.update_layout(height=70 + 32 * k, margin=dict(t=10, b=5, l=5, r=40),
                          xaxis=dict(range=[0, 1], tickformat=".0%"))
        if pick.original is not None:
            thumb_col, top_col = st.columns([1, 3])
            thumb_col.image(pick.original, caption="the upload as sent", width="stretch")
        else:
            top_col = st.container()
        with top_col:
            ui.show_chart(bar, key="sal_topk", filename="top-k", modebar=False)   # no toolbar over the top-1 label

    with ui.guard("computing the attribution"):
        st.markdown("**Explain the prediction** — choose a method and the classes to explain:")
        methods = compute.attribution_methods()
        c1, c2, c3 = st.columns([2, 2, 3])
        method = c1.selectbox("Method", list(methods), format_func=methods.get,
                              **ui.kept("sal_method", "gradcam", list(methods)))
        layer = None
        if method in adapters.layer_methods():
            spatial = [r["name"] for r in compute.layers(ctx)
                       if len(r["output_shape"]) == 3 and r["output_shape"][1] * r["output_shape"][2] > 1]
            layer = c2.selectbox(f"{methods[method]} layer", spatial,
                                 **ui.kept("sal_layer", compute.gradcam_default(ctx), spatial),
                                 help="The CAM methods weigh this layer's maps (by gradients, scores or "
                                      "principal components). Later layers: more meaning, coarser maps.")
        if st.session_state.get("_sal_targets_image") != pick.key:     # another image: only its prediction
            st.session_state["_sal_targets_image"] = pick.key
            ui.remember("sal_targets", [])
        others = [i for i in range(len(classes)) if i != pred]
        extra = c3.multiselect(f"Explain {classes[pred]} (the prediction) and also", others,
                               format_func=lambda i: classes[i], max_selections=3, placeholder="other classes",
                               **ui.kept("sal_targets", [], others))
        targets = [pred] + [int(t) for t in extra if t != pred]     # the predicted class is always explained
        d1, d2, d3 = st.columns(3)
        alpha = d1.slider("Overlay opacity", 0.0, 1.0, step=0.05, **ui.kept("sal_alpha", 0.5))
        scale = d2.radio("Colour scale", ["image", "shared"], horizontal=True, **ui.kept("sal_scale", "image"),
                         format_func={"image": "per image", "shared": "shared across classes"}.get,
                         help="Shared: one scale for all the maps, so a weaker map looks weaker.")
        show_map = d3.checkbox("Show the bare heatmap too", **ui.kept("sal_bare", False))
        with st.expander("Method options"):
            options = method_options(method)

        results = compute.attributions(ctx, pick, method, targets, layer=layer, scale=scale, **options)
        st.markdown(f"**{methods[method]}** — the image, then one overlay per class"
                    + (" with its bare heatmap below:" if show_map else ":"))
        base = pictures.enlarge(pick.x01, SIZE)
        overlays = [pictures.enlarge(pictures.overlay(pick.x01, r["heatmap"], alpha), SIZE) for r in results]
        heats = [pictures.enlarge(pictures.heat_colours(r["heatmap"]), SIZE) for r in results]
        ncols = max(4, 1 + len(results))          # fixed: the image + one column per class; never wraps
        with st.container(key="sal_result"):
            row = st.columns(ncols)
            row[0].image(base, caption=pick.caption, width="stretch")
            for col, im, r in zip(row[1:], overlays, results):
                t = r["target"]
                col.image(im, caption=f"{methods[method]} for {classes[t]} ({ui.pct(r['probs'][t])})",
                          width="stretch")
            if show_map:
                row2 = st.columns(ncols)
                row2[0].caption("Bare heatmaps (no image underneath):")
                for col, im, r in zip(row2[1:], heats, results):
                    col.image(im, caption=f"heatmap for {classes[r['target']]}", width="stretch")
        notes = [f"{methods[method]} layer: {layer}."] if layer else []
        if "delta" in results[0]:
            notes.append(f"Integrated Gradients completeness error: {results[0]['delta']:.2g} "
                         "(how far the attributions miss summing to the score change; small is good).")
        if scale == "shared":
            notes.append("One colour scale for all maps.")
        if notes:
            st.caption(" ".join(notes))
        views = [base] + overlays + (heats if show_map else [])
        ui.download_png(pictures.side_by_side(views), f"saliency-{method}.png", key="sal_png")
