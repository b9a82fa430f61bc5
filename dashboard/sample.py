"""One test image on its own page (views/sample.py, `?i=<test index>` in the address, so a link can be shared):
the **Open** button every image of a gallery has (gallery.show, `grid` for the plain grids of Evaluation and
Probably mislabelled, the Embeddings map's clicked point), the facts and the triage verdict of one image, the test
images nearest to it in the network's features (the test split's feature index, dashboard/diagnose.py), and a
tag for that image alone, kept beside the checkpoint (cnnlib.diagnose.tags). Widget keys start with `sample_`
(the Open buttons: the calling page's prefix)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

import diagnose
import pictures
import testdata
import ui
from checkpoints import Ctx
from cnnlib.errors import CNNLibError

PAGE = "views/sample.py"
QUERY = "i"                      # the address's parameter: ?i=<test index>
SIMILAR_K = 8
_CURRENT = "sample.index"        # session state: the test image last opened
_TAG_ERROR = "sample.tag_error"  # session state: the sentence of a failed save, shown once


# ----------------------------------------------------------------------------- reaching the page

def open_button(index: int, key: str, label: str = "Open") -> None:
    """A small button under an image: its own page (verdict, explanation, neighbours, similar images, tag)."""
    if st.button(label, key=key, icon=":material/open_in_new:", type="tertiary",
                 help=f"Test image #{int(index)} on its own page: verdict, explanation, nearest training images, "
                      "similar test images and a tag."):
        go_to(index)


def go_to(index: int) -> None:
    """Switch to the sample page showing test image `index` (the address gets ?i=index)."""
    st.session_state[_CURRENT] = int(index)
    st.switch_page(PAGE, query_params={QUERY: str(int(index))})


def grid(images, indices, captions: list[str], key: str, prefix: str, size: int = 96, ncols: int = 8) -> None:
    """ui.image_grid with an Open button under each image: images (N, ...) of test images `indices`."""
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    with st.container(key=key):
        if not idx:
            st.caption("No images.")
            return
        for start in range(0, len(idx), ncols):
            row = range(start, min(start + ncols, len(idx)))
            for col, j in zip(st.columns(ncols), row):
                col.image(pictures.enlarge(images[j], size), caption=captions[j], width=size)
            for col, j in zip(st.columns(ncols), row):      # a row of its own: in line under captions of any length
                with col:
                    open_button(idx[j], f"{prefix}_open_{idx[j]}")


# ----------------------------------------------------------------------------- which image

def _picked() -> None:
    """The number input changed: remember it and put it in the address."""
    i = int(st.session_state["sample_index"])
    st.session_state[_CURRENT] = i
    st.query_params[QUERY] = str(i)


def chosen_index(n: int) -> tuple[int, str | None]:
    """The test image to show: ?i= (a shared link or an Open button), else the last one opened, else #0; and one
    sentence when ?i= names no test image."""
    raw = st.query_params.get(QUERY)
    if raw is not None:
        try:
            i = int(str(raw).strip())
        except ValueError:
            i = -1
        if 0 <= i < n:
            st.session_state[_CURRENT] = i
            return i, None
    i = int(st.session_state.get(_CURRENT, 0))
    i = i if 0 <= i < n else 0
    st.query_params[QUERY] = str(i)                      # the address names the image shown, to share it
    if raw is None:
        return i, None
    return i, (f"The address asks for test image “{str(raw)[:20]}”, which this test split does not have (its "
               f"{n:,} images are numbered 0 to {n - 1:,}): showing #{i}.")


def picker(n: int, i: int) -> None:
    """The number input of the test image (kept in the address)."""
    st.session_state["sample_index"] = i
    st.number_input(f"Test image (0 to {n - 1:,})", 0, n - 1, step=1, key="sample_index", on_change=_picked,
                    help="Its index in the test split; every image's **Open** button on the other pages opens it "
                         "here, and the address (…?i=N) opens it again.")


# ----------------------------------------------------------------------------- what the model says

def facts(ctx: Ctx, preds: dict, i: int, k: int = 5) -> None:
    """The label, the prediction, the loss and the top classes with their probabilities."""
    classes = ctx.classes
    t, p = int(preds["targets"][i]), int(preds["preds"][i])
    probs = np.asarray(preds["probs"][i], np.float32)
    st.markdown(f"Label **{classes[t]}** · predicted **{classes[p]}** " + ("✓ right" if p == t else "✗ wrong")
                + f"  \nconfidence {ui.pct(probs[p])} · loss {-np.log(max(float(probs[t]), 1e-12)):.3f}")
    top = np.argsort(-probs, kind="stable")[:min(k, len(classes))]
    rows = [{"class": classes[c] + (" (label)" if c == t else ""), "probability": 100 * float(probs[c])} for c in top]
    st.dataframe(rows, hide_index=True, width="stretch", key="sample_top",
                 column_config={"probability": st.column_config.ProgressColumn(
                     "probability", min_value=0.0, max_value=100.0, format="%.1f%%")})
    paths = diagnose.split_paths(ctx)
    if paths and i < len(paths):
        st.caption(f"File: {Path(paths[i]).parent.name}/{Path(paths[i]).name}")


def verdict_box(ctx: Ctx, preds: dict, pixels, i: int) -> None:
    """The triage verdict of image `i` with its evidence, worked out on request (as on the Errors page)."""
    import gallery
    classes = ctx.classes
    with st.container(key="sample_verdict"):
        if int(preds["targets"][i]) == int(preds["preds"][i]):
            st.caption("The model gets this image right: the triage gives verdicts to mistakes only.")
            return
        if pixels is None:
            st.caption("The verdict needs the test images, and they are not on disk.")
            return
        st.markdown("**Why is it wrong?**")
        records = gallery.triage_on_request(ctx, preds, pixels, "sample", stacked=True)
        r = (records or {}).get(i)
        if records is not None and r is None:
            st.caption("The triage gave this image no verdict.")
        if r is None:
            return
        st.markdown(f":{gallery.COLOURS[r['verdict']]}-badge[{r['verdict']}] {r['confidence']:.0%} sure")
        st.markdown(gallery.evidence_line(r, classes) + ".")
        st.caption(f"The rule's line that decided: {r['evidence']['rule']}.")


def show_image(ctx: Ctx, pixels, i: int, size: int = 256) -> None:
    """The test image as the model sees it (its input size), enlarged without smoothing."""
    x = pixels[0][i]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    with st.container(key="sample_image"):
        st.image(pictures.enlarge(x, size), width=size,
                 caption=f"#{i} as the model sees it: {w}\u00a0×\u00a0{h} pixels, shown {max(1, size // max(h, w))}× "
                         "larger, no smoothing")


# ----------------------------------------------------------------------------- similar test images

@st.cache_data(show_spinner=False, max_entries=256)     # the index unhashed: keyed by checkpoint and data
def _similar(ckpt_key: str, data_key: str, i: int, k: int, _index) -> tuple[np.ndarray, np.ndarray]:
    return _index.query(np.asarray(_index.features[i], np.float32), k, exclude=[i])


def similar(ctx: Ctx, pixels, i: int, k: int = SIMILAR_K) -> tuple[np.ndarray, np.ndarray]:
    """The k test images nearest to test image `i` in the penultimate features (cosine similarity, largest
    first), from the test split's feature index (built once per checkpoint and data, with a bar)."""
    index = diagnose.neighbour_index(ctx, pixels, split="test")
    return _similar(ctx.key, testdata.pixels_key(ctx), int(i), int(k), index)


