"""Through the layers: one image, then for every layer a few of its most active channels, down to the class
scores — the whole network in one horizontal strip."""
import frame
import imagepick
import pictures
import streamlit as st
import teaching
import teaching_draw as draw
import ui

ctx = frame.begin(
    "**How to read this:** read the strip from left to right, as the image travels through the network. Each "
    "column is one layer; its small pictures are the channels that responded most (bright = strong), with the "
    "layer's name and shape (channels × height × width) on top. The maps shrink as you go deeper while each "
    "unit sees a larger part of the image (its receptive field), and the patterns get less like the picture "
    "and more like evidence for a class. The last column is the verdict: the class scores.")
STRIP_PX = 900          # about the width of the main column on a laptop screen

with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "ls")

if pick is not None:
    with ui.guard("running the image through the layers"):
        per = int(st.slider("Channels per layer", 1, 6, **ui.kept("ls_per", 3)))
        s = teaching.strip(ctx, pick, per)
        layers = s["layers"]
        TILE = max(40, min(84, (STRIP_PX - 200) // (len(layers) + 1) - 14))
        with st.container(key="ls_strip", horizontal=True, gap="small", wrap=False):
            with st.container(width=TILE + 16):
                st.markdown("**input**")
                st.caption("×".join(map(str, ctx.meta["input_shape"])))
                st.image(pictures.enlarge(pick.x01, TILE), width=TILE)
            for row in layers:
                with st.container(width=TILE + 16):
                    st.markdown(f"**{row['layer']}**")
                    st.caption("×".join(map(str, row["shape"])), help=f"receptive field: {row['rf_size']} px")
                    st.image([pictures.enlarge(pictures.heat_colours(m, "viridis"), TILE) for m in row["maps"]],
                             caption=[f"ch {c} · {v:.2g}" for c, v in zip(row["channels"], row["means"])],
                             width=TILE)
            with st.container(width=200):
                st.markdown("**class scores**")
                pred = s["predicted"]
                st.caption(f"predicted: {s['classes'][pred]}")
                ui.show_chart(draw.probability_bar(s["classes"], s["probs"], pred, 18), key="ls_scores",
                              filename="class-scores", modebar=False)
        st.caption(f"{len(layers)} layers shown (for long networks: the activations, pools and block outputs, "
                   "evenly spaced). Each small map is stretched to its own range; the number under it is the "
                   "channel's mean activation, by which the channels were chosen. The **?** by a shape gives the layer's "
                   "receptive field: how many input pixels one of its units sees.")
        if pick.label is not None:
            st.markdown(f"True class: **{ctx.classes[pick.label]}** · predicted: **{s['classes'][s['predicted']]}** "
                        f"({ui.pct(s['probs'][s['predicted']])})")
