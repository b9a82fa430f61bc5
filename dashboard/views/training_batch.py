"""What the training loop sees: a few test images through the checkpoint's augmentation (random crop after zero
padding, horizontal flip) and normalisation, exactly as cnnlib's training feeds them to the network."""
import frame
import streamlit as st
import teaching
import teaching_draw as draw
import testdata
import ui

ctx = frame.begin(
    "**How to read this:** the network never trains on the pictures as stored. Every epoch, each image is "
    "**padded** with black borders and a random window of the original size is **cropped** (the object moves "
    "a few pixels), then it is **flipped** left–right half of the time, and finally every colour channel is "
    "**normalised**: its dataset mean subtracted and divided by its standard deviation, so the values centre on "
    "0 (blue below the channel's average, red above). Press **New batch** for another random draw.")
SIZE = 104

pixels = testdata.test_pixels(ctx, why="Showing a training batch")
if pixels is None:
    st.stop()

with ui.guard("augmenting the batch"):
    rec = teaching.recipe(ctx)
    seed_key = "tb_seed"
    st.session_state.setdefault(seed_key, 0)
    c1, c2, c3 = st.columns([2, 1, 3])
    n = int(c1.slider("Images in the batch", 2, 8, **ui.kept("tb_n", 6)))
    if c2.button("New batch", key="tb_new", icon=":material/casino:", help="Another random pick and draw."):
        st.session_state[seed_key] += 1
    seed = st.session_state[seed_key]
    c3.markdown(f"Recipe **{rec['recipe']}** · augmentation **{'on' if rec['augment'] else 'off'}** · "
                f"crop padding **{rec['crop_padding']} px** · flip **{'on' if rec['flip'] else 'off'}** · "
                f"seed {seed}")
    if not rec["recorded"]:
        st.caption("This checkpoint records no training recipe (an imported model): cnnlib's defaults are shown.")
    b = teaching.batch_steps(ctx, pixels, n, seed)
    caps = [f"#{i} · {ctx.classes[int(pixels[1][i])]}" for i in b["indices"]]
    pad = b["padding"]
    with st.container(key="tb_stages"):
        st.markdown("**1 · Original** test images")
        st.image(draw.images(b["original"], SIZE), caption=caps, width=SIZE)
        st.markdown(f"**2 · Padded** by {pad} black pixels on every side; the yellow box is the window the random "
                    "crop takes" if b["augment"] else "**2 · Padding**: none (augmentation is off in this recipe)")
        st.image(draw.crop_boxes(b["padded"], b["offsets"], b["original"].shape[-2:], SIZE),
                 caption=[f"window at row {dy}, column {dx}" for dy, dx in b["offsets"].tolist()], width=SIZE)
        st.markdown("**3 · Cropped** back to the original size")
        st.image(draw.images(b["cropped"], SIZE), caption=caps, width=SIZE)
        flip_caps = [("flipped" if f else "not flipped") for f in b["flip"].tolist()]
        st.markdown("**4 · Flipped** left–right at random" if b["flip_enabled"] else
                    "**4 · Flip**: off in this recipe (digits and text would change meaning)")
        st.image(draw.images(b["flipped"], SIZE), caption=flip_caps, width=SIZE)
        st.markdown("**5 · Normalised**: (value / 255 − mean) / std for every channel, shown with a diverging "
                    "colour map (blue < 0 < red, ±3 std); channels side by side")
        st.image(draw.normalized(b["normalized"], SIZE), caption=caps, width=SIZE * min(3, b["normalized"].shape[1]))
    st.markdown("**The normalisation's numbers** (the dataset statistics stored in the checkpoint, and what this "
                "batch looks like after it):")
    st.dataframe(draw.norm_table(b), hide_index=True, key="tb_norm")
    st.caption("After normalising, each channel of a whole dataset has mean 0 and std 1; a small batch is close "
               "but not exact. The network's first layer sees only these numbers.")
