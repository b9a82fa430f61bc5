"""The learned convolution kernels: the first layer as colour tiles (and how they formed), deeper layers as grids."""
import streamlit as st

import lens
import ui

ctx = lens.setup(
    "Filters",
    "The first convolution slides small kernels (here enlarged) over the image; each one is a tiny colour "
    "template, and trained networks usually grow edge, stripe and colour-blob detectors. Use the **epoch** "
    "slider to watch them form out of random noise. Deeper layers combine the previous layer's maps, so their "
    "kernels are no longer pictures of the input — they are shown one row per output filter.", icon="🧩")

with ui.guard("drawing the first-layer filters"):
    st.subheader("First layer")
    c1, c2 = st.columns([2, 3])
    scale = c1.radio("Colour scale", ["filter", "shared"], horizontal=True, **ui.kept("filt_scale", "filter"),
                     format_func={"filter": "per filter", "shared": "shared"}.get,
                     help="Per filter: each kernel stretched to its own full range (shows every pattern). "
                          "Shared: one range for all (shows which kernels are strong).")
    epochs = lens.filter_epochs(ctx)
    best = ctx.meta.get("best_epoch")
    if len(epochs) > 1:
        default = best if best in epochs else epochs[-1]
        epoch = c2.select_slider("Epoch", epochs, **ui.kept("filt_epoch", default, epochs),
                                 help="The first-layer kernels recorded at the end of each training epoch.")
        weight = lens.filter_snapshot(ctx, epoch)
        note = (f"epoch {epoch}" + (" — the weights of this checkpoint (best epoch)" if epoch == best else
                                    f" (this checkpoint keeps epoch {best})"))
    else:
        weight, epoch = ctx.model, None
        note = "the checkpoint's weights"
        c2.caption("This checkpoint has no per-epoch filter history (train with record_filters on to see "
                   "the filters evolve).")
    tiles = lens.first_layer_filters(weight, scale=scale)            # (N, k, k, C) in [0, 1]
    n, k = tiles.shape[0], tiles.shape[1]
    factor = max(4, 96 // k)
    img = ui.viz.tile_image(tiles, ncols=min(n, 8 if n <= 64 else 16), pad=max(2, factor // 6), factor=factor,
                              cmap="gray")
    with st.container(key="filt_first"):
        st.image(img, caption=f"{n} kernels of {k}×{k} pixels × {tiles.shape[3]} channel(s), {note}",
                 width=min(img.shape[1], 900))
    ui.download_png(img, f"{ctx.label}-first-layer{'-epoch%d' % epoch if epoch else ''}.png", key="filt_png")

with ui.guard("drawing a deeper layer"):
    convs = lens.conv_layer_names(ctx)[1:]
    if convs:
        st.subheader("Deeper layers")
        d1, d2, d3, d4 = st.columns([2, 2, 1, 1])
        layer = d1.selectbox("Layer", convs, **ui.kept("filt_layer", convs[0], convs))
        kscale = d2.radio("Colour scale ", ["kernel", "filter", "shared"], horizontal=True,
                          **ui.kept("filt_kscale", "filter"),
                          format_func={"kernel": "per kernel", "filter": "per filter", "shared": "shared"}.get)
        kern = lens.layer_kernels(ctx, layer, scale=kscale)            # (C_out, C_in, k, k) in [0, 1]
        c_out, c_in, kh = kern.shape[0], kern.shape[1], kern.shape[2]
        n_out = int(d3.number_input("Filters", 1, c_out, **ui.kept("filt_nout", min(c_out, 16), bounds=(1, c_out))))
        n_in = int(d4.number_input("Inputs", 1, c_in, **ui.kept("filt_nin", min(c_in, 32), bounds=(1, c_in))))
        n_out, n_in = min(n_out, c_out), min(n_in, c_in)
        grid = ui.viz.tile_image(kern[:n_out, :n_in].reshape(-1, kh, kern.shape[3]), ncols=n_in, pad=2,
                                   factor=max(2, 24 // kh), cmap="gray")
        with st.container(key="filt_deep"):
            st.image(grid, caption=f"{layer}: rows = the first {n_out} of {c_out} output filters, columns = the "
                                   f"first {n_in} of {c_in} input channels; each square is one {kh}×{kh} kernel "
                                   "(light = larger weight, dark = smaller or negative).",
                     width=min(grid.shape[1], 1100))
        ui.download_png(grid, f"{ctx.label}-{layer}-kernels.png", key="filt_deep_png")

lens.prefetch(ctx)   # warm the caches the other pages read (background, once per checkpoint)
