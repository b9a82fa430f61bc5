"""`cnnlib lesson`: a checkpoint -> a static, serverless lesson (the page, its ONNX model, the vendored runtime).

    build_lesson("checkpoints/simple_cnn.pt", "lesson/")                         -> "lesson/index.html"
    build_lesson("checkpoints/simple_cnn.pt", "simple_cnn.html", single_file=True) -> "simple_cnn.html"
    python -m cnnlib lesson CKPT --out DIR [--images N] [--title TEXT] [--single-file]

Directory form: index.html (page, styles, script and data inline) + assets/model.onnx, assets/ort.mjs.gz,
assets/ort-wasm.mjs.gz, assets/ort-wasm.wasm.gz, fetched from the page's own folder. Single-file form: the same
four as base64 inside the page, so it opens from disk (file://). The runtime (library, loader, WebAssembly)
travels gzip-compressed and is unpacked in the browser with DecompressionStream.

Everything from the checkpoint goes in as text: the payload is JSON inside <script type="application/json">
with <, >, & (and U+2028/9) escaped as \\u003c ..., the title is HTML-escaped, and the page's script only ever
sets textContent.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import html
import os
import tempfile
from pathlib import Path

from cnnlib.errors import CNNLibError
from cnnlib.io.webpage import script_json

HERE = Path(__file__).resolve().parent
WEB, VENDOR = HERE / "web", HERE / "vendor"
ASSETS = {"model": "model.onnx", "ort": "ort.mjs.gz", "glue": "ort-wasm.mjs.gz", "wasm": "ort-wasm.wasm.gz"}


def vendor_version() -> str:
    return (VENDOR / "VERSION").read_text().strip()


def _resources(onnx_bytes: bytes) -> dict[str, bytes]:
    packed = {key: gzip.compress((VENDOR / name).read_bytes(), 9, mtime=0)
              for key, name in (("ort", "ort.wasm.min.mjs"), ("glue", "ort-wasm-simd-threaded.mjs"))}
    return {"model": onnx_bytes, **packed, "wasm": (VENDOR / "ort-wasm-simd-threaded.wasm.gz").read_bytes()}


def render_page(payload: dict, resources: dict[str, bytes] | None) -> str:
    """The page: template + styles + script + payload; resources inline (single file) or None (assets/)."""
    page = (WEB / "lesson.html").read_text(encoding="utf-8")
    css = (WEB / "lesson.css").read_text(encoding="utf-8")
    js = "\n".join((WEB / f).read_text(encoding="utf-8") for f in ("core.js", "views.js", "extra.js"))
    if resources is None:
        blobs = script_json({"assets": {k: f"assets/{v}" for k, v in ASSETS.items()}})
    else:
        blobs = script_json({"inline": {k: base64.b64encode(v).decode("ascii") for k, v in resources.items()}})
    parts = {"{{TITLE}}": html.escape(payload["title"]), "/*{{CSS}}*/": css, "{{PAYLOAD}}": script_json(payload),
             "{{RESOURCES}}": blobs, "{{ORT_VERSION}}": html.escape(vendor_version()), "/*{{JS}}*/": js}
    for key, value in parts.items():
        head, sep, tail = page.partition(key)
        if not sep:
            raise CNNLibError(f"the lesson template lacks {key}")
        page = head + value + tail           # once, in order: later values are never searched again
    return page


def build_lesson(ckpt_path, out, images: int = 5, title: str | None = None, single_file: bool = False,
                 saliency_limit: int | None = None) -> str:
    """Write the lesson for a checkpoint; returns the path of its page (see the module docstring).

    `ckpt_path`: a checkpoint (path, bytes, loaded dict) or a model from load_model (only read: copies do the work).
    `out` is a folder (directory form; single file: out/index.html) or, with single_file, a file ending in .html.
    """
    from cnnlib.inference import load_model
    from cnnlib.lesson.exercises import make_exercises
    from cnnlib.lesson.graph import export_lesson_onnx
    from cnnlib.lesson.payload import lesson_payload

    if int(images) < 1:
        raise CNNLibError(f"--images must be at least 1, not {images}")
    folder = Path(out).parent if Path(out).suffix.lower() in (".html", ".htm") else Path(out)
    try:                      # a place it cannot write is said before minutes of building, not after
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CNNLibError(f"cannot write the lesson to {out}: {e.strerror or e}") from None
    loaded = hasattr(ckpt_path, "meta") and callable(getattr(ckpt_path, "named_modules", None))
    model = ckpt_path if loaded else load_model(ckpt_path, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        layout = export_lesson_onnx(model, os.path.join(tmp, "model.onnx"))
        onnx_bytes = Path(tmp, "model.onnx").read_bytes()
    payload = lesson_payload(model, layout, images=int(images), title=title, saliency_limit=saliency_limit)
    payload["exercises"] = make_exercises(model, layout, *payload.pop("sample"))
    payload["source_file"] = os.path.basename(str(ckpt_path)) if isinstance(ckpt_path, (str, os.PathLike)) else ""
    payload["runtime"] = f"onnxruntime-web {vendor_version()} (WebAssembly)"
    resources = _resources(onnx_bytes)
    out = Path(out)
    try:
        if single_file:
            page_path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
            page_path.parent.mkdir(parents=True, exist_ok=True)
            page_path.write_text(render_page(payload, resources), encoding="utf-8")
        else:
            if out.suffix.lower() in (".html", ".htm"):
                raise CNNLibError(f"{out} is a file name; the directory form needs a folder (or add --single-file)")
            (out / "assets").mkdir(parents=True, exist_ok=True)
            for key, name in ASSETS.items():
                (out / "assets" / name).write_bytes(resources[key])
            page_path = out / "index.html"
            page_path.write_text(render_page(payload, None), encoding="utf-8")
    except OSError as e:
        raise CNNLibError(f"cannot write the lesson to {out}: {e.strerror or e}") from None
    return str(page_path)


def lesson_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib lesson",
                                description="Write a static lesson (a CNN Explainer for this checkpoint, with "
                                            "exercises) that runs in any browser with no server.")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for index.html + assets/ (with --single-file: a FILE.html, or a folder for index.html)")
    p.add_argument("--images", type=int, default=5, metavar="N", help="test images per class inside the lesson (5)")
    p.add_argument("--title", default=None, help="the lesson's title (default: Inside MODEL)")
    p.add_argument("--single-file", action="store_true", help="one self-contained .html (opens from disk, e-mail, LMS)")
    args = p.parse_args(argv)
    page = build_lesson(args.checkpoint, args.out, images=args.images, title=args.title, single_file=args.single_file)
    size = sum(f.stat().st_size for f in ([Path(page)] if args.single_file else Path(page).parent.rglob("*"))
               if f.is_file())
    print(f"wrote {page} ({size / 1e6:.1f} MB); open it in a browser"
          + ("" if args.single_file else " through a static server, e.g. `python -m http.server`"))
    return 0
