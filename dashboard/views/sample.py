"""One test image on its own page (?i=<test index>): the image as the model sees it, label, prediction and top
classes, the triage verdict with its evidence, a tag for it alone (kept beside the checkpoint), the explanation
with the nearest and the most influential training images, and the most similar test images."""
import streamlit as st

import compute
import frame
import gallery
import sample
import testdata
import ui

ctx = frame.begin(
    "Everything about one test image. Press **Open** under any image on the Evaluation, Errors, Embeddings, "
    "Probably mislabelled, Failure slices or Two models page to come here; the address (…?i=N) opens the same "
    "image again, for you or a colleague.")

pixels = testdata.test_pixels(ctx, why="Showing the image")
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions and the test images are not on disk: there is no "
               "test image to show yet.")
    st.stop()
n = len(preds["targets"])
if pixels is not None and len(pixels[1]) != n:
    st.info("The test images on disk are not the ones the stored predictions were made on: the page shows the "
            "predictions without pixels.", icon=":material/image_not_supported:")
    pixels = None

with ui.guard("choosing the image"):
    i, note = sample.chosen_index(n)
    c1, _ = st.columns([1, 3])
    with c1:
        sample.picker(n, i)
    if note:
        st.info(note, icon=":material/link_off:")

with ui.guard("showing the image"):
    left, middle, right = st.columns([1.05, 1.3, 1.5], gap="medium")
    with left:
        if pixels is not None:
            sample.show_image(ctx, pixels, i)
    with middle:
        sample.facts(ctx, preds, i)
    with right:
        with ui.guard("working out the verdict"):
            sample.verdict_box(ctx, preds, pixels, i)
        sample.tag_box(ctx, preds, i)

if pixels is not None:
    with ui.guard("explaining the image"):
        gallery.explanation_panel(ctx, preds, pixels, i, "sample", standalone=True)
    with ui.guard("finding the most similar test images"):
        sample.similar_strip(ctx, preds, pixels, i)
