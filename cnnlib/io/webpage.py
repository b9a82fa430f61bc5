"""One-file web pages: the pieces every static export shares (the report, the lesson), written once.

    esc(text)                 anything -> text safe between tags and inside quoted attributes (html.escape)
    script_json(obj)          JSON safe inside <script type="application/json"> (no '<', '>', '&' left)
    png(arr)                  uint8 (H, W, 3), (H, W) or (C, H, W) -> base64 PNG text (exact pixels)
    png_data_url(arr)         the same as a data: URL for <img src="...">
    figure_data_url(fig)      a matplotlib Figure -> PNG data: URL
    img(arr_or_url, alt, ...) an <img> element with a data: URL and an escaped alt text
    page(title, body, css)    a complete HTML document: UTF-8, inline CSS, and a Content-Security-Policy that
                              lets it load nothing but its own data: images and run no script

Whatever comes from a checkpoint or a folder (class names, file names, layer names) goes through `esc` and is
shown as text, never as markup. Numpy and Pillow only (matplotlib imported by figure_data_url when called).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
from PIL import Image

__all__ = ["esc", "script_json", "png", "png_data_url", "figure_data_url", "img", "page", "CSP"]

# no network, no script, no frame, no form: styles inline, images only as data: URLs
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def esc(text) -> str:
    """str(text) with & < > " ' escaped: text between tags or in a quoted attribute, never markup."""
    return html.escape(str(text), quote=True)


def script_json(obj) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' can end the element or start markup."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, e in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, e)
    return text


def png(arr: np.ndarray) -> str:
    """uint8 (H, W, 3), (H, W) or (C, H, W) with C in (1, 3) -> base64 PNG (no colour profile: exact pixels)."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.astype(np.uint8))).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_url(arr: np.ndarray) -> str:
    """png(arr) as "data:image/png;base64,...": an image that needs no file and no request."""
    return "data:image/png;base64," + png(arr)


def figure_data_url(fig, dpi: int = 100) -> str:
    """A matplotlib figure (best a matplotlib.figure.Figure: no pyplot, no backend) as a PNG data: URL;
    a pyplot figure is closed afterwards."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    finally:
        if getattr(fig, "number", None) is not None:
            import matplotlib.pyplot as plt
            plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(src, alt: str = "", width: int | None = None, cls: str = "") -> str:
    """<img> of an array (png_data_url) or of a data: URL; alt escaped; width in CSS pixels."""
    url = src if isinstance(src, str) else png_data_url(src)
    if not url.startswith("data:image/"):
        raise ValueError("img() takes arrays or data:image/ URLs only (the page loads nothing from elsewhere)")
    extra = (f' width="{int(width)}"' if width else "") + (f' class="{esc(cls)}"' if cls else "")
    return f'<img src="{url}" alt="{esc(alt)}"{extra}>'


def page(title: str, body: str, css: str = "") -> str:
    """A complete one-file HTML document around `body` (already HTML); the title is escaped, the CSS inlined
    (a "</style" inside it cannot end the element)."""
    css = re.sub(r"</(style)", r"<\\/\1", css, flags=re.IGNORECASE)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>\n{css}\n</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
