"""The misclassified test images: filter, sort, and explain one ("why this, why not that") right under it."""
import streamlit as st

import compute
import frame
import imagepick
import pictures
import testdata
import ui

ctx = frame.begin(
    "Every test image the model got wrong, with its three most likely classes. Sorting by **confidence** puts "
    "the most self-assured mistakes first (often mislabeled or genuinely ambiguous images); sorting by **loss** "
    "puts first the images where the true class got the least probability. Press **Explain** under an image to "
    "see, right below it, which pixels pushed the model towards its answer and which ones supported the true "
    "class.")

pixels = testdata.test_pixels(ctx, why="The image gallery")
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions and the test images are not on disk: "
               "there are no errors to list yet.")
    st.stop()
classes = ctx.classes
x = pixels[0] if pixels is not None else None
NCOLS = 6


def _explain(index) -> None:
    st.session_state["err_explain"] = index


def explanation_panel(idx: int) -> None:
    """Saliency for the predicted and the true class of test image `idx`, side by side."""
    true, pred = int(preds["targets"][idx]), int(preds["preds"][idx])
    with st.container(border=True, key="err_explain_panel"):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.markdown(f"#### Why **{classes[pred]}**, why not **{classes[true]}**? (test image #{idx})")
        close.button("Close", key="err_close", on_click=_explain, args=(None,), icon=":material/close:")
        methods = compute.attribution_methods()
        method = ui.value("err_method", "saliency")
        method = method if method in methods else "saliency"
        scale = ui.value("err_scale", "shared")
        alpha = ui.value("err_alpha", 0.5)
        pick = imagepick.test_image(ctx, x, pixels[1], idx)
        results = compute.attributions(ctx, pick, method, [pred, true], scale=scale)
        probs = results[0]["probs"]
        views = [pictures.enlarge(x[idx], 160)] + [pictures.enlarge(pictures.overlay(pick.x01, r["heatmap"], alpha),
                                                                    160) for r in results]
        caps = [f"the image (true: {classes[true]})",
                f"evidence for {classes[pred]} (predicted, {ui.pct(probs[pred])})",
                f"evidence for {classes[true]} (true class, {ui.pct(probs[true])})"]
        cols = st.columns([1, 1, 1, 1.4])
        for col, im, cap in zip(cols, views, caps):
            col.image(im, caption=cap, width="stretch")
        with cols[3]:           # the options beside the images, never under an image's hover toolbar
            st.selectbox("Method", list(methods), format_func=methods.get,
                         **ui.kept("err_method", "saliency", list(methods)))
            st.radio("Colour scale", ["shared", "image"], horizontal=True,
                     format_func={"shared": "shared (compare strength)", "image": "per image"}.get,
                     **ui.kept("err_scale", "shared"))
            st.slider("Overlay opacity", 0.0, 1.0, step=0.05, **ui.kept("err_alpha", 0.5))
        st.caption(f"{methods[method]}: warm colours mark the pixels that most raise each class's score. "
                   "Where the two maps differ, the model found the predicted class's pattern and missed the "
                   "true one's.")
        ui.download_png(pictures.side_by_side(views), f"explain-{idx}-{method}.png", key="err_explain_png")
        ui.scroll_into_view("err_explain_panel", token=idx)      # a panel opened near the screen's edge comes in


with ui.guard("filtering the errors"):
    names = ["any class"] + classes
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    t_name = c1.selectbox("True class", names, **ui.kept("err_true", "any class", names))
    p_name = c2.selectbox("Predicted as", names, **ui.kept("err_pred", "any class", names))
    sort = c3.radio("Sort by", ["confidence", "loss"], horizontal=True, **ui.kept("err_sort", "confidence"),
                    format_func=lambda s: {"confidence": "confidence (most sure first)",
                                           "loss": "loss (hardest first)"}[s])
    limit = int(c4.number_input("Show", 6, 240, step=6, **ui.kept("err_limit", 24)))
    res = compute.query_misclassified(preds, true_class=None if t_name == "any class" else classes.index(t_name),
                                      pred_class=None if p_name == "any class" else classes.index(p_name),
                                      sort=sort, limit=limit, images=x)
    wrong = int((preds["preds"] != preds["targets"]).sum())
    st.markdown(f"**{res['count']}** misclassified images match (of {wrong} errors in {rep['n']} test images); "
                f"showing {len(res['indices'])}.")
    rows = [{"index": int(i), "true": classes[t], "predicted": classes[p], "confidence": ui.pct(c),
             "loss": round(float(lo), 4), "top-3": " · ".join(f"{classes[k]} {ui.pct(v)}" for k, v in top)}
            for i, t, p, c, lo, top in zip(res["indices"], res["targets"], res["preds"], res["confidence"],
                                           res["losses"], res["top3"])]

with ui.guard("drawing the gallery"):
    chosen = st.session_state.get("err_explain")
    shown = [int(i) for i in res["indices"]]
    if x is not None and shown:
        with st.container(key="err_gallery"):
            for start in range(0, len(shown), NCOLS):
                cols = st.columns(NCOLS)
                for col, j in zip(cols, range(start, min(start + NCOLS, len(shown)))):
                    i, t, p = shown[j], int(res["targets"][j]), int(res["preds"][j])
                    with col.container(key=f"err_cell_{i}"):
                        st.image(pictures.enlarge(res["images"][j], 128), width="stretch")
                        with st.container(height=124, border=False):    # same height in every cell: buttons align
                            st.markdown(f"**{classes[p]}** ✗ (true: {classes[t]})  \n"
                                        + " · ".join(f"{classes[k]} {ui.pct(v)}" for k, v in res["top3"][j])
                                        + f"  \nloss {float(res['losses'][j]):.2f}")
                        st.button("Explain", key=f"err_btn_{i}", on_click=_explain, args=(i,), width="stretch",
                                  type="primary" if i == chosen else "secondary")
                if chosen in shown[start:start + NCOLS]:       # the explanation right under the pressed image's row
                    with ui.guard("explaining the image"):
                        explanation_panel(int(chosen))
    if x is not None and chosen is not None and chosen not in shown and 0 <= chosen < len(x):
        with ui.guard("explaining the image"):
            explanation_panel(int(chosen))              # filtered out of the gallery meanwhile: keep it at the end
    if rows:
        with st.expander("The same list as a table", expanded=x is None):
            st.dataframe(rows, hide_index=True, width="stretch", key="err_table")
        ui.download_csv(rows, "misclassified.csv", key="err_csv")
