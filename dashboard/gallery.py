"""The image gallery of the Errors page, shared by every page that lists test images (an embedding selection):
cells of image, caption box, **Explain** and **Open** (the image on its own page, views/sample.py); the
explanation ("why this, why not that" saliency, and the training images nearest to it) opens right under the
pressed image's row. Every key starts with the page's prefix: <prefix>_gallery (or `key`), <prefix>_cell_<i>,
<prefix>_btn_<i>, <prefix>_open_<i>, <prefix>_explain_panel, ...

With the triage verdicts (cnnlib.diagnose.triage, worked out on request: "Find out why"), each cell shows its
verdict, confidence and one line of evidence, and the page filters by verdict (verdict_filter, keep_verdicts).

Also the strip of nearest training images (Explain panel and the Nearest training images page) and, on request,
the most influential ones (TracIn proponents and opponents)."""
from __future__ import annotations

import numpy as np
import streamlit as st

import compute
import diagnose
import imagepick
import pictures
import sample
import ui
import verdicts
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

NCOLS = 6
VERDICTS = ("label error", "ambiguous", "out of distribution", "model error")   # cnnlib.diagnose.triage's order


def _explain(prefix: str, index) -> None:
    st.session_state[f"{prefix}_explain"] = index


def _loss(preds: dict, i: int) -> float:
    losses = preds.get("losses")
    if losses is not None:
        return float(losses[i])
    return float(-np.log(max(float(preds["probs"][i][int(preds["targets"][i])]), 1e-12)))


def show(ctx: Ctx, preds: dict, pixels, indices, prefix: str, key: str | None = None, ncols: int = NCOLS,
         verdicts: dict | None = None) -> None:
    """Cells for test images `indices` (already filtered, ordered and paged), `ncols` per row; Explain opens
    the panel under the pressed image's row (or after the gallery when that image is no longer shown).
    verdicts: verdict_filter's result (each cell then shows its verdict and evidence)."""
    classes = ctx.classes
    records = (verdicts or {}).get("records") or {}
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
                    if records:
                        with st.container(height=104, border=False, gap="xsmall"):   # the verdict, same height too
                            r = records.get(i)
                            if r is not None:
                                st.markdown(f":{COLOURS[r['verdict']]}-badge[{r['verdict']}] {r['confidence']:.0%}")
                                st.caption(evidence_line(r, classes, short=True))
                    st.button("Explain", key=f"{prefix}_btn_{i}", on_click=_explain, args=(prefix, i),
                              width="stretch", type="primary" if i == chosen else "secondary")
                    sample.open_button(i, f"{prefix}_open_{i}")          # the image on its own page
            if chosen in shown[start:start + ncols]:          # the explanation right under the pressed image's row
                with ui.guard("explaining the image"):
                    explanation_panel(ctx, preds, pixels, int(chosen), prefix)
    if chosen is not None and chosen not in shown and 0 <= chosen < len(x):
        with ui.guard("explaining the image"):
            explanation_panel(ctx, preds, pixels, int(chosen), prefix)   # filtered out meanwhile: keep it at the end


@st.fragment
def explanation_panel(ctx: Ctx, preds: dict, pixels, idx: int, prefix: str, standalone: bool = False) -> None:
    """Saliency for the predicted and the true class of test image `idx` (a correct one: the runner-up class),
    side by side, then its nearest training images. standalone: the panel is the page's own (views/sample.py):
    no Close button, no scroll. A fragment: its own widgets (method, scale, opacity, the influence button) redraw
    the panel alone, not the page's whole gallery; Close redraws the page."""
    if not standalone and st.session_state.get(f"{prefix}_explain") != idx:
        st.rerun()                                   # closed (or another image chosen): the page redraws without it
    classes = ctx.classes
    x = pixels[0]
    true, pred = int(preds["targets"][idx]), int(preds["preds"][idx])
    other = true if true != pred else int(np.argsort(-np.asarray(preds["probs"][idx], np.float32))[1])
    with st.container(border=True, key=f"{prefix}_explain_panel"):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.markdown(f"#### Why **{classes[pred]}**, why not **{classes[other]}**? (test image #{idx})")
        if not standalone:
            close.button("Close", key=f"{prefix}_close", on_click=_explain, args=(prefix, None),
                         icon=":material/close:")
        methods = compute.attribution_methods()
        method = ui.value(f"{prefix}_method", "saliency")
        method = method if method in methods else "saliency"
        scale = ui.value(f"{prefix}_scale", "shared")
        alpha = ui.value(f"{prefix}_alpha", 0.5)
        pick = imagepick.test_image(ctx, x, pixels[1], idx)
        results = compute.attributions(ctx, pick, method, [pred, other], scale=scale)
        probs = results[0]["probs"]
        views = [pictures.enlarge(x[idx], 160)] + [pictures.enlarge(pictures.overlay(pick.x01, r["heatmap"], alpha),
                                                                    160) for r in results]
        caps = [f"the image (true: {classes[true]})",
                f"evidence for {classes[pred]} (predicted, {ui.pct(probs[pred])})",
                f"evidence for {classes[other]} ({'true class' if other == true else 'runner-up'}, "
                f"{ui.pct(probs[other])})"]
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
                   + ("true one's." if other == true else "runner-up's."))
        ui.download_png(pictures.side_by_side(views), f"explain-{idx}-{method}.png", key=f"{prefix}_explain_png")
        with ui.guard("finding the nearest training images"):
            neighbours_strip(ctx, pick, key=f"{prefix}_neighbours")
        with ui.guard("finding the most influential training images"):
            influence_strip(ctx, pick, key=f"{prefix}_influence")
        if not standalone:
            ui.scroll_into_view(f"{prefix}_explain_panel", token=idx)   # a panel opened near the edge comes in


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


