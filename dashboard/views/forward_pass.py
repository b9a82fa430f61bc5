"""The forward pass, step by step: one unit of a conv layer written out with the model's real numbers (input
patch, kernel, products, sum + bias, BatchNorm, ReLU, max-pool), then the classifier head and the softmax; and a
toy convolution to play with kernel size, stride and padding."""
import frame
import imagepick
import pictures
import streamlit as st
import teaching
import teaching_draw as draw
import teaching_steps as steps
import ui

ctx = frame.begin(
    "**How to read this:** a CNN is arithmetic, nothing more. Pick an image, a conv layer and one of its output "
    "channels, then **click a cell of the feature map** (or type its row and column): below, that single number "
    "is recomputed by hand — the input patch it sees, times the kernel, summed, plus the bias, then BatchNorm, "
    "the ReLU and the max-pool. Next to every result is the value the model itself computed (`hook`): they "
    "agree. At the end, the classifier turns the last features into class scores and probabilities.")


def _map_clicked():
    """Feature-map click -> the row/column inputs (a callback runs before the page is drawn)."""
    state = st.session_state.get("fp_map")
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    if points:
        ui.remember("fp_y", int(points[0]["y"]))
        ui.remember("fp_x", int(points[0]["x"]))


with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "fp")

if pick is not None:
    with ui.guard("writing out one unit"):
        convs = teaching.conv_layers(ctx)
        if not convs:
            st.warning("This model has no Conv2d layer to write out.")
            st.stop()
        c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
        layer = c1.selectbox("Conv layer", convs, **ui.kept("fp_layer", convs[0], convs))
        raw = teaching.conv_map(ctx, pick, layer)
        n_ch, h, w = raw.shape
        ch = int(c2.number_input("Channel", 0, n_ch - 1, **ui.kept("fp_ch", 0, bounds=(0, n_ch - 1))))
        y = int(c3.number_input("Row", 0, h - 1, **ui.kept("fp_y", h // 2, bounds=(0, h - 1))))
        x = int(c4.number_input("Column", 0, w - 1, **ui.kept("fp_x", w // 2, bounds=(0, w - 1))))
        left, right = st.columns([1, 2])
        with left:
            st.image(pictures.enlarge(pick.x01, 200), caption=pick.caption, width=200)
            st.caption(f"`{layer}` has {n_ch} output channels, each a {h}×{w} map. Bright = large value "
                       "(before BatchNorm and ReLU).")
        with right, st.container(key="fp_map_box"):
            ui.show_chart(draw.feature_map(raw[ch], f"{layer}, channel {ch}: click a cell", y, x), key="fp_map",
                          filename=f"{layer}-channel-{ch}", on_select=_map_clicked, selection_mode=("points",),
                          modebar=False)
        u = teaching.unit(ctx, pick, layer, ch, y, x)
        st.subheader(f"One unit, written out: `{u['layer']}` channel {ch}, row {y}, column {x}")
        with st.container(key="fp_steps"):
            steps.unit_steps(u, "fp")

    with ui.guard("writing out the classifier"):
        st.subheader("To the end: the class scores")
        classes = ctx.classes
        options = ["predicted"] + classes
        target = st.selectbox("Class whose score is written out", options, **ui.kept("fp_target", "predicted",
                                                                                      options))
        h_ = teaching.head(ctx, pick, None if target == "predicted" else classes.index(target))
        with st.container(key="fp_head"):
            steps.head(h_)
            ui.show_chart(draw.probability_bar(classes, h_["probs"], int(h_["probs"].argmax())), key="fp_probs",
                          filename="probabilities", modebar=False)

with ui.guard("drawing the toy convolution"):
    st.subheader("Play: kernel size, stride and padding")
    st.markdown("A 1-channel toy input and an edge kernel. Change the sliders: the output size follows the "
                "formula; click an output cell to see which input window it reads.")
    steps.toy_widget()
