"""Helpers and fixtures shared by the dashboard's AppTest suites (test_dashboard_frame.py, test_dashboard_pages.py):
the app opened through its st.navigation frame, element lookups, a cache-miss counter, small images, and an
imported-model checkpoint. No tests in here."""
from __future__ import annotations

import collections
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

DASH = Path(__file__).resolve().parent.parent / "dashboard"
if str(DASH) not in sys.path:
    sys.path.insert(0, str(DASH))

TIMEOUT = 120
PAGE_FILES = {"Training": "views/training.py", "Evaluation": "views/evaluation.py", "Errors": "views/errors.py",
              "Filters": "views/filters.py", "Feature maps": "views/feature_maps.py", "Saliency": "views/saliency.py",
              "Embeddings": "views/embeddings.py", "Home": "views/home.py"}


@pytest.fixture(autouse=True)
def _env(monkeypatch, lens_checkpoints):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", lens_checkpoints["dir"])
    monkeypatch.setenv("CNNLENS_PREFETCH", "0")          # no background warm-up: deterministic cache misses


@pytest.fixture
def misses(monkeypatch):
    """Counts real calls (cache misses) of the cnnlib functions the cached loaders call: misses["attribute_many"]."""
    counts = collections.Counter()
    from cnnlib import modelops
    from cnnlib.explain import attribution
    from cnnlib.diagnose import evaluate
    from cnnlib.models import anatomy as interpret

    for module, name in ((attribution, "attribute_many"), (interpret, "feature_maps"), (interpret, "embed"),
                         (interpret, "list_layers"), (evaluate, "predictions_for"), (evaluate, "compute_report"),
                         (modelops, "probabilities")):
        real = getattr(module, name)

        def counting(*a, _real=real, _name=name, **kw):
            counts[_name] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(module, name, counting)
    return counts


@pytest.fixture(scope="session")
def imported_ckpt(lens_checkpoints, tmp_path_factory):
    """tiny.pt as `python -m cnnlib import` would write it: no history, no best epoch, no config, no val
    accuracy, no stored test predictions (the test images stay on disk)."""
    ckpt = torch.load(lens_checkpoints["tiny"], weights_only=True)
    ckpt.update(history=[], best_epoch=None, config={}, metrics={"val_acc": None, "test_acc": None,
                                                                  "test_loss": None, "train_seconds": None})
    ckpt.pop("test_predictions", None)
    folder = tmp_path_factory.mktemp("imported")
    torch.save(ckpt, folder / "imported.pt")
    return {"dir": str(folder), "path": str(folder / "imported.pt")}


def app(page: str | None = None, errors: bool = False) -> AppTest:
    """The frame (Home), then optionally a page by title, as one browser session would open them."""
    at = AppTest.from_file(str(DASH / "Home.py"), default_timeout=TIMEOUT).run()
    ok(at, errors)
    if page:
        go(at, page, errors)
    return at


def go(at: AppTest, page: str, errors: bool = False) -> AppTest:
    at.switch_page(PAGE_FILES[page]).run()
    ok(at, errors)
    return at


def ok(at: AppTest, errors: bool = False) -> None:
    assert not at.exception, [(e.message, e.stack_trace[-6:]) for e in at.exception]
    if not errors:
        assert not at.error, [e.value for e in at.error]


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def block(at: AppTest, key: str) -> Block | None:
    for root in (at.main, at.sidebar):
        for n in walk(root):
            if isinstance(n, Block) and n.key == key:
                return n
    return None


def images_in(node) -> list:
    """(url, caption) of every image under a node (none under None)."""
    out = []
    for n in walk(node) if node is not None else ():
        if getattr(n, "type", None) == "image":
            out += list(zip(n.value, n.captions))
    return out


def widget(at: AppTest, key: str):
    for root in (at.main, at.sidebar):
        for n in walk(root):
            if getattr(n, "key", None) == key and hasattr(n, "set_value"):
                return n
    raise AssertionError(f"no widget with key {key!r}")


def has_widget(at: AppTest, key: str) -> bool:
    try:
        widget(at, key)
    except AssertionError:
        return False
    return True


def chart(at: AppTest, key: str, full: bool = False) -> dict:
    for n in walk(at.main):
        if getattr(n, "type", None) == "plotly_chart" and f"-{key}" in n.proto.id:
            spec = json.loads(n.proto.spec)
            return {"spec": spec, "config": json.loads(n.proto.config or "{}")} if full else spec
    raise AssertionError(f"no plotly chart {key!r}")


def arr(value) -> np.ndarray:
    """A Plotly JSON array: a plain list, or plotly's typed-array form {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        import base64
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return a.reshape([int(v) for v in str(shape).split(",")]) if shape else a
    return np.asarray(value)


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def png(size=(20, 14), mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares an enormous size (a decompression bomb) without the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def one_true_sentence(text: str) -> bool:
    """One short line, one sentence, none of PyTorch's or Python's internals."""
    import re
    return ("\n" not in text.strip() and len(text) <= 300 and not re.search(r"[.!?]\s+[A-Z]", text.strip()[:-1])
            and not any(bad in text for bad in ("weights_only", "Traceback", "EOFError", "UnpicklingError",
                                                "Missing key", "size mismatch")))


