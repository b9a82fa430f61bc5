"""The report that leaves the app, for a "Download report" button: cnnlib.diagnose.report.build_report's one-file
HTML page as bytes, built once per (checkpoint, data folder, errors, method) and shared by every browser session.

    st.download_button("Download report", report.report_bytes(ctx), report.file_name(ctx), "text/html")

The page is the same file `python -m cnnlib report CKPT --out FILE.html` writes (no network, no script, images
inside). It is cached on the checkpoint key (path + mtime, so a retrained or re-calibrated file is a new key) and
the Data folder; a robustness result computed later appears after the cache entry expires (REPORT_TTL_S) or the
checkpoint changes. cnnlib is imported inside the loader as a module, so a test can monkeypatch it.
"""
from __future__ import annotations

import os

import streamlit as st

import ui
from checkpoints import Ctx

REPORT_TTL_S = 3600          # seconds a built report is reused
REPORT_ERRORS = 12           # most confident errors in the report


@st.cache_data(show_spinner=False, max_entries=8, ttl=REPORT_TTL_S)
def _report(ckpt_key: str, data: str, errors: int, method: str, label: str, _model) -> bytes:
    from cnnlib.diagnose import report
    return report.build_report(_model, data or None, errors=errors, method=method, label=label).encode("utf-8")


def report_bytes(ctx: Ctx, errors: int = REPORT_ERRORS, method: str = "gradcam") -> bytes:
    """The report page (UTF-8 HTML bytes) for the checkpoint and the sidebar's Data folder; raises CNNLibError
    with one sentence when it cannot be built (sections that only lack the test images say so inside it)."""
    with ui.spinner("Writing the report (metrics, charts, saliency for the top errors)…"):
        return _report(ctx.key, ctx.data or "", int(errors), method, ctx.label, ctx.model)


def file_name(ctx: Ctx) -> str:
    """A download name: the checkpoint's file name with _report.html (letters, digits, - _ . only)."""
    stem = os.path.splitext(os.path.basename(ctx.label or "checkpoint"))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._") or "checkpoint"
    return f"{safe}_report.html"
