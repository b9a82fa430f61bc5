"""Home's "Share as a lesson": the open checkpoint as one self-contained .html lesson (cnnlib.lesson), built on
request with a spinner, cached per checkpoint (st.cache_data keyed by the checkpoint's cache key), offered as a
download. The lesson runs in any browser with no server: a teacher e-mails it or uploads it to a course page."""
from __future__ import annotations

import os
import re
import tempfile

import streamlit as st

IMAGES_PER_CLASS = 5


@st.cache_data(show_spinner=False, max_entries=4)
def lesson_bytes(key: str, _model, images: int = IMAGES_PER_CLASS) -> bytes:
    """The single-file lesson of the model cached under `key` (its path@mtime or upload hash)."""
    from cnnlib.lesson.build import build_lesson
    with tempfile.TemporaryDirectory() as tmp:
        page = build_lesson(_model, os.path.join(tmp, "lesson.html"), images=images, single_file=True)
        with open(page, "rb") as f:
            return f.read()


def file_name(label: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(label))[0]).strip("._") or "model"
    return f"{stem}-lesson.html"


def share_section(ctx) -> None:
    from cnnlib.errors import CNNLibError
    st.subheader("Share as a lesson")
    st.caption(f"One .html file that teaches this model's insides in any browser, with no server and no "
               f"installation: the image through every layer, one unit's arithmetic, what-if edits, the confusion "
               f"matrix, saliency of its mistakes and exercises with an answer key ({IMAGES_PER_CLASS} test "
               f"images per class inside). Same as `python -m cnnlib lesson CKPT --out DIR --single-file`.")
    done = st.session_state.get("lesson_built") == ctx.key
    if not done and st.button("Build the lesson", key="lesson_build"):
        with st.spinner("Building the lesson: ONNX export, test images, saliency maps, exercises…"):
            try:
                lesson_bytes(ctx.key, ctx.model)
            except CNNLibError as e:
                st.error(str(e))
                return
        st.session_state["lesson_built"] = done = ctx.key
    if done:
        data = lesson_bytes(ctx.key, ctx.model)
        st.download_button(f"Download the lesson ({len(data) / 1e6:.1f} MB)", data, file_name=file_name(ctx.label),
                           mime="text/html", key="lesson_download", icon=":material/download:")
