"""Probably mislabelled: test images whose given label the model's probabilities contradict (confident
learning), worst first, with the given and the suggested label; tag or export the list."""
import numpy as np
import streamlit as st

import compute
import diagnose
import frame
import sample
import selections
import testdata
import ui

ctx = frame.begin(
    "Some \"errors\" are the dataset's fault: the image is fine, its label is wrong. **Confident learning** "
    "(cleanlab) compares each test image's given label with the probabilities the model gives it, learns how "
    "often each class is confused with each other one, and flags the images whose label the model contradicts "
    "more confidently than that. Read the list from the top: the **score** is the label's quality (the "
    "probability of the given label; 0 = surely wrong); the **suggested** label is the model's answer. It needs "
    "no pixels — only the stored predictions — but the gallery shows the images when they are on disk.")

pixels = testdata.test_pixels(ctx, notice=False)
preds, rep = ui.checked("evaluating the test split", compute.evaluation, ctx, pixels)
if rep is None:
    st.warning("This checkpoint stores no test predictions and the test images are not on disk, so there is no "
               "label to check yet.")
    testdata.test_pixels(ctx, why="Checking the labels")
    st.stop()
classes = ctx.classes

with ui.guard("ranking the labels"):
    c1, c2, c3 = st.columns([2, 3, 1])
    rankings = list(diagnose.label_rankings())
    ranked_by = c1.radio("Score", rankings, horizontal=True, help="Self-confidence: the probability of the given "
                         "label. Normalized margin: that probability minus the largest other one, rescaled to 0–1.",
                         format_func={"self_confidence": "self-confidence",
                                      "normalized_margin": "normalized margin"}.get,
                         **ui.kept("li_rank", rankings[0], rankings))
    issues = diagnose.label_issues(ctx, preds, ranked_by)
    n, m = len(issues["quality"]), issues["n_issues"]
    lists = ["flagged", "all"]
    which = c2.radio("List", lists, horizontal=True, **ui.kept("li_list", "flagged" if m else "all", lists),
                     format_func={"flagged": f"the {m} flagged by confident learning",
                                  "all": "every image, lowest score first"}.get)
    limit = int(c3.number_input("Show", 6, 240, step=6, **ui.kept("li_limit", 24)))
    order = np.asarray(issues["indices"] if which == "flagged" else issues["ranking"], np.int64)
    if len(classes) > 30:             # many classes: narrow the list to some given labels (type to search)
        only = st.multiselect("Given label", classes, placeholder="any class", **ui.kept("li_classes", [], classes))
        if only:
            order = order[np.isin(np.asarray(preds["targets"])[order], [classes.index(n) for n in only])]
    shown = np.asarray(order[:limit], np.int64)
    acc = issues["accuracy"]
    if issues["estimated_wrong"] is not None:
        caveat = (f"With a test accuracy of {ui.pct(acc)}, this count is also confident learning's estimate of "
                  "how many labels are wrong (it still counts the model's own confident mistakes).")
    else:
        caveat = (f"It is not an estimate of how many labels are wrong: at a test accuracy of {ui.pct(acc)} "
                  f"(under {ui.pct(diagnose.trusted_accuracy())}), confident learning counts this model's own "
                  "mistakes as label errors.")
    st.markdown(f"Confident learning flags **{m:,}** of {n:,} test images ({ui.pct(m / n)}) whose given label "
                f"this model contradicts. {caveat} Showing {len(shown)} of {len(order):,}, worst first."
                + ("" if preds.get("source") == "stored" else " (Predictions computed from the test images: "
                                                               "this checkpoint stores none.)"))
    rows = [{"rank": r + 1, "index": int(i), "given label": classes[int(preds["targets"][i])],
             "suggested label": classes[int(issues["suggested"][i])], "score": round(float(issues["quality"][i]), 4),
             "p(given)": ui.pct(issues["given_prob"][i]), "p(suggested)": ui.pct(issues["suggested_prob"][i]),
             "flagged": bool(issues["is_issue"][i])} for r, i in enumerate(shown)]

with ui.guard("drawing the gallery"):
    if not len(shown):
        st.success("Confident learning flags no label of this test set as wrong: pick **every image** above to "
                   "see the lowest-scoring ones anyway.")
    elif pixels is not None:
        st.caption("Under each image: its index, the given label → the suggested label, and the score.")
        caps = [f"#{i} {r['given label']} → {r['suggested label']} · {r['score']:.2f}"
                for i, r in zip(shown.tolist(), rows)]
        sample.grid(pixels[0][shown], shown, caps, key="li_gallery", prefix="li", size=120, ncols=7)
    else:
        testdata.test_pixels(ctx, why="The gallery")
    if rows:
        with st.expander("The same list as a table", expanded=pixels is None):
            st.dataframe(rows, hide_index=True, width="stretch", key="li_table")
        selections.tag_box(ctx, preds, order, "li", "label issues", "probably mislabelled",
                           "label-issues.csv", scores=issues["quality"])
        st.caption(f"Tag and CSV take the whole list ({len(order):,} images, not only the {len(shown)} shown); "
                   "score = label quality. Held-out images only: on its training images a model has memorised "
                   "the labels and finds almost nothing.")
