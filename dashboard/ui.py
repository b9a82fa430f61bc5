"""Page-independent Streamlit helpers: widget values that survive page switches, error display that never
shows a traceback, charts with a PNG button, CSV/PNG downloads, image grids, number formats, colours."""
from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import traceback
from typing import Any

import streamlit as st

import pictures
from cnnlib.errors import CNNLibError

log = logging.getLogger("cnnlens")
PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def kept(key: str, default: Any, options=None, bounds: tuple | None = None) -> dict:
    """Widget kwargs (key + on_change) for a widget whose value is remembered across pages.

    The remembered value lives in `_keep_<key>` (plain session state); the widget's own key is refilled from
    it before the widget is drawn. `options`: fall back to `default` when the value is no longer offered;
    `bounds` (lo, hi): clamp a number. Read a remembered value with `value(key)`.
    """
    ss = st.session_state
    master = "_keep_" + key
    value_ = ss.get(master, default)
    if options is not None:
        opts = list(options)
        if isinstance(value_, (list, tuple)):
            value_ = [v for v in value_ if v in opts]
        elif value_ not in opts:
            value_ = default
    if bounds is not None:
        value_ = type(default)(min(max(value_, bounds[0]), bounds[1]))
    ss[master] = value_
    ss[key] = value_
    return {"key": key, "on_change": _sync, "args": (key,)}


def _sync(key: str) -> None:
    st.session_state["_keep_" + key] = st.session_state[key]


def remember(key: str, value: Any) -> None:
    """Set a kept widget's value from code (call before the widget is drawn, or from a callback)."""
    st.session_state["_keep_" + key] = value


def value(key: str, default: Any = None) -> Any:
    """The remembered value of a kept widget (also on pages that do not draw it)."""
    return st.session_state.get("_keep_" + key, default)


# ----------------------------------------------------------------------------- errors

def one_sentence(message: str, limit: int = 220) -> str:
    """The first sentence of an error message: no second line, no "Detail:" dump, no exception class names."""
    text = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    text = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", text, maxsplit=1)[0]
    text = re.sub(r"\s*Detail:.*$", "", text)
    text = re.sub(r"[:(]?\s*\b[A-Z][A-Za-z]*(Error|Exception)\b:?.*$", "", text).rstrip(" :(")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "…"
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def capitalised(text: str) -> str:
    """A sentence shown on its own starts with a capital letter; a first word that is a file name or code
    (`x.pt`, `cnnlib.train`) stays as written."""
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if re.fullmatch(r"[a-z][a-z'’-]*[,:;]?", first) else text


def checked(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), or on failure `guard`'s one clear st.error and the end of the page."""
    with guard(what):
        return fn(*args, **kwargs)
    st.stop()


@contextlib.contextmanager
def guard(what: str = "drawing this part of the page"):
    """Show cnnlib errors as one clear sentence and anything unexpected as a short message, never a traceback.
    Streamlit's own control flow (st.stop, st.rerun) passes through."""
    try:
        yield
    except CNNLibError as e:
        st.error(capitalised(one_sentence(str(e))))
    except Exception as e:  # noqa: BLE001
        log.error("error while %s:\n%s", what, traceback.format_exc())
        st.error(f"Something went wrong while {what} ({type(e).__name__}). "
                 "The rest of the dashboard still works; the details are in the server log.")


def spinner(text: str):
    """st.spinner on a page; nothing in the background warm-up thread (it has no page to draw on)."""
    if threading.current_thread().name.startswith("cnnlens-warmup"):
        return contextlib.nullcontext()
    return st.spinner(text)


def scroll_into_view(key: str, token, block: str = "nearest") -> None:
    """Scroll the browser smoothly until the container `key` is in view: as little as needed ("nearest", for a
    panel opened beside what the user pressed), or with its top at the window's top ("start", for results that
    grow as their images load). Runs once per `token` (the script's text changes with it); reruns with the same
    token leave the scroll alone. Scrolls again whenever the container grows in its first 4 s (its images loading,
    rows the script draws after the first scroll), so a panel that grows ends up in the window all the same."""
    if block not in ("nearest", "start"):
        raise ValueError(f"block must be 'nearest' or 'start', not {block!r}")
    st.html(f"<script>/* {key} {token} */ setTimeout(() => {{ const el = document.querySelector('.st-key-{key}');"
            f" if (!el) return; const go = () => el.scrollIntoView({{behavior: 'smooth', block: '{block}'}}); go();"
            " const grown = new ResizeObserver(() => go()); grown.observe(el);"      # images and rows arriving late
            " setTimeout(() => grown.disconnect(), 4000); }, 200);</script>", unsafe_allow_javascript=True)


