"""The misclassified test images: filter, sort, and explain one ("why this, why not that") right under it."""
import streamlit as st

import compute
import frame
import gallery
import testdata
import ui

ctx = frame.begin(
    "Every test image the model got wrong, with its three most likely classes. Sorting by **confidence** puts "
    "the most self-assured mistakes first (often mislabeled or genuinely ambiguous images); sorting by **loss** "
    "puts first the images where the true class got the least probability. Press **Explain** under an image to "
    "see, right below it, which pixels pushed the model towards its answer and which ones supported the true "
    "class, and the training images the network finds most similar: often the real reason for the mistake.")

pixels = testdata.test_pixels(ctx, why="The image gallery")
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions and the test images are not on disk: "
               "there are no errors to list yet.")
    st.stop()
classes = ctx.classes
x = pixels[0] if pixels is not None else None

with ui.guard("filtering the errors"):
    names = ["any class"] + classes
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    many = len(classes) > 30          # many classes: several at once, found by typing
    if many:
        t_many = c1.multiselect("True class", classes, placeholder="any class", **ui.kept("err_true_many", [], classes))
        p_many = c2.multiselect("Predicted as", classes, placeholder="any class",
                                **ui.kept("err_pred_many", [], classes))
        t_name = p_name = "any class"
    else:
        t_name = c1.selectbox("True class", names, **ui.kept("err_true", "any class", names))
        p_name = c2.selectbox("Predicted as", names, **ui.kept("err_pred", "any class", names))
    sort = c3.radio("Sort by", ["confidence", "loss"], horizontal=True, **ui.kept("err_sort", "confidence"),
                    format_func=lambda s: {"confidence": "confidence (most sure first)",
                                           "loss": "loss (hardest first)"}[s])
    limit = int(c4.number_input("Show", 6, 240, step=6, **ui.kept("err_limit", 24)))
    verdicts = gallery.verdict_filter(ctx, preds, pixels, prefix="err")   # None until "Find out why"
    res = compute.query_misclassified(preds, true_class=None if t_name == "any class" else classes.index(t_name),
                                      pred_class=None if p_name == "any class" else classes.index(p_name),
                                      sort=sort, limit=None if verdicts or many else limit)
    if many:
        res = compute.only_classes(res, [classes.index(n) for n in t_many], [classes.index(n) for n in p_many],
                                   None if verdicts else limit)
    res = gallery.keep_verdicts(res, verdicts, limit)
    wrong = int((preds["preds"] != preds["targets"]).sum())
    st.markdown(f"**{res['count']}** misclassified images match (of {wrong} errors in {rep['n']} test images); "
                f"showing {len(res['indices'])}.")
    rows = [{"index": int(i), "true": classes[t], "predicted": classes[p], "confidence": ui.pct(c),
             "loss": round(float(lo), 4), "top-3": " · ".join(f"{classes[k]} {ui.pct(v)}" for k, v in top)}
            for i, t, p, c, lo, top in zip(res["indices"], res["targets"], res["preds"], res["confidence"],
                                           res["losses"], res["top3"])]
    rows = gallery.with_verdicts(rows, verdicts, classes)

with ui.guard("drawing the gallery"):
    if x is not None and len(res["indices"]):
        gallery.show(ctx, preds, pixels, res["indices"], prefix="err", verdicts=verdicts)
    if rows:
        with st.expander("The same list as a table", expanded=x is None):
            st.dataframe(rows, hide_index=True, width="stretch", key="err_table")
        ui.download_csv(rows, "misclassified.csv", key="err_csv")