# ----------------------------------------------------------------------------- verdicts

COLOURS = {"label error": "orange", "ambiguous": "blue", "out of distribution": "violet", "model error": "red"}


def evidence_line(r: dict, classes: list[str], short: bool = False) -> str:
    """One line of a triage record's evidence, the signals its verdict rests on (short: for a gallery cell)."""
    ev, nb = r["evidence"], r["evidence"]["neighbors"]
    k, pred, true = nb["k"], classes[r["predicted"]], classes[r["label"]]
    near = "nearest are" if short else "nearest training images are"
    agree = lambda share: round(share * k)
    if r["verdict"] == "label error":
        return (f"label quality {ev['label_quality']:.2f}; {agree(nb['agree_predicted'])} of {k} {near} {pred}"
                + ("" if short else " (the prediction)"))
    if r["verdict"] == "ambiguous":
        (a, pa), (b, pb) = ev["top2"]
        return (f"{classes[a]} {ui.pct(pa)} vs {classes[b]} {ui.pct(pb)}; "
                + ("nearest split" if short else f"the {k} nearest training images are split (largest share "
                                                 f"{nb['largest_share']:.0%})"))
    if r["verdict"] == "out of distribution":
        return (f"farther from training than {ev['distance_percentile']:.0%} of test images" if short else
                f"farther from the training images than {ev['distance_percentile']:.0%} of the test images; "
                f"less confident than {1 - ev['confidence_percentile']:.0%}")
    return (f"label quality {ev['label_quality']:.2f}; {agree(nb['agree_given'])} of {k} {near} {true}"
            + ("" if short else " (the label)"))


def _triage_on(prefix: str, token: str) -> None:
    st.session_state[f"{prefix}_triage_on"] = token


def triage_on_request(ctx: Ctx, preds: dict, pixels, prefix: str, stacked: bool = False) -> dict | None:
    """A "Find out why" button until pressed (or until any session has worked the verdicts out), then triage's
    verdicts {test index: record}; None before, or with one sentence saying why there are none. stacked: the
    button above its caption (a narrow column), not beside it."""
    import testdata
    token = f"{ctx.key}|{testdata.pixels_key(ctx)}"
    if st.session_state.get(f"{prefix}_triage_on") != token and not verdicts.triage_ready(ctx, preds):
        c1, c2 = (st.container(), st.container()) if stacked else st.columns([1, 4], vertical_alignment="center")
        c1.button("Find out why", key=f"{prefix}_triage_btn", icon=":material/troubleshoot:", on_click=_triage_on,
                  args=(prefix, token), width="stretch")
        c2.caption("A verdict for every mistake (label error, ambiguous, out of distribution, model error) with "
                   "its evidence; the first time, the network reads every training and test image (a progress bar).")
        return None
    records = None
    with ui.guard("working out the verdicts"):                # a failure: one sentence, the gallery stays
        records = verdicts.triage(ctx, preds, pixels)
    return records


