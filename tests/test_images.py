"""cnnlib.data.images: what real uploads look like (odd modes, EXIF, animation), what hostile files look like,
and fit_image's resize + centre crop against torchvision's transforms."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from modeltools import png_bytes, rgb
from PIL import Image
from cnnlib import ImageError
from cnnlib.data.images import fit_image, load_image, to_model_input
from cnnlib.inference import load_model, predict


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




@pytest.mark.parametrize("size,pre", [((300, 200), {"resize": 256, "crop": 224}), ((201, 333), {"resize": 72, "crop": 64}),
                                      ((64, 64), {"resize": 0, "crop": 48}), ((50, 80), None)])
def test_fit_image_matches_torchvision_resize_and_centre_crop(size, pre):
    from torchvision.transforms import v2
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    c = (pre or {}).get("crop") or 32
    out = np.asarray(fit_image(im, [3, c, c], pre), np.int16)
    steps = ([v2.Resize(pre["resize"], antialias=True)] if pre and pre["resize"] else []) + \
        ([v2.CenterCrop(pre["crop"])] if pre and pre["crop"] else [v2.Resize((c, c), antialias=True)])
    ref = np.asarray(v2.Compose(steps)(im), np.int16)
    assert out.shape == ref.shape == (c, c, 3)
    assert np.abs(out - ref).mean() < 2.0          # same geometry; resampling kernels differ by rounding
    gray = to_model_input(im, [1, c, c], pre)
    assert gray.shape == (1, c, c) and gray.dtype == torch.float32 and 0 <= gray.min() and gray.max() <= 1