# ----------------------------------------------------------------------------- charts and downloads

_PLOTLY_LOCK = threading.Lock()
_PLOTLY_READY: list[bool] = []


def plotly_ready() -> None:
    """Import pandas and build one trace of each kind the pages use, once per process, under a lock.

    Plotly fills its validator caches lazily, and its array check reads `sys.modules["pandas"]` without importing
    it: while another session's thread was still importing pandas, that check saw a partially initialised module
    and go.Bar raised AttributeError (bench/loadtest.py, 10 sessions). `import pandas` here waits until pandas
    is whole, so no chart is built before it is. Costs about 0.5 s once; the warm-up thread usually pays it."""
    if _PLOTLY_READY:
        return
    with _PLOTLY_LOCK:
        if not _PLOTLY_READY:
            import pandas  # noqa: F401  (whole in sys.modules before any chart: see above)
            import plotly.graph_objects as go
            go.Figure([go.Bar(x=[0], y=[0]), go.Scatter(x=[0], y=[0]), go.Heatmap(z=[[0]]),
                       go.Scattergl(x=[0], y=[0])]).update_layout(height=10)
            _PLOTLY_READY.append(True)


MODEBAR_PX = 30       # the height of Plotly's toolbar, drawn over the top of the chart


def show_chart(fig, key: str, filename: str, modebar: bool = True, **kwargs):
    """st.plotly_chart with a PNG download in the chart's toolbar (camera icon); modebar=False hides the
    toolbar (small charts, where it would cover the data). With the toolbar, a chart whose top margin is set
    below 70 px gets MODEBAR_PX more, so the toolbar sits above the legend title and subplot titles instead
    of on them."""
    config = {**PNG_CONFIG, "toImageButtonOptions": {**PNG_CONFIG["toImageButtonOptions"], "filename": filename}}
    if not modebar:
        config["displayModeBar"] = False
    elif fig.layout.margin.t is not None and fig.layout.margin.t < 40 + MODEBAR_PX:
        fig.update_layout(margin_t=fig.layout.margin.t + MODEBAR_PX)
    return st.plotly_chart(fig, key=key, config=config, width="stretch", **kwargs)


def epoch_ticks(epochs: int, panel_px: int) -> dict:
    """update_xaxes kwargs for an epoch axis `panel_px` wide: whole epochs, labels at least 32 px apart
    (20 epochs in a 280-px panel: every 5th epoch, not 20 crowded labels)."""
    step = next((s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if epochs / s * 32 <= panel_px), 1000)
    return {"dtick": step, "tick0": 0}


def download_png(img, filename: str, key: str, label: str = "Download PNG") -> None:
    """A download button for an image; the PNG is encoded only when clicked (no rerun either)."""
    st.download_button(label, lambda: pictures.png_bytes(img), file_name=filename, mime="image/png", key=key,
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


def image_grid(images, captions: list[str], ncols: int = 8, size: int = 96, key: str | None = None) -> None:
    """A grid of small images (N, C, H, W) or (N, H, W[, C]) with captions, enlarged crisply."""
    with st.container(key=key):
        if len(images) == 0:
            st.caption("No images.")
            return
        st.image([pictures.enlarge(im, size) for im in images], caption=list(captions), width=size)


# ----------------------------------------------------------------------------- formats and colours

def pct(v) -> str:
    """The one percentage format of the dashboard: one decimal ("54.2%")."""
    return "—" if v is None else f"{100 * float(v):.1f}%"


PCT_D3 = ".1%"        # the same format inside Plotly (hover templates, tick labels, bar texts)


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def class_palette(n: int) -> list[str]:
    """n clearly distinct colours: Plotly's D3 set (10) for up to 10 classes, then Alphabet (26), then Dark24."""
    import plotly.express as px
    q = px.colors.qualitative
    base = q.D3 if n <= 10 else q.Alphabet if n <= 26 else q.Alphabet + q.Dark24 + q.Light24
    return [base[i % len(base)] for i in range(n)]


MAX_BARS = 30          # classes at most in a per-class bar chart (a table below holds every class)


def bar_classes(table: dict, columns: list[str]) -> set:
    """The classes a per-class bar chart shows: all of them up to MAX_BARS; beyond, those where the columns
    (runs) differ most, or with one column its lowest values. `table`: {class: {column: value}}."""
    if len(table) <= MAX_BARS:
        return set(table)

    def rank(row):
        vals = [row[c] for c in columns if c in row]
        return -(max(vals) - min(vals)) if len(columns) > 1 else (min(vals) if vals else 0)
    return set(sorted(table, key=lambda k: (rank(table[k]), str(k)))[:MAX_BARS])