def similar_strip(ctx: Ctx, preds: dict, pixels, i: int, size: int = 96) -> None:
    """The nearest test images, each with its label, prediction, similarity and Open."""
    idx, sims = similar(ctx, pixels, i)
    classes = ctx.classes
    with st.container(key="sample_similar"):
        st.markdown(f"**The {len(idx)} most similar test images** (in the features the classifier reads), "
                    "with the label, the prediction and the cosine similarity:")
        caps = []
        for j, s in zip(idx.tolist(), sims.tolist()):
            t, p = int(preds["targets"][j]), int(preds["preds"][j])
            caps.append(f"#{j} {classes[t]}" + (" ✓" if p == t else f" → {classes[p]} ✗") + f" · {s:.2f}")
        grid(pixels[0][idx], idx, caps, key="sample_similar_grid", prefix="sample_similar", size=size,
             ncols=max(1, len(idx)))
        wrong = sum(int(preds["targets"][j]) != int(preds["preds"][j]) for j in idx.tolist())
        if int(preds["targets"][i]) == int(preds["preds"][i]):
            st.caption(f"{wrong} of them {'is' if wrong == 1 else 'are'} misclassified.")
        elif wrong:
            st.caption(f"{wrong} of them {'is' if wrong == 1 else 'are'} misclassified too: a mistake shared by "
                       "look-alikes is a pattern of the model (or of the labels), not a one-off.")
        else:
            st.caption("The model gets all of them right: among its look-alikes this mistake is a one-off (compare "
                       "their labels with this one's).")


