"""The misclassified test images: filter, sort, and explain one ("why this, why not that")."""
import streamlit as st

import lens
import ui

ctx = lens.setup(
    "Errors",
    "Every test image the model got wrong, with its three most likely classes. Sorting by **confidence** puts "
    "the most self-assured mistakes first (often mislabeled or genuinely ambiguous images); sorting by **loss** "
    "puts first the images where the true class got the least probability. Press **Explain** under an image to "
    "see which pixels pushed the model towards its answer and which ones supported the true class.", icon="🧐")

pixels = lens.test_pixels(ctx, why="The image gallery")
preds, rep = ui.checked("evaluating the test split", lens.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions and the test images are not on disk: "
               "there are no errors to list yet.")
    st.stop()
classes = ctx.classes
x = pixels[0] if pixels is not None else None


def _explain(index: int) -> None:
    st.session_state["err_explain"] = index


with ui.guard("filtering the errors"):
    names = ["any class"] + classes
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    t_name = c1.selectbox("True class", names, **ui.kept("err_true", "any class", names))
    p_name = c2.selectbox("Predicted as", names, **ui.kept("err_pred", "any class", names))
    sort = c3.radio("Sort by", ["confidence", "loss"], horizontal=True, **ui.kept("err_sort", "confidence"),
                    format_func=lambda s: {"confidence": "confidence (most sure first)",
                                           "loss": "loss (hardest first)"}[s])
    limit = int(c4.number_input("Show", 6, 240, step=6, **ui.kept("err_limit", 24)))
    res = lens.query_misclassified(preds, true_class=None if t_name == "any class" else classes.index(t_name),
                                   pred_class=None if p_name == "any class" else classes.index(p_name),
                                   sort=sort, limit=limit, images=x)
    wrong = int((preds["preds"] != preds["targets"]).sum())
    st.markdown(f"**{res['count']}** misclassified images match (of {wrong} errors in {rep['n']} test images); "
                f"showing {len(res['indices'])}.")
    rows = [{"index": int(i), "true": classes[t], "predicted": classes[p], "confidence": round(float(c), 4),
             "loss": round(float(lo), 4), "top-3": " · ".join(f"{classes[k]} {v:.0%}" for k, v in top)}
            for i, t, p, c, lo, top in zip(res["indices"], res["targets"], res["preds"], res["confidence"],
                                           res["losses"], res["top3"])]

with ui.guard("explaining the image"):
    chosen = st.session_state.get("err_explain")
    if chosen is not None and x is not None and 0 <= chosen < len(x):
        idx = int(chosen)
        true, pred = int(preds["targets"][idx]), int(preds["preds"][idx])
        with st.container(border=True, key="err_explain_panel"):
            head, close = st.columns([6, 1])
            head.markdown(f"#### Why **{classes[pred]}**, why not **{classes[true]}**? (test image #{idx})")
            close.button("Close", key="err_close", on_click=_explain, args=(None,))
            methods = lens.attribution_methods()
            o1, o2, o3 = st.columns(3)
            method = o1.selectbox("Method", list(methods), format_func=methods.get,
                                  **ui.kept("err_method", "saliency", list(methods)))
            scale = o2.radio("Colour scale", ["shared", "image"], horizontal=True,
                             format_func={"shared": "shared (compare strength)", "image": "per image"}.get,
                             **ui.kept("err_scale", "shared"))
            alpha = o3.slider("Overlay opacity", 0.0, 1.0, step=0.05, **ui.kept("err_alpha", 0.5))
            pick = lens.test_image(ctx, x, pixels[1], idx)
            results = lens.attributions(ctx, pick, method, [pred, true], scale=scale)
            probs = results[0]["probs"]
            views = [ui.big(x[idx], 192)] + [ui.big(lens.overlay(pick.x01, r["heatmap"], alpha), 192)
                                               for r in results]
            caps = [f"the image (true: {classes[true]})",
                    f"evidence for {classes[pred]} (predicted, {probs[pred]:.0%})",
                    f"evidence for {classes[true]} (true class, {probs[true]:.0%})"]
            cols = st.columns(3)
            for col, im, cap in zip(cols, views, caps):
                col.image(im, caption=cap, width="stretch")
            st.caption(f"{methods[method]}: warm colours mark the pixels that most raise each class's score. "
                       "Where the two maps differ, the model found the predicted class's pattern "
                       "and missed the true one's.")
            ui.download_png(ui.viz.hstack(views), f"explain-{idx}-{method}.png", key="err_explain_png")

with ui.guard("drawing the gallery"):
    if x is not None and len(res["indices"]):
        ncols = 6
        with st.container(key="err_gallery"):
            for start in range(0, len(res["indices"]), ncols):
                cols = st.columns(ncols)
                for col, j in zip(cols, range(start, min(start + ncols, len(res["indices"])))):
                    i = int(res["indices"][j])
                    t, p = int(res["targets"][j]), int(res["preds"][j])
                    col.image(ui.big(res["images"][j], 128), width="stretch")
                    col.markdown(f"**{classes[p]}** ✗ (true: {classes[t]})  \n"
                                 + " · ".join(f"{classes[k]} {v:.0%}" for k, v in res["top3"][j])
                                 + f"  \nloss {float(res['losses'][j]):.2f}")
                    col.button("Explain", key=f"err_btn_{i}", on_click=_explain, args=(i,), width="stretch")
    if rows:
        with st.expander("The same list as a table", expanded=x is None):
            st.dataframe(rows, hide_index=True, width="stretch", key="err_table")
        ui.download_csv(rows, "misclassified.csv", key="err_csv")

lens.prefetch(ctx)   # warm the caches the other pages read (background, once per checkpoint)
