"""Inference: odd image modes, hostile images, broken or hostile checkpoints, the predict CLI."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlib import CheckpointError, ImageError, get_model
from cnnlib.checkpoint import load_checkpoint, save_checkpoint
from cnnlib.images import load_image, to_model_input
from cnnlib.inference import load_model, predict, visualize_predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png_bytes(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def odd_images():
    base = rgb()
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    frames = [rgb(seed=i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return {
        "grayscale": png_bytes(base.convert("L")),
        "rgba": png_bytes(base.convert("RGBA")),
        "cmyk": png_bytes(base.convert("CMYK"), "JPEG"),
        "16-bit": png_bytes(Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))),
        "palette": png_bytes(pal),
        "animated": gif.getvalue(),
        "1-bit": png_bytes(base.convert("1")),
        "huge-but-legal": png_bytes(rgb(1200, 900)),
        "tiny": png_bytes(rgb(1, 1)),
        "numpy-float": np.random.default_rng(0).random((20, 20, 3)),
        "numpy-chw": np.random.default_rng(0).integers(0, 255, (3, 10, 12), dtype=np.uint8),
        "pil": base,
    }


@pytest.mark.parametrize("kind", list(odd_images()))
def test_predict_accepts_odd_images(tiny_ckpt, kind):
    model = load_model(tiny_ckpt)
    top = predict(model, odd_images()[kind], k=3)
    assert len(top) == 3 and all(t["class"] in model.meta["classes"] for t in top)
    probs = [t["prob"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_exif_rotation_and_first_frame():
    im = rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise
    assert load_image(png_bytes(im, "JPEG", exif=exif)).size == (20, 40)
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    first = load_image(gif.getvalue())
    assert first.getpixel((4, 4))[0] > 200 and first.getpixel((4, 4))[2] < 50


def test_rgba_is_composited_on_white_and_16bit_is_rescaled():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(png_bytes(transparent)).getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert load_image(png_bytes(deep)).getpixel((0, 0)) == 255
    x = to_model_input(png_bytes(rgb(64, 48)), [3, 16, 16])
    assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1


def hostile_images():
    good = png_bytes(rgb())
    return {
        "empty": b"",
        "not an image": b"hello, I am text, not a picture" * 10,
        "truncated": good[: len(good) // 2],
        "bomb": png_bytes(Image.new("1", (10000, 8000))),  # 80 megapixels in a few kilobytes
        "absurd shape": png_bytes(Image.new("L", (5000, 2))),
    }


@pytest.mark.parametrize("kind", list(hostile_images()))
def test_hostile_images_raise_image_error(tiny_ckpt, kind):
    with pytest.raises(ImageError):
        predict(load_model(tiny_ckpt), hostile_images()[kind])


def test_missing_image_path():
    with pytest.raises(ImageError, match="does not exist"):
        load_image("/no/such/image.png")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnlib-pwned",))


def bad_checkpoints(tiny_ckpt):
    good = open(tiny_ckpt, "rb").read()
    ckpt = load_checkpoint(tiny_ckpt)
    other = get_model("resnet9", num_classes=4, image_size=16).state_dict()
    buf_other, buf_bare, buf_evil = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save({**ckpt, "state_dict": other}, buf_other)
    torch.save(ckpt["state_dict"], buf_bare)
    pickle.dump({"format_version": 1, "model": RunsCode()}, buf_evil)
    return {"random bytes": os.urandom(4096), "truncated": good[: len(good) // 2], "empty": b"",
            "code-running pickle": buf_evil.getvalue(), "other architecture": buf_other.getvalue(),
            "bare state_dict": buf_bare.getvalue(), "text": b"not a checkpoint"}


def test_bad_checkpoints_raise_one_clear_error(tiny_ckpt, tmp_path):
    if os.path.exists("/tmp/cnnlib-pwned"):
        os.unlink("/tmp/cnnlib-pwned")
    for kind, blob in bad_checkpoints(tiny_ckpt).items():
        path = tmp_path / f"{kind.replace(' ', '_')}.pt"
        path.write_bytes(blob)
        with pytest.raises(CheckpointError) as info:
            load_model(str(path))
        assert len(str(info.value)) > 20, kind
        with pytest.raises(CheckpointError):  # bytes, as the dashboard's upload gives them
            load_model(blob)
        r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", str(path), "x.png"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr, kind
    assert not os.path.exists("/tmp/cnnlib-pwned")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))


def test_newer_format_version_is_refused(tiny_ckpt, tmp_path):
    ckpt = load_checkpoint(tiny_ckpt)
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(str(tmp_path / "future.pt"))
    with pytest.raises(CheckpointError, match="without"):
        save_checkpoint({"state_dict": {}}, str(tmp_path / "incomplete.pt"))


def test_predict_cli_json(tiny_ckpt, tmp_path):
    img = tmp_path / "a.png"
    rgb().save(img)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", tiny_ckpt, str(img), "--json", "--top", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out[0]["image"] == str(img) and len(out[0]["top"]) == 2 and set(out[0]["top"][0]) == {"class", "prob"}
    r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", tiny_ckpt, str(img), str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "bad.png" in r.stderr
    assert str(img) in r.stdout


def test_visualize_predictions_draws_image_and_bars(tiny_ckpt, tmp_path):
    img = tmp_path / "a.png"
    rgb().save(img)
    fig = visualize_predictions(load_model(tiny_ckpt), str(img), "cpu")
    image_ax, bar_ax = fig.axes
    assert image_ax.images and len(bar_ax.patches) == 4