# ----------------------------------------------------------------------------- the tag of one image

def checkpoint_file(ctx: Ctx) -> str | None:
    """The checkpoint's file (None for an upload: there is no folder beside it)."""
    return None if ctx.key.startswith("upload:") else ctx.key.rsplit("@", 1)[0]


def tagged(ctx: Ctx) -> dict[int, dict]:
    """{test index: tag entry} of the open checkpoint's tags file for its test split; CNNLibError (one
    sentence) for an upload or a damaged or foreign tags file."""
    from cnnlib.diagnose import tags
    path = checkpoint_file(ctx)
    if path is None:
        raise CNNLibError("an uploaded checkpoint has no folder beside it to keep tags in: put it in the "
                          "checkpoint folder and open it from there to tag its images")
    return tags.tags_for(tags.load_tags(path, ctx.meta), testdata.pixels_key(ctx), diagnose.split_paths(ctx))


def _save(ctx: Ctx, preds: dict, i: int, remove: bool) -> None:
    """Save (or remove) the tag of test image i; a failure becomes one sentence shown under the box."""
    from cnnlib.diagnose import tags
    text = "" if remove else st.session_state.get("sample_tag_text", "")
    try:
        paths = diagnose.split_paths(ctx)
        tags.set_tag(checkpoint_file(ctx) or "", ctx.meta, int(i), text, testdata.pixels_key(ctx),
                     path=paths[i] if paths and i < len(paths) else None,
                     label=ctx.classes[int(preds["targets"][i])])
    except CNNLibError as e:
        st.session_state[_TAG_ERROR] = ui.capitalised(ui.one_sentence(str(e)))
    except Exception as e:  # noqa: BLE001 - a callback must not end in a traceback
        st.session_state[_TAG_ERROR] = f"The tag could not be saved ({type(e).__name__})."
    st.session_state.pop("sample_tag_for", None)          # refill the box from the file


def tag_box(ctx: Ctx, preds: dict, i: int) -> None:
    """A tag for this one image: the saved one shown, Save and Remove; kept in <checkpoint>.tags.json."""
    from cnnlib.diagnose import tags
    with st.container(key="sample_tagbox", border=True):
        st.markdown("**Your tag for this image**")
        if checkpoint_file(ctx) is None:
            st.info("An uploaded checkpoint has no folder beside it to keep tags in: put it in the checkpoint "
                    "folder and open it from there to tag its images.", icon=":material/sell:")
            return
        try:
            entry = tagged(ctx).get(i)
        except CNNLibError as e:
            st.error(ui.capitalised(ui.one_sentence(str(e))), icon=":material/sell:")
            return
        current = entry["tag"] if entry else ""
        if st.session_state.get("sample_tag_for") != (ctx.key, i, current):     # another image: its own tag
            st.session_state["sample_tag_for"] = (ctx.key, i, current)
            st.session_state["sample_tag_text"] = current
        st.text_input("Tag", key="sample_tag_text", max_chars=tags.MAX_TAG_CHARS, label_visibility="collapsed",
                      placeholder="e.g. blurry, label is wrong, two objects")
        with st.container(horizontal=True, gap="small"):
            st.button("Save tag", key="sample_tag_save", icon=":material/sell:", type="primary",
                      on_click=_save, args=(ctx, preds, i, False))
            if entry:
                st.button("Remove", key="sample_tag_remove", icon=":material/delete:", on_click=_save,
                          args=(ctx, preds, i, True))
        name = Path(tags.tags_path(checkpoint_file(ctx))).name
        st.caption(f"Saved {entry['updated'][:16].replace('T', ' ')} UTC in {name}, beside the checkpoint."
                   if entry and entry.get("updated") else
                   f"Plain text for this image alone, saved in {name} beside the checkpoint; the Selections page "
                   "lists every tagged image.")
        problem = st.session_state.pop(_TAG_ERROR, None)
        if problem:
            st.error(problem)