def verdict_filter(ctx: Ctx, preds: dict, pixels, prefix: str) -> dict | None:
    """triage_on_request, then a verdict filter; returns {"records": {test index: triage record}, "chosen":
    [verdicts]} or None (no verdicts yet, or one sentence says why there are none)."""
    records = triage_on_request(ctx, preds, pixels, prefix)
    if records is None:
        return None
    counts = {v: sum(r["verdict"] == v for r in records.values()) for v in VERDICTS}
    chosen = st.multiselect("Verdict", list(VERDICTS), format_func=lambda v: f"{v} ({counts[v]})",
                            **ui.kept(f"{prefix}_verdicts", list(VERDICTS), list(VERDICTS)),
                            help="cnnlib's triage rule: out of distribution, else label error, else ambiguous, "
                                 "else model error (README, cnnlib triage).")
    return {"records": records, "chosen": list(chosen)}


def keep_verdicts(res: dict, verdicts: dict | None, limit: int) -> dict:
    """query_misclassified's result (run without a limit) cut to the chosen verdicts, then to `limit`."""
    if verdicts is None:
        return res
    records, chosen = verdicts["records"], set(verdicts["chosen"])
    keep = np.array([records.get(int(i), {}).get("verdict") in chosen for i in res["indices"]], bool)
    pos = np.flatnonzero(keep)[:max(int(limit), 0)]
    out = {k: ([v[j] for j in pos] if isinstance(v, list) else v[pos]) if isinstance(v, (list, np.ndarray))
           else v for k, v in res.items()}
    out["count"] = int(keep.sum())
    return out


def keep_indices(indices, verdicts: dict | None) -> np.ndarray:
    """Test images `indices` cut to the chosen verdicts; with every verdict chosen (or none worked out), all of
    them, correct ones included."""
    idx = np.asarray(indices, np.int64).reshape(-1)
    if verdicts is None or set(verdicts["chosen"]) >= set(VERDICTS):
        return idx
    recs, chosen = verdicts["records"], set(verdicts["chosen"])
    return idx[np.array([recs.get(int(i), {}).get("verdict") in chosen for i in idx], bool)]


def with_verdicts(rows: list[dict], verdicts: dict | None, classes: list[str]) -> list[dict]:
    """The table's rows with each image's verdict, its confidence and its evidence line."""
    if verdicts is None:
        return rows
    recs = verdicts["records"]
    out = []
    for row in rows:
        r = recs.get(row["index"])
        out.append(row if r is None else {**row, "verdict": r["verdict"], "verdict confidence": r["confidence"],
                                          "evidence": evidence_line(r, classes), "rule": r["evidence"]["rule"]})
    return out


# ----------------------------------------------------------------------------- the most influential training images

def _score(s: float) -> str:
    """A TracIn score as people read it: signed, 3 significant digits, never in exponent notation."""
    if abs(s) < 1e-4:
        return "≈ 0"
    return f"{s:+,.0f}" if abs(s) >= 100 else f"{s:+.3g}" if abs(s) >= 0.01 else f"{s:+.4f}"


def _influence_on(key: str, token: str) -> None:
    st.session_state[f"{key}_on"] = token


def influence_strip(ctx: Ctx, pick, key: str = "influence", size: int = 80) -> dict | None:
    """On request (a button: the first call reads every training image through the network), TracIn's most
    influential training images for the prediction: proponents (they pushed towards it) and opponents."""
    with st.container(key=key):
        if st.session_state.get(f"{key}_on") != pick.key:
            st.button("Most influential training images", key=f"{key}_btn", icon=":material/model_training:",
                      on_click=_influence_on, args=(key, pick.key),
                      help="TracIn on the final layer: the training images whose gradient most agrees (proponents) "
                           "or disagrees (opponents) with this image's. The first time, every training image is "
                           "read through the network.")
            return None
        try:
            res = verdicts.influence(ctx, pick)
        except CNNLibError as e:
            st.info(ui.capitalised(ui.one_sentence(str(e))), icon=":material/info:")
            return None
        if res is None:
            return None
        classes = ctx.classes
        target = classes[int(res["label"])]
        for which, what in (("proponents", f"pushed towards **{target}**"),
                            ("opponents", f"pushed against **{target}**")):
            part = res[which]
            st.markdown(f"**Most influential training images, {which}** ({what}; TracIn score):")
            st.image([pictures.enlarge(im, size) for im in part["images"]], width=size,
                     caption=[f"{classes[int(c)]} · {_score(s)}" for c, s in zip(part["labels"], part["scores"])])
        st.caption("An opponent with the predicted look but another label, or a proponent labelled as predicted "
                   "that looks like the true class, points at the training data rather than the network.")
    return res
