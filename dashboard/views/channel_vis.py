"""What a channel wants to see: an image optimised from noise to excite one channel (or a class score), beside the
test images that excite that channel most."""
import frame
import pictures
import streamlit as st
import teaching
import testdata
import ui

ctx = frame.begin(
    "**How to read this:** start from noise and change the pixels, step by step, so that one channel fires as "
    "strongly as possible (*feature visualisation*). What comes out is the pattern the channel is looking for — "
    "stripes, colours, textures in early layers; parts of objects deeper in. On the right: the real test images "
    "that excite the same channel most. Together they tell you what the channel has learned to detect. "
    "(Optimising takes a few seconds to a minute on a CPU; results are kept.)")
SIZE = 260

with ui.guard("choosing the channel"):
    shapes = teaching.spatial_layers(ctx)
    names = list(shapes)
    kinds = ["a layer's channel", "a class score"]
    kind = st.radio("Visualise", kinds, horizontal=True, **ui.kept("cv_kind", kinds[0], kinds))
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    layer = channel = target = None
    if kind == kinds[0]:
        default = teaching.default_channel_layer(ctx)
        layer = c1.selectbox("Layer", names, **ui.kept("cv_layer", default, names),
                             format_func=lambda n: f"{n}  ({' × '.join(map(str, shapes[n]))})")
        n_ch = shapes[layer][0]
        channel = int(c2.number_input("Channel", 0, n_ch - 1, **ui.kept("cv_ch", 0, bounds=(0, n_ch - 1))))
    else:
        target = c1.selectbox("Class", list(range(len(ctx.classes))), format_func=lambda i: ctx.classes[i],
                              **ui.kept("cv_class", 0, list(range(len(ctx.classes)))))
    steps = int(c3.select_slider("Steps", [16, 32, 64, 128, 256], **ui.kept("cv_steps", teaching.VIS_STEPS)))
    seed = int(c4.number_input("Seed", 0, 999, **ui.kept("cv_seed", 0)))

with ui.guard("visualising the channel"):
    what = f"{layer}, channel {channel}" if target is None else f"the score of class {ctx.classes[target]}"
    result = teaching.visualization_cached(ctx, layer, channel, target, steps, seed)
    if result is None and st.button(f"Optimise an image for {what}", key="cv_go", type="primary",
                                    icon=":material/auto_awesome:"):
        result = teaching.visualize(ctx, layer, channel, target, steps, seed)
    left, right = st.columns([1, 2])
    with left, st.container(key="cv_result"):
        st.markdown(f"**What {what} wants to see**")
        if result is None:
            st.info("Press the button above to optimise an image (kept for this checkpoint and settings).")
        else:
            a, b = st.columns(2)
            gain = result.get("start_gain", 1.0)           # the start is nearly flat grey: shown stretched
            a.image(pictures.enlarge(result.get("start_contrast", result["start"]), SIZE // 2), width="stretch",
                    caption="start: noise" + (f" (contrast × {gain:,.0f})" if gain > 1.5 else ""))
            b.image(pictures.enlarge(result["image"], SIZE), caption=f"after {steps} steps", width="stretch")
            st.caption(f"Objective (mean activation{' / logit' if target is not None else ''}): "
                       f"{result['start_objective']:.3g} at the start → **{result['final_objective']:.3g}** "
                       f"after {steps} steps ({ui.duration(result['seconds'])}).")
            st.line_chart({"objective": result["objective_history"]}, height=140, x_label="step")
    with right, st.container(key="cv_top"):
        if target is not None:
            st.markdown("**The test images the model finds most like this class** are on the Evaluation page "
                        "(the diagonal cell of the confusion matrix, most confident first).")
        else:
            st.markdown(f"**The {teaching.TOP_K} test images that excite {what} most**")
            pixels = testdata.test_pixels(ctx, why="Finding the images that excite this channel")
            asked = pixels is not None and (teaching.top_images_ready(ctx, pixels, layer, channel) or st.button(
                f"Score all {len(pixels[1]):,} test images for {what}", key="cv_top_go",
                icon=":material/image_search:", help="One pass of every test image through the network, up to "
                "this layer (kept for this checkpoint and channel)."))
            if pixels is not None and not asked:
                st.caption("At this size the search reads every test image through the network, so it waits "
                           "for the button.")
            if asked:
                idx, scores = teaching.top_images(ctx, pixels, layer, channel)
                x, y = pixels
                caps = [f"#{i} · {ctx.classes[int(y[i])]} · {s:.3g}" for i, s in zip(idx.tolist(), scores.tolist())]
                ui.image_grid(x[idx], caps, ncols=5, size=112, key="cv_top_grid")
                st.caption("The number is the channel's mean activation on that image, the score they are "
                           "ranked by.")
