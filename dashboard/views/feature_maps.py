"""Any layer's channels (feature maps) for a test image or an upload."""
import streamlit as st

import compute
import frame
import imagepick
import pictures
import ui

ctx = frame.begin(
    "Every channel of a layer is one detector applied at every position of the image; its **feature map** "
    "lights up (bright) where the detector's pattern appears. Early layers respond to edges and colours and "
    "keep the image's layout; deeper layers are smaller and respond to larger, more abstract parts.")
GRID_PX = 880          # about the width of the grid's column on a laptop screen (the image then stretches to it)

with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "fm")

if pick is not None:
    with ui.guard("drawing the feature maps"):
        rows = compute.layers(ctx)
        names = [r["name"] for r in rows]
        shapes = {r["name"]: r["output_shape"] for r in rows}
        default = next((n for n in names if n.startswith("relu")), names[0])
        c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
        layer = c1.selectbox("Layer", names, **ui.kept("fm_layer", default, names),
                             format_func=lambda n: f"{n}  ({' × '.join(map(str, shapes[n]))})")
        scale = c2.radio("Colour scale", ["channel", "shared"], horizontal=True, **ui.kept("fm_scale", "channel"),
                         format_func={"channel": "per channel", "shared": "shared by the layer"}.get,
                         help="Per channel: each map stretched to its own range (shows every pattern). "
                              "Shared: one range for the layer (shows which channels respond most).")
        n_ch = shapes[layer][0]
        count = int(c3.number_input("Channels", 1, n_ch, **ui.kept("fm_count", min(n_ch, 32), bounds=(1, n_ch))))
        cmap = c4.selectbox("Colours", ["viridis", "gray", "magma", "jet"], **ui.kept("fm_cmap", "viridis"))
        fm = compute.feature_maps(ctx, pick, layer, scale)
        maps = fm["maps"][:min(count, n_ch)]
        h, w = maps.shape[1], maps.shape[2]
        ncols = min(len(maps), 8)
        grid = pictures.mosaic(maps, ncols=ncols, factor=pictures.fit_factor(w, ncols, GRID_PX), cmap=cmap)
        st.markdown(f"**{layer}**: the first {len(maps)} of {n_ch} channels, each {h}×{w}.")
        left, right = st.columns([1, 4])
        with left:
            probs = compute.probabilities(ctx, pick)
            best = int(probs.argmax())
            st.markdown(f"Prediction: **{ctx.classes[best]}** ({ui.pct(probs[best])})")
            imagepick.ood_notice(ctx, pick, probs)
            st.image(pictures.enlarge(pick.x01, 192), caption=pick.caption, width="stretch")
            if pick.original is not None:
                st.image(pick.original, caption="the upload as sent", width="stretch")
        with right, st.container(key="fm_grid"):
            st.image(grid, caption=f"{layer}: the first {len(maps)} of {n_ch} channels, each {h}×{w} "
                                   "(bright = strong activation)", width="stretch")
            lo, hi = float(fm["min"][:len(maps)].min()), float(fm["max"][:len(maps)].max())
            st.caption(f"Raw activations of the channels shown range from {lo:.3g} to {hi:.3g}. "
                       "After a ReLU, black means exactly zero: the detector found nothing there.")
            ui.download_png(grid, f"feature-maps-{layer}.png", key="fm_png")
