"""The learned convolution kernels: the first layer as colour tiles and how they formed from their random start
(epoch 0), deeper layers as grids."""
import streamlit as st

import compute
import frame
import pictures
import ui

ctx = frame.begin(
    "The first convolution slides small kernels (here enlarged) over the image; each one is a tiny colour "
    "template, and trained networks usually grow edge, stripe and colour-blob detectors. Use the **epoch** "
    "slider to watch them form out of the random noise they start as (epoch 0), and **change since "
    "initialisation** to see what training added. Deeper layers combine the previous layer's maps, so their "
    "kernels are no longer pictures of the input — they are shown one row per output filter.")

VIEWS = {"kernels": "the kernels", "change": "change since initialisation"}

with ui.guard("drawing the first-layer filters"):
    st.subheader("First layer")
    history = compute.filter_history(ctx)          # [(epoch, weight)], epoch 0 = random initialisation
    epochs = [e for e, _ in history]
    best = ctx.meta.get("best_epoch")
    c1, c2, c3 = st.columns([2, 2, 3])
    view = "kernels"
    if len(history) > 1:
        view = c1.radio("Show", list(VIEWS), horizontal=True, format_func=VIEWS.get,
                        **ui.kept("filt_view", "kernels", list(VIEWS)),
                        help="Change since initialisation: W(epoch) − W(0) on one symmetric scale shared by "
                             "all kernels; mid grey = unchanged, light = grew, dark = shrank.")
    if view == "kernels":
        scale = c2.radio("Colour scale", ["filter", "shared"], horizontal=True, **ui.kept("filt_scale", "filter"),
                         format_func={"filter": "per filter", "shared": "shared"}.get,
                         help="Per filter: each kernel stretched to its own full range (shows every pattern). "
                              "Shared: one range for all (shows which kernels are strong).")
    if len(history) > 1:
        default = best if best in epochs else epochs[-1]
        epoch = c3.select_slider("Epoch", epochs, **ui.kept("filt_epoch", default, epochs),
                                 format_func=lambda e: "0 (random start)" if e == 0 else str(e),
                                 help="Epoch 0 is the random initialisation; each later epoch the kernels at its end.")
        weight = dict(history)[epoch]
        note = ("epoch 0 — the random initialisation" if epoch == 0 else f"epoch {epoch}"
                + (" — the weights of this checkpoint (best epoch)" if epoch == best else
                   f" (this checkpoint keeps epoch {best})" if best else ""))
    else:
        weight, epoch = None, None
        note = "the checkpoint's weights"
        c3.caption("This checkpoint has no per-epoch filter history (imported models, or training with "
                   "record_filters off), so only its final kernels are shown.")
    if view == "change":
        tiles, vmax = pictures.change_tiles(weight, dict(history)[0])
        note += (f" minus epoch 0 on one scale of ±{vmax:.3g}: "
                 + ("white = unchanged, red = grew, blue = shrank" if tiles.shape[3] == 1 else
                    "mid grey = unchanged, brighter = grew, darker = shrank (per colour channel)"))
        cmap = "RdBu_r"
    else:
        tiles = pictures.kernel_tiles(weight if weight is not None else ctx.model, scale=scale)
        cmap = "gray"
    n, k = tiles.shape[0], tiles.shape[1]
    ncols = min(n, 8 if n <= 64 else 16)
    factor = max(4, 96 // k)
    img = pictures.mosaic(tiles, ncols=ncols, pad=max(2, factor // 6), factor=factor, cmap=cmap)
    with st.container(key="filt_first"):
        st.image(img, caption=f"{n} kernels of {k}×{k} pixels × {tiles.shape[3]} channel(s), {note}",
                 width=min(img.shape[1], 900))
    ui.download_png(img, f"{ctx.label}-first-layer{'-epoch%d' % epoch if epoch is not None else ''}"
                         f"{'-change' if view == 'change' else ''}.png", key="filt_png")

with ui.guard("drawing a deeper layer"):
    convs = compute.conv_layer_names(ctx)[1:]
    if convs:
        st.subheader("Deeper layers")
        d1, d2, d3, d4 = st.columns([2, 2, 1, 1])
        layer = d1.selectbox("Layer", convs, **ui.kept("filt_layer", convs[0], convs))
        kscale = d2.radio("Colour scale ", ["kernel", "filter", "shared"], horizontal=True,
                          **ui.kept("filt_kscale", "filter"),
                          format_func={"kernel": "per kernel", "filter": "per filter", "shared": "shared"}.get)
        kern = pictures.layer_kernel_tiles(ctx.model, layer, kscale)     # (C_out, C_in, k, k) in [0, 1]
        c_out, c_in, kh = kern.shape[0], kern.shape[1], kern.shape[2]
        n_out = int(d3.number_input("Filters", 1, c_out, **ui.kept("filt_nout", min(c_out, 16), bounds=(1, c_out))))
        n_in = int(d4.number_input("Inputs", 1, c_in, **ui.kept("filt_nin", min(c_in, 32), bounds=(1, c_in))))
        n_out, n_in = min(n_out, c_out), min(n_in, c_in)
        grid = pictures.mosaic(kern[:n_out, :n_in].reshape(-1, kh, kern.shape[3]), ncols=n_in,
                               factor=max(2, 24 // kh), cmap="gray")
        st.markdown(f"**{layer}**: rows = the first {n_out} of {c_out} output filters, columns = the first {n_in} "
                    f"of {c_in} input channels.")
        with st.container(key="filt_deep"):
            st.image(grid, caption=f"{layer}: rows = the first {n_out} of {c_out} output filters, columns = the "
                                   f"first {n_in} of {c_in} input channels; each square is one {kh}×{kh} kernel "
                                   "(light = larger weight, dark = smaller or negative).",
                     width=min(grid.shape[1], 1100))
        ui.download_png(grid, f"{ctx.label}-{layer}-kernels.png", key="filt_deep_png")
