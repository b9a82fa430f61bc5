"""The image gallery of the Errors page, shared by every page that lists test images (an embedding selection):
cells of image, caption box and **Explain**; the explanation ("why this, why not that" saliency, and the
training images nearest to it) opens right under the pressed image's row. Every key starts with the page's
prefix: <prefix>_gallery (or `key`), <prefix>_cell_<i>, <prefix>_btn_<i>, <prefix>_explain_panel, ...

Also the strip of nearest training images (Explain panel and the Nearest training images page)."""
from __future__ import annotations

import numpy as np
import streamlit as st

import compute
import diagnose
import imagepick
import pictures
import ui
from checkpoints import Ctx

NCOLS = 6


def _explain(prefix: str, index) -> None:
    st.session_state[f"{prefix}_explain"] = index


def _loss(preds: dict, i: int) -> float:
    losses = preds.get("losses")
    if losses is not None:
        return float(losses[i])
    return float(-np.log(max(float(preds["probs"][i][int(preds["targets"][i])]), 1e-12)))


def show(ctx: Ctx, preds: dict, pixels, indices, prefix: str, key: str | None = None, ncols: int = NCOLS) -> None:
    """Cells for test images `indices` (already filtered, ordered and paged), `ncols` per row; Explain opens
    the panel under the pressed image's row (or after the gallery when that image is no longer shown)."""
    classes = ctx.classes
    x = pixels[0]
    chosen = st.session_state.get(f"{prefix}_explain")
    shown = [int(i) for i in indices]
    with st.container(key=key or f"{prefix}_gallery"):
        for start in range(0, len(shown), ncols):
            cols = st.columns(ncols)
            for col, i in zip(cols, shown[start:start + ncols]):
                t, p = int(preds["targets"][i]), int(preds["preds"][i])
                probs = np.asarray(preds["probs"][i], np.float32)
                top = probs.argsort()[::-1][:3]
                with col.container(key=f"{prefix}_cell_{i}"):
                    st.image(pictures.enlarge(x[i], 128), caption=f"#{i}", width="stretch")
                    with st.container(height=124, border=False):       # same height in every cell: buttons align
                        verdict = f"**{classes[p]}** ✗ (true: {classes[t]})" if p != t else f"**{classes[p]}** ✓"
                        st.markdown(verdict + "  \n" + " · ".join(f"{classes[k]} {ui.pct(probs[k])}" for k in top)
                                    + f"  \nloss {_loss(preds, i):.2f}")
                    st.button("Explain", key=f"{prefix}_btn_{i}", on_click=_explain, args=(prefix, i),
                              width="stretch", type="primary" if i == chosen else "secondary")
            if chosen in shown[start:start + ncols]:          # the explanation right under the pressed image's row
                with ui.guard("explaining the image"):
                    explanation_panel(ctx, preds, pixels, int(chosen), prefix)
    if chosen is not None and chosen not in shown and 0 <= chosen < len(x):
        with ui.guard("explaining the image"):
            explanation_panel(ctx, preds, pixels, int(chosen), prefix)   # filtered out meanwhile: keep it at the end


def explanation_panel(ctx: Ctx, preds: dict, pixels, idx: int, prefix: str) -> None:
    """Saliency for the predicted and the true class of test image `idx`, side by side, then its nearest
    training images."""
    classes = ctx.classes
    x = pixels[0]
    true, pred = int(preds["targets"][idx]), int(preds["preds"][idx])
    with st.container(border=True, key=f"{prefix}_explain_panel"):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.markdown(f"#### Why **{classes[pred]}**, why not **{classes[true]}**? (test image #{idx})")
        close.button("Close", key=f"{prefix}_close", on_click=_explain, args=(prefix, None), icon=":material/close:")
        methods = compute.attribution_methods()
        method = ui.value(f"{prefix}_method", "saliency")
        method = method if method in methods else "saliency"
        scale = ui.value(f"{prefix}_scale", "shared")
        alpha = ui.value(f"{prefix}_alpha", 0.5)
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
                         **ui.kept(f"{prefix}_method", "saliency", list(methods)))
            st.radio("Colour scale", ["shared", "image"], horizontal=True,
                     format_func={"shared": "shared (compare strength)", "image": "per image"}.get,
                     **ui.kept(f"{prefix}_scale", "shared"))
            st.slider("Overlay opacity", 0.0, 1.0, step=0.05, **ui.kept(f"{prefix}_alpha", 0.5))
        st.caption(f"{methods[method]}: warm colours mark the pixels that most raise each class's score. "
                   "Where the two maps differ, the model found the predicted class's pattern and missed the "
                   "true one's.")
        ui.download_png(pictures.side_by_side(views), f"explain-{idx}-{method}.png", key=f"{prefix}_explain_png")
        with ui.guard("finding the nearest training images"):
            neighbours_strip(ctx, pick, key=f"{prefix}_neighbours")
        ui.scroll_into_view(f"{prefix}_explain_panel", token=idx)   # a panel opened near the screen's edge comes in


def neighbours_strip(ctx: Ctx, pick, k: int = diagnose.NEIGHBOURS_K, key: str = "neighbours",
                     size: int = 96) -> dict | None:
    """The k training images nearest to `pick` in the model's feature space, with their labels and cosine
    similarities, and one sentence on what they say about the prediction."""
    hits = diagnose.neighbours(ctx, pick, k)
    if hits is None:
        return None
    classes = ctx.classes
    pred = int(hits["pred"])
    labels = [int(v) for v in hits["labels"]]
    same = sum(v == pred for v in labels)
    counts = np.bincount(labels, minlength=len(classes))
    mix = ", ".join(f"{int(counts[c])} {classes[c]}" for c in np.argsort(-counts, kind="stable") if counts[c])
    with st.container(key=key):
        st.markdown(f"**The {len(labels)} most similar training images** (in the features the classifier reads): "
                    f"{mix}.")
        if same >= len(labels) / 2:
            story = (f"It says **{classes[pred]}** because training {classes[pred]} images like these look like "
                     "this one to the network.")
        else:
            story = (f"{'None' if same == 0 else f'Only {same}'} of them {'is' if same == 1 else 'are'} labelled "
                     f"**{classes[pred]}**: the prediction rests on weaker evidence than the look-alikes suggest.")
        if pick.label is not None and pick.label != pred:
            story += f" The true class, {classes[pick.label]}, has {int(counts[pick.label])} of them."
        st.caption(story)
        caps = [f"{classes[v]} · {s:.2f}" for v, s in zip(labels, hits["similarities"].tolist())]
        st.image([pictures.enlarge(im, size) for im in hits["images"]], caption=caps, width=size)
    return hits
