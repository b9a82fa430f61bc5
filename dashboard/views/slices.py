"""Failure slices: groups of test images that look alike to the network and that it gets wrong far more often
than overall (cnnlib slices), worst first, each with its class mix, verdict mix and most typical images; a
slice's images open in the gallery under its card, to explain and to tag for the Selections page."""

import numpy as np
import streamlit as st

import compute
import failslices
import frame
import gallery
import sample
import selections
import testdata
import ui
import verdicts

ctx = frame.begin(
    "A model that is 90% right may be 40% wrong on one kind of image: night photos, a rare pose, a sub-breed "
    "labelled like its neighbour. **Failure slices** are such groups: test images that look alike to the network "
    "(k-means on its features within each class, never told which images are wrong) and that it gets wrong far "
    "more often than overall, kept only when a binomial test says so (1% family-wise). They are ranked by size "
    "× excess error: many images, much worse. Each card shows what the slice holds, what the model calls it, "
    "why its mistakes happen (the verdicts) and its most typical images; **Show its images** lists them all.")

pixels = testdata.test_pixels(ctx, why="Finding the failure slices")
if pixels is None:
    st.stop()
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
classes, x = ctx.classes, pixels[0]
n, cfg = len(preds["targets"]), failslices.config()
base = failslices.model_error_rate(preds)
if n < 2 * cfg.min_size:
    st.info(f"Failure slices need at least {2 * cfg.min_size} test images, and this data has {n}.",
            icon=":material/info:")
    st.stop()
biggest = int(np.bincount(np.asarray(preds["targets"], np.int64)).max())
if biggest < cfg.min_size:
    st.info(f"Failure slices are looked for within each class, and no class has {cfg.min_size} test images or "
            f"more (the largest has {biggest}), so there is no group large enough to test.", icon=":material/info:")
    st.stop()
if base == 0:
    st.success(f"The model gets all {n:,} test images right, so no group of them can be worse than the model.")
    st.stop()

token = f"{ctx.key}|{testdata.pixels_key(ctx)}"


def _turn_on(key: str) -> None:
    st.session_state[key] = token


def _open(rank) -> None:
    st.session_state["slices_open"] = None if rank is None else (token, rank)
    ui.remember("slices_page", 1)


if st.session_state.get("slices_on") != token and not failslices.ready(ctx, preds):
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    c1.button("Find the failure slices", key="slices_run", type="primary", icon=":material/travel_explore:",
              on_click=_turn_on, args=("slices_on",), width="stretch")
    c2.caption(f"The first time, the network reads all {n:,} test images (a progress bar); the features are then "
               "kept on disk, and the slices show at once.")
    st.stop()

found = ui.checked("finding the failure slices", failslices.find, ctx, preds, pixels)
if not found:
    st.info(f"No failure slice: no group of at least {cfg.min_size} similar test images has an error rate "
            f"significantly above the model's {ui.pct(base)}, so its {round(base * n):,} mistakes are spread "
            "over the test set rather than gathered in one kind of image.", icon=":material/check_circle:")
    st.stop()

records = None
with ui.guard("working out the verdicts"):
    if st.session_state.get("slices_triage_on") == token or verdicts.triage_ready(ctx, preds):
        records = verdicts.triage(ctx, preds, pixels)       # None, with one sentence, without training images
    else:
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        c1.button("Find out why", key="slices_triage_btn", icon=":material/troubleshoot:", on_click=_turn_on,
                  args=("slices_triage_on",), width="stretch")
        c2.caption("Adds each slice's verdict mix: how many of its mistakes look like label errors, ambiguous "
                   "images, out-of-distribution images or the model's own errors (the Errors page's verdicts).")

c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
c1.markdown(f"**{len(found)}** failure slice{'s' if len(found) > 1 else ''} among {n:,} test images (the model's "
            f"error rate: **{ui.pct(base)}**), ranked by size × excess error.")
top = int(c2.number_input("Slices shown", 1, len(found), **ui.kept("slices_top", min(10, len(found)),
                                                                     bounds=(1, len(found)))))
st.caption(f"In each card, the slice's {cfg.typical} most typical images (nearest its centre in the network's "
           "features), each with the model's answer: → the class it chose, or ✓ when right.")
opened = st.session_state.get("slices_open")
opened = opened[1] if opened and opened[0] == token else None


