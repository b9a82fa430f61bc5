"""Generators and mutators for fuzzing what CNN Lens accepts from outside: images and checkpoint files.

    image_case(draw)            a hypothesis strategy body: a valid encoded image, then mutated
    checkpoint_cases(blob, rng) (name, bytes) mutations of one valid checkpoint file
    check_image(blob)           "ok" | "ImageError"; anything else raises (a bug)
    check_checkpoint(blob)      "ok" | "CheckpointError"; anything else raises (a bug)

Used by tests/test_fuzz.py (a fixed, fast subset in CI) and bench/fuzz.py (the full run with figures).
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import struct
import zipfile

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

from cnnlib import CheckpointError, CNNLibError, ImageError
from cnnlib.data.images import load_image, to_model_input
from cnnlib.inference import load_model, predict
from cnnlib.models.registry import get_model

FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"]
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LA"]



# ----------------------------------------------------------------------------- images

def _image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("I;16",):
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16), "I;16")
    if mode in ("I", "F"):
        return Image.fromarray(rng.integers(0, 10_000, (h, w)).astype(np.int32 if mode == "I" else np.float32), mode)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return base.convert("RGB").quantize(colors=int(rng.integers(2, 257)))
    return base.convert(mode)


def _writable(fmt: str, mode: str) -> bool:
    try:
        _image(mode, 2, 2, 0).save(io.BytesIO(), fmt)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _encode(im: Image.Image, fmt: str, frames: int, orientation: int | None) -> bytes:
    buf = io.BytesIO()
    kw = {}
    if fmt == "JPEG" and orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation                       # EXIF Orientation, valid 1..8; others on purpose
        kw["exif"] = exif.tobytes()
    if frames > 1 and fmt in ("GIF", "PNG", "WEBP", "TIFF"):
        more = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for _ in range(frames - 1)]
        try:
            im.save(buf, fmt, save_all=True, append_images=more, **kw)
            return buf.getvalue()
        except (OSError, ValueError):          # this mode has no animated form in this format: one frame
            buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _declare_huge(blob: bytes, fmt: str) -> bytes:
    """Rewrite the declared width/height to absurd values without changing the pixel data."""
    b = bytearray(blob)
    if fmt == "PNG" and len(b) > 24:
        b[16:24] = struct.pack(">II", 100_000, 100_000)        # IHDR width, height
    elif fmt == "BMP" and len(b) > 26:
        b[18:26] = struct.pack("<ii", 60_000, -60_000)
    elif fmt == "GIF" and len(b) > 10:
        b[6:10] = struct.pack("<HH", 65535, 65535)
    elif fmt == "JPEG":
        i = b.find(b"\xff\xc0")
        if i > 0 and len(b) > i + 9:
            b[i + 5:i + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(b)


SAVE_MODES = {fmt: [m for m in MODES if _writable(fmt, m)] for fmt in FORMATS}   # what Pillow can write


@st.composite
def image_case(draw):
    fmt = draw(st.sampled_from(FORMATS))
    mode = draw(st.sampled_from(SAVE_MODES[fmt]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    frames = draw(st.integers(1, 3))
    orientation = draw(st.one_of(st.none(), st.integers(0, 20), st.just(65535)))
    blob = _encode(_image(mode, w, h, draw(st.integers(0, 2**16))), fmt, frames, orientation)
    kind = draw(st.sampled_from(["valid", "bitflip", "truncate", "huge", "insert", "garbage_tail"]))
    b = bytearray(blob)
    if kind == "bitflip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        b = b[:draw(st.integers(0, max(len(b) - 1, 0)))]
    elif kind == "huge":
        b = bytearray(_declare_huge(bytes(b), fmt))
    elif kind == "insert":
        i = draw(st.integers(0, len(b)))
        b[i:i] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "garbage_tail":
        b += draw(st.binary(min_size=1, max_size=64))
    return f"{fmt}/{mode}/{w}x{h}/{frames}f/{kind}", bytes(b)


def check_image(blob: bytes) -> str:
    """Decode like every upload path does; the only allowed outcomes are a correct image or ImageError."""
    try:
        im = load_image(blob)
        x = to_model_input(im, [3, 32, 32])
    except ImageError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 300, msg
        return "ImageError"
    assert im.mode in ("RGB", "L") and x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all()) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    return "ok"


# ----------------------------------------------------------------------------- checkpoints

class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnlib-fuzz-pwned",))


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rezip(blob: bytes, edit) -> bytes:
    """Rewrite a torch zip archive member by member; edit(name, data) -> data, or None to drop it."""
    src, out = zipfile.ZipFile(io.BytesIO(blob)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                z.writestr(info.filename, data)
        extra = edit("__extra__", b"")
        if extra:
            z.writestr(src.namelist()[0].split("/")[0] + "/extra.bin", extra)
    return out.getvalue()


def checkpoint_cases(blob: bytes, rng: np.random.Generator, flips: int = 50) -> list[tuple[str, bytes]]:
    """Mutations of one valid checkpoint file (its bytes)."""
    ckpt = torch.load(io.BytesIO(blob), weights_only=True)
    sd = ckpt["state_dict"]
    cases = [(f"truncated at {p}%", blob[:len(blob) * p // 100]) for p in range(100)]
    for i in range(flips):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        cases.append((f"flipped bytes #{i}", bytes(b)))

    def variant(name, **changes):
        c = copy.deepcopy(ckpt)
        c.update(changes)
        cases.append((name, _saved(c)))
    first = next(iter(sd))
    variant("int64 weights", state_dict={k: v.to(torch.int64) for k, v in sd.items()})
    variant("float16 weights", state_dict={k: v.half() if v.is_floating_point() else v for k, v in sd.items()})
    variant("bool weights", state_dict={k: v.bool() for k, v in sd.items()})
    variant("transposed tensor", state_dict={**sd, first: sd[first].transpose(0, 1).contiguous()})
    variant("extra dimension", state_dict={**sd, first: sd[first][None]})
    variant("scalar for a tensor", state_dict={**sd, first: torch.tensor(1.0)})
    variant("NaN weights", state_dict={**sd, first: torch.full_like(sd[first], math.nan)})
    variant("Inf weights", state_dict={**sd, first: torch.full_like(sd[first], math.inf)})
    variant("string for a tensor", state_dict={**sd, first: "weights"})
    for other in ("resnet9", "simple_cnn"):
        arch = get_model(other, num_classes=3, image_size=16, in_channels=1).state_dict()
        variant(f"state dict of another {other}", state_dict=arch)
    variant("state dict nested deep", state_dict={"model": {"state_dict": [sd]}})
    variant("classes shorter", classes=ckpt["classes"][:1])
    variant("classes longer", classes=ckpt["classes"] + ["extra"])
    variant("classes not strings", classes=[1, 2, 3])
    variant("input shape absurd", input_shape=[3, 10**9, 10**9])
    variant("input shape large", input_shape=[3, 20_000, 20_000])
    variant("input shape negative", input_shape=[3, -1, 16])
    variant("normalization zero std", normalization={"mean": [0.5] * 3, "std": [0.0] * 3})
    variant("normalization wrong length", normalization={"mean": [0.5], "std": [0.2]})
    variant("model name unknown", model={"name": "no_such_net", "kwargs": {}})
    variant("model kwargs wrong", model={"name": ckpt["model"]["name"], "kwargs": {"num_classes": -5}})
    variant("model kwargs huge", model={"name": ckpt["model"]["name"], "kwargs": {"num_classes": 10**7}})
    variant("format version text", format_version="two")
    variant("preprocessing bad", preprocessing={"resize": -3, "crop": "x"})
    variant("stored predictions broken", test_predictions={"targets": torch.zeros(3), "probs": torch.zeros(2)})
    cases.append(("not a dict", _saved([1, 2, 3])))
    cases.append(("code in a torch.save file", _saved({"model": _RunsCode()})))
    cases.append(("code in a plain pickle", pickle.dumps(_RunsCode())))
    cases.append(("zip with an extra member", _rezip(blob, lambda n, d: b"\x00" * 64 if n == "__extra__" else d)))
    cases.append(("zip missing a tensor", _rezip(blob, lambda n, d: None if n.endswith("/data/0") else d)))
    cases.append(("zip missing data.pkl", _rezip(blob, lambda n, d: None if n.endswith("data.pkl") else d)))
    cases.append(("tensor storage shorter than declared",
                  _rezip(blob, lambda n, d: d[:8] if n.endswith("/data/0") else d)))
    cases.append(("json instead", json.dumps({"format_version": 2}).encode()))
    cases.append(("empty", b""))
    return cases


def check_checkpoint(blob: bytes, image=None) -> str:
    """Load like the CLI and the dashboard do; allowed: a working model or one CheckpointError sentence."""
    try:
        model = load_model(blob)
    except CheckpointError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "weights_only" not in msg and not msg.endswith(":"), msg
        return "CheckpointError"
    if image is not None:
        try:
            top = predict(model, image, k=3)
        except CNNLibError as e:                            # e.g. weights that overflow for this image
            assert "\n" not in str(e), str(e)
            return "CNNLibError"
        json.dumps(top, allow_nan=False)                  # finite probabilities: valid JSON
        assert all(0.0 <= t["prob"] <= 1.0 for t in top)
    return "ok"
