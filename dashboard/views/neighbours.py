"""The training images behind a prediction: the k nearest training images to any test image or upload, in
the features the classifier reads."""
import streamlit as st

import compute
import diagnose
import frame
import gallery
import imagepick
import pictures
import ui

ctx = frame.begin(
    "A network answers by resemblance: an image gets the class of the training images whose features it "
    "shares. Here are the training images closest to the chosen one in the features the classifier reads "
    "(cosine similarity: 1 = the same direction). When a cat is called *dog*, these often show why — *it says "
    "dog because these training dogs look like this cat*: the same pose, background or colours. Labels under "
    "each neighbour are the training set's own, so a mislabelled training image shows up here too.")

with ui.guard("choosing the image"):
    pick = imagepick.pick_image(ctx, "nn")

if pick is not None:
    classes = ctx.classes
    with ui.guard("finding the nearest training images"):
        probs = compute.probabilities(ctx, pick)
        pred = int(probs.argmax())
        left, right = st.columns([1, 3])
        with left:
            st.image(pictures.enlarge(pick.x01 if pick.original is None else pick.original, 192),
                     caption=pick.caption, width="stretch")
            st.markdown(f"Prediction: **{classes[pred]}** ({ui.pct(probs[pred])})"
                        + (f"  \ntrue class: **{classes[pick.label]}**" if pick.label is not None else ""))
            k = st.slider("Neighbours", 3, 30, **ui.kept("nn_k", diagnose.NEIGHBOURS_K))
            imagepick.ood_notice(ctx, pick, probs)
        with right:
            gallery.neighbours_strip(ctx, pick, k=int(k), key="nn_result", size=112)