def card(s: dict) -> None:
    rank, size = s["rank"], s["size"]
    with st.container(border=True, key=f"slices_card_{rank}"):
        head, show = st.columns([3, 1], vertical_alignment="center")
        head.markdown(f"#### {rank}. {size:,} images, {ui.pct(s['error_rate'])} wrong")
        shown = opened == rank
        show.button("Hide its images" if shown else f"Show its {size:,} images", key=f"slices_show_{rank}",
                    icon=":material/photo_library:", on_click=_open, args=(None if shown else rank,),
                    type="primary" if shown else "secondary", width="stretch")
        left, right = st.columns([2, 3])
        left.markdown(f"**{s['errors']:,}** of {size:,} wrong against the model's {ui.pct(base)}: "
                      f"**+{100 * s['excess']:.1f} points** (binomial p = {failslices.p_text(s['p_value'])}).")
        true_mix = failslices.mix(s["classes"], size, failslices.distinct(preds["targets"], s["indices"]), classes)
        pred_mix = failslices.mix(s["predicted"], size, failslices.distinct(preds["preds"], s["indices"]), classes)
        right.markdown(f"**Classes:** {true_mix}  \n**Predicted as:** {pred_mix}")
        if records is not None:
            mix = failslices.verdict_mix(s["indices"], records)
            right.markdown("**Why wrong:** " + " ".join(f":{gallery.COLOURS.get(v, 'gray')}-badge[{v} {k}]"
                                                        for v, k in mix.items()) if mix else
                           "**Why wrong:** no verdicts for its mistakes.")
        typical = [int(i) for i in s["typical"]]
        one = len(s["classes"]) == 1                  # one true class (the usual case): the card names it
        caps = [f"#{i}" + ("" if one else f" {classes[int(preds['targets'][i])]}") + (
            " ✓" if preds["preds"][i] == preds["targets"][i] else f" → {classes[int(preds['preds'][i])]}")
            for i in typical]
        sample.grid(x[typical], typical, caps, key=f"slices_typical_{rank}", prefix=f"slices_typ{rank}", size=96,
                    ncols=max(len(typical), 1))      # one row; Open under each image: its own page


def images(s: dict) -> None:
    """The slice's images in the gallery (paged), with Explain under each and a tag box for the whole slice."""
    rank = s["rank"]
    with st.container(key="slices_selected"):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.subheader(f"Slice {rank}: its {s['size']:,} images")
        close.button("Close", key="slices_close", on_click=_open, args=(None,), icon=":material/close:",
                     width="stretch")
        c1, c2 = st.columns([2, 1])
        order_by = c1.radio("Order", ["typical", "loss"], horizontal=True, **ui.kept("slices_sort", "typical"),
                            format_func={"typical": "most typical first", "loss": "loss (hardest first)"}.get)
        ordered = np.asarray(s["indices"], np.int64)
        if order_by == "loss":
            ordered = compute.selection_order(ordered, preds, "loss")
        part = selections.page_of(ordered, c2, "slices")
        selections.tag_box(ctx, preds, ordered, "slices", "failure slice", f"failure slice {rank}",
                           f"failure-slice-{rank}.csv")
        gallery.show(ctx, preds, pixels, part, prefix="slices_sel", key="slices_gallery",
                     verdicts=None if records is None else {"records": records})
    ui.scroll_into_view("slices_selected", token=f"{token}|{rank}", block="start")


for s in found[:top]:
    with ui.guard(f"drawing slice {s['rank']}"):
        card(s)
        if opened == s["rank"]:
            images(s)
if opened is not None and opened > top and opened <= len(found):
    with ui.guard("showing the slice's images"):
        images(found[opened - 1])

with ui.guard("listing the slices"):
    rows = failslices.table(found, classes, preds)
    with st.expander(f"All {len(found)} slices as a table" if len(found) > 1 else "The slice as a table"):
        st.dataframe(rows, hide_index=True, width="stretch", key="slices_table")
    ui.download_csv(rows, "failure-slices.csv", key="slices_csv")
    st.caption(f"A slice has at least {cfg.min_size} images, and its error rate passes a binomial test against the "
               f"model's at {cfg.alpha:.0%} family-wise (Bonferroni over every group tried). The grouping never sees "
               "which images are wrong, so scattered mistakes make no slice (Domino, Eyuboglu et al., 2022; "
               "sliceguard). The same list: `cnnlib slices CHECKPOINT`.")
