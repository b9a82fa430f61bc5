"""Page-independent Streamlit helpers: widget values that survive page switches, error display that
never shows a traceback, and rendering (charts with a PNG button, CSV/PNG downloads, image grids,
number formats). `lens` holds the cached loaders; pages use both."""
from __future__ import annotations

import io
import logging
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from cnnlib import viz  # noqa: E402
from cnnlib.errors import CNNLibError  # noqa: E402

log = logging.getLogger("cnnlens")
PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def kept(key: str, default: Any, options=None, bounds: tuple | None = None) -> dict:
    """Widget kwargs (key + on_change) for a widget whose value is remembered across pages.

    The remembered value lives in `_keep_<key>` (plain session state, never cleaned up); the widget's
    own key is refilled from it before the widget is drawn. Pass `options` to fall back to `default`
    when the remembered value is no longer offered, and `bounds` (lo, hi) to clamp a number.
    """
    ss = st.session_state
    master = "_keep_" + key
    value = ss.get(master, default)
    if options is not None:
        opts = list(options)
        if isinstance(value, (list, tuple)):
            value = [v for v in value if v in opts]
        elif value not in opts:
            value = default
    if bounds is not None:
        value = type(default)(min(max(value, bounds[0]), bounds[1]))
    ss[master] = value
    ss[key] = value
    return {"key": key, "on_change": _sync, "args": (key,)}


def _sync(key: str) -> None:
    st.session_state["_keep_" + key] = st.session_state[key]


def remember(key: str, value: Any) -> None:
    """Set a kept widget's value from code (call before the widget is drawn, or from a callback)."""
    st.session_state["_keep_" + key] = value


def checked(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), or on failure `guard`'s one clear st.error and the end of the page."""
    with guard(what):
        return fn(*args, **kwargs)
    st.stop()


@contextmanager
def guard(what: str = "drawing this part of the page"):
    """Show cnnlib errors as one clear sentence and anything unexpected as a short message, never a traceback.
    Streamlit's own control flow (st.stop, st.rerun) passes through."""
    try:
        yield
    except CNNLibError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001
        log.error("error while %s:\n%s", what, traceback.format_exc())
        st.error(f"Something went wrong while {what} ({type(e).__name__}: {str(e)[:200]}). "
                 "The rest of the dashboard still works; the details are in the server log.")


def spinner(text: str):
    """st.spinner on a page; nothing in the background warm-up thread (it has no page to draw on)."""
    import contextlib
    if threading.current_thread().name.startswith("cnnlens-prefetch"):
        return contextlib.nullcontext()
    return st.spinner(text)


def show_chart(fig, key: str, filename: str, **kwargs):
    """st.plotly_chart with a PNG download in the chart's toolbar (camera icon)."""
    config = {**PNG_CONFIG, "toImageButtonOptions": {**PNG_CONFIG["toImageButtonOptions"], "filename": filename}}
    return st.plotly_chart(fig, key=key, config=config, width="stretch", **kwargs)


def download_png(img, filename: str, key: str, label: str = "Download PNG") -> None:
    """A download button for an image; the PNG is encoded only when clicked (no rerun either)."""
    st.download_button(label, lambda: viz.png_bytes(img), file_name=filename, mime="image/png", key=key,
                       icon=":material/download:", on_click="ignore")


def csv_bytes(rows: list[dict]) -> bytes:
    import csv
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue().encode()


def download_csv(rows: list[dict], filename: str, key: str, label: str = "Download CSV") -> None:
    """A download button for a table (list of dicts); the CSV is written only when clicked."""
    st.download_button(label, lambda: csv_bytes(rows), file_name=filename, mime="text/csv", key=key,
                       icon=":material/download:", on_click="ignore")


def big(img, size: int = 160) -> np.ndarray:
    """A small image enlarged without blur (nearest neighbour) to about `size` pixels."""
    return viz.enlarge(img, size=size)


def image_grid(images, captions: list[str], ncols: int = 8, size: int = 96, key: str | None = None) -> None:
    """A grid of small images (N, C, H, W) or (N, H, W[, C]) with captions, enlarged crisply."""
    box = st.container(key=key)
    with box:
        if len(images) == 0:
            st.caption("No images.")
            return
        st.image([big(im, size) for im in images], caption=list(captions), width=size)


def pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}%"


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def class_palette(n: int) -> list[str]:
    import plotly.express as px
    base = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    return [base[i % len(base)] for i in range(n)]
