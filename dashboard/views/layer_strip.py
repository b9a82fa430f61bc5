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
SCORES_PX = 280         # the class-score column: "predicted: automobile" and the bars with their labels
CHAR_PX = 9             # a bold character of a layer name, generously


def _breakable(text: str) -> str:
    """`text` with a zero-width space after each "." and "×": the only places a narrow column breaks it."""
    return text.replace(".", ".\u200b").replace("×", "×\u200b")


def _column_px(name: str, tile: int) -> int:
    """A layer's column: the tiles' width, or wider when a piece of its name between dots would not fit."""
    longest = max(len(part) + 1 for part in name.split("."))
    return max(tile + 16, CHAR_PX * longest + 8)


with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "ls")

if pick is not None:
    with ui.guard("running the image through the layers"):
        per = int(st.slider("Channels per layer", 1, 6, **ui.kept("ls_per", 3)))
        s = teaching.strip(ctx, pick, per)
        layers = s["layers"]
        TILE = max(56, min(84, (STRIP_PX - SCORES_PX) // (len(layers) + 1) - 14))
        # every column as wide as its name's longest piece, names and shapes broken only after "." and "×"
        # (not mid-word: "maxpo / ol"); the columns wrap onto a second row instead of running off the page
        with st.container(key="ls_strip", horizontal=True, gap="small", wrap=True):
            with st.container(width=TILE + 16, key="ls_col_input"):
                st.markdown("**input**")
                st.caption(_breakable("×".join(map(str, ctx.meta["input_shape"]))))
                st.image(pictures.enlarge(pick.x01, TILE), width=TILE)
            for n, row in enumerate(layers):
                with st.container(width=_column_px(row["layer"], TILE), key=f"ls_col_{n}"):
                    st.markdown(f"**{_breakable(row['layer'])}**")
                    st.caption(_breakable("×".join(map(str, row["shape"]))), help=f"receptive field: {row['rf_size']} px")
                    st.image([pictures.enlarge(pictures.heat_colours(m, "viridis"), TILE) for m in row["maps"]],
                             caption=[f"ch {c} · {v:.2g}" for c, v in zip(row["channels"], row["means"])],
                             width=TILE)
            with st.container(width=SCORES_PX, key="ls_scores_col"):
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
