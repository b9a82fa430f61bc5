"""Safe image decoding: any path, bytes, PIL image or array -> a plain RGB or L image.

Handles what real uploads look like (grayscale, RGBA, CMYK, 16-bit, palette,
animated -> first frame, EXIF rotation) and refuses what hostile or broken
files look like (empty, truncated, not an image, decompression bombs, absurd
sizes) with an ImageError that says which.
"""
from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from cnnlib.errors import ImageError

MAX_PIXELS = 40_000_000      # refuse images above 40 megapixels (decompression-bomb guard)
MAX_BYTES = 50 * 2**20       # refuse encoded files above 50 MiB
MAX_SIDE_RATIO = 1000        # refuse absurd aspect ratios such as 1 x 100000
# file types the CLI, the data loaders and the dashboard's uploaders accept (one list)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _from_array(arr: np.ndarray) -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array must be (H, W), (H, W, 3|4) or (C, H, W); got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        a = np.clip(a * 255.0 if a.max(initial=0) <= 1.0 else a, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        a = a.astype(np.int64)
        a = (a * 255 // max(int(a.max(initial=0)), 1) if a.max(initial=0) > 255 else np.clip(a, 0, 255)) \
            if a.dtype != bool else a * 255
        a = a.astype(np.uint8)
    else:
        raise ImageError(f"unsupported image array dtype {a.dtype}")
    return Image.fromarray(a)


def _flatten_mode(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 'RGB' or 'L' (alpha composited on white, 16/32-bit rescaled)."""
    if im.mode in ("RGB", "L"):
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if im.mode == "F" and a.max(initial=0) <= 1.0:
            top = 1.0
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L")
    if im.mode in ("1",):
        return im.convert("L")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def load_image(source) -> Image.Image:
    """Decode `source` (path, bytes, file object, PIL image or numpy/torch array) safely.

    Returns a fully loaded PIL image in mode 'RGB' or 'L', EXIF-rotated, first frame only.
    """
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        im = source
    else:
        name = "the image"
        if isinstance(source, (str, os.PathLike)):
            name = str(source)
            if not os.path.isfile(source):
                raise ImageError(f"{name} does not exist")
            if os.path.getsize(source) > MAX_BYTES:
                raise ImageError(f"{name} is larger than {MAX_BYTES // 2**20} MiB")
            with open(source, "rb") as f:
                data = f.read()
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif hasattr(source, "read"):
            name = getattr(source, "name", name)
            data = source.read(MAX_BYTES + 1)
        else:
            raise ImageError(f"cannot read an image from a {type(source).__name__}")
        if not data:
            raise ImageError(f"{name} is empty (0 bytes)")
        if len(data) > MAX_BYTES:
            raise ImageError(f"{name} is larger than {MAX_BYTES // 2**20} MiB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
                _check_size(im, name)
                im.seek(0)
                im.load()
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image format Pillow can read") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name} declares an enormous size (a decompression bomb?); refused") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, MemoryError) as e:
            raise ImageError(f"{name} is broken or truncated: {str(e)[:150]}") from None
    _check_size(im, "the image")
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF must not lose the picture  # noqa: BLE001
        pass
    return _flatten_mode(im)


def _check_size(im: Image.Image, name: str) -> None:
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{name} has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name} is {w}x{h} pixels, over the {MAX_PIXELS // 10**6} megapixel limit")
    if max(w, h) / min(w, h) > MAX_SIDE_RATIO:
        raise ImageError(f"{name} has an absurd shape ({w}x{h})")


def fit_image(im: Image.Image, input_shape, preprocessing: dict | None = None) -> Image.Image:
    """A decoded image -> the model's channels and size, the torchvision way.

    preprocessing (the checkpoint's, optional): {"resize": N, "crop": M}. resize > 0 scales the shorter
    side to N pixels (bilinear, antialiased); crop > 0 then takes the centre M x M (torchvision's
    Resize(N) + CenterCrop(M)). Whatever the result, a size that still differs from input_shape [C, H, W]
    is resized to (W, H) directly: a 32-pixel model stretches any upload to 32 x 32, as it always has.
    """
    c, h, w = (int(v) for v in input_shape)
    im = im.convert("L" if c == 1 else "RGB")
    pre = preprocessing or {}
    resize, crop = int(pre.get("resize") or 0), int(pre.get("crop") or 0)
    if resize > 0:
        iw, ih = im.size
        scale = resize / min(iw, ih)
        size = (max(1, round(iw * scale)), max(1, round(ih * scale)))
        if size != im.size:
            im = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    if crop > 0:
        iw, ih = im.size
        cw, ch = min(crop, iw), min(crop, ih)
        left, top = int(round((iw - cw) / 2.0)), int(round((ih - ch) / 2.0))
        im = im.crop((left, top, left + cw, top + ch))
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    return im


def to_uint8_chw(im: Image.Image) -> np.ndarray:
    """PIL image ('L' or 'RGB') -> uint8 array (C, H, W)."""
    a = np.asarray(im, dtype=np.uint8)
    return np.require(a[None] if a.ndim == 2 else a.transpose(2, 0, 1), requirements=["C", "W"])  # own, writable


def to_model_input(image, input_shape, preprocessing: dict | None = None) -> torch.Tensor:
    """Image -> float tensor (C, H, W) in [0, 1] at the model's channels and size (see fit_image)."""
    im = fit_image(load_image(image), input_shape, preprocessing)
    return torch.from_numpy(to_uint8_chw(im)).float().div_(255.0)
