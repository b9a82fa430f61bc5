"""The selections tagged on other pages in this browser session: a list, a preview of each, CSV downloads; and
the images tagged one by one on the One image page (kept beside the checkpoint)."""
import streamlit as st

import frame
import selections
import ui

ctx = frame.begin(
    "Sets of test images you tagged elsewhere — a confusion-matrix cell (Evaluation), a lasso on the map "
    "(Embeddings), the probably-mislabelled list, the images two models disagree on — kept for this browser "
    "session, whichever checkpoint is open now. Each downloads as a CSV (index in the test split, the image "
    "file for folder datasets, label, prediction, confidence, score, tag) to relabel, retrain or share.",
    needs_model=False)

one_by_one = 0
with ui.guard("listing the images tagged one by one"):
    one_by_one = selections.image_tags(ctx)

sets = selections.tagged()
if not sets:
    st.info(("No sets of images tagged yet" if one_by_one else "Nothing tagged yet")
            + ": press **Tag** under a list of images on the Evaluation, Embeddings, Probably mislabelled or Two "
              "models page (or save a tag for one image on its own page: **Open** under it).")
    st.stop()

with ui.guard("listing the selections"):
    st.dataframe([{"tag": name, "from": s["kind"], "checkpoint": s["checkpoint"], "images": s["count"],
                   "tagged at": s["created"]} for name, s in sets.items()],
                 hide_index=True, width="stretch", key="sel_list")
    for k, (name, s) in enumerate(list(sets.items())):
        with st.expander(f"**{name}** — {s['count']:,} images ({s['kind']}, {s['checkpoint']})", expanded=k == 0):
            rows = selections.rows(s["csv"])
            labels = sorted({r["label"] for r in rows} | {r["prediction"] for r in rows})
            if len(labels) > 10:         # many classes: narrow the preview by class (type to search)
                only = st.multiselect("Label or prediction", labels, placeholder="any class", key=f"sel_classes_{k}")
                if only:
                    rows = [r for r in rows if r["label"] in only or r["prediction"] in only]
                    st.caption(f"{len(rows):,} of {s['count']:,} rows have one of these classes.")
            st.dataframe(rows[:200], hide_index=True, width="stretch", key=f"sel_rows_{k}")
            if len(rows) > 200:
                st.caption(f"The first 200 of {len(rows):,} rows; the CSV has them all.")
            c1, c2 = st.columns([1, 5])
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name) or "selection"
            c1.download_button("CSV", s["csv"], file_name=f"{safe}.csv", mime="text/csv", key=f"sel_csv_{k}",
                               icon=":material/download:", on_click="ignore")
            c2.button("Remove", key=f"sel_remove_{k}", icon=":material/delete:", on_click=selections.remove,
                      args=(name,))
