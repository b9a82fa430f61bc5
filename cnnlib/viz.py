"""Pictures for people: arrays -> displayable uint8 images, crisp enlargements, tile grids, PNG bytes.

    to_hwc_uint8(x)           (C, H, W) / (H, W, C) / (H, W), uint8 or float in [0, 1] -> (H, W, 3) or (H, W) uint8
    enlarge(img, 128)         nearest-neighbour upscaling, so a 32x32 picture stays sharp on screen
    colorize(values01, cmap)  (..., H, W) in [0, 1] -> (..., H, W, 3) uint8 through a colour map
    grid(tiles, ncols)        (N, h, w[, C]) tiles -> one array with padding between them
    tile_image(tiles, ...)    (N, h, w[, C]) tiles in [0, 1] -> one enlarged uint8 grid image
    hstack(images)            images side by side (heights matched), one uint8 image
    png_bytes(img)            uint8 image -> PNG file content (for download buttons)

Numpy and Pillow only (no torch, no Streamlit): the dashboard renders with it, tests check it directly.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from cnnlib.errors import CNNLibError


def to_hwc_uint8(x) -> np.ndarray:
    """One image as (H, W, 3) or (H, W) uint8. Accepts (C, H, W) / (H, W, C) / (H, W), uint8 or [0, 1] floats
    (a torch tensor too). Single-channel images come back as (H, W)."""
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise CNNLibError(f"expected one image (C, H, W), (H, W, C) or (H, W); got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.nan_to_num(a.astype(np.float32)) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def enlarge(img, size: int | None = None, factor: int | None = None) -> np.ndarray:
    """Nearest-neighbour enlargement: by an integer `factor`, or so the longer side reaches about `size`."""
    a = to_hwc_uint8(img)
    h, w = a.shape[:2]
    if factor is None:
        factor = max(1, int(size // max(h, w))) if size else 1
    if factor <= 1:
        return a
    return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)


def colormap(values01, cmap: str = "viridis") -> np.ndarray:
    """Values in [0, 1] (any leading shape) -> float32 RGB in [0, 1], shape (..., 3), through a matplotlib
    colour map ('gray' and 'jet' work without matplotlib)."""
    v = np.clip(np.nan_to_num(np.asarray(values01, np.float32)), 0, 1)
    if cmap == "gray":
        return np.repeat(v[..., None], 3, -1)
    if cmap == "jet":
        return np.stack([np.clip(1.5 - np.abs(4 * v - s), 0, 1) for s in (3, 2, 1)], -1).astype(np.float32)
    try:
        import matplotlib
        return matplotlib.colormaps[cmap](v)[..., :3].astype(np.float32)
    except (ImportError, KeyError):
        raise CNNLibError(f"unknown colour map {cmap!r}") from None


def colorize(values01, cmap: str = "viridis") -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (..., 3) through `colormap`."""
    return np.clip(np.rint(colormap(values01, cmap) * 255.0), 0, 255).astype(np.uint8)


def grid(tiles: np.ndarray, ncols: int | None = None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tiles (N, h, w) or (N, h, w, C) -> one image (rows*(h+pad)-pad, cols*(w+pad)-pad[, C])."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad) + tiles.shape[3:], pad_value, tiles.dtype)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tiles[i]
    return out


def tile_image(tiles, ncols: int | None = None, pad: int = 1, factor: int = 1, pad_value: float = 1.0,
               cmap: str | None = None) -> np.ndarray:
    """Tiles (N, h, w) or (N, h, w, C) in [0, 1] -> one uint8 image: a grid with `pad` pixels of `pad_value`
    between tiles, each tile enlarged `factor` times. Single-channel tiles go through `cmap` when given."""
    t = np.asarray(tiles, np.float32)
    if t.ndim not in (3, 4) or len(t) == 0:
        raise CNNLibError(f"tiles must be (N, h, w) or (N, h, w, C) with N > 0; got shape {t.shape}")
    if t.ndim == 4 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim == 4 and t.shape[-1] == 2:          # two input channels: show their mean
        t = t.mean(-1)
    if t.ndim == 4 and t.shape[-1] > 3:
        t = t[..., :3]
    if factor > 1:
        t = np.repeat(np.repeat(t, factor, axis=1), factor, axis=2)
    if t.ndim == 3 and cmap:
        t = colorize(t, cmap).astype(np.float32) / 255.0
    return to_hwc_uint8(grid(t, ncols, pad, pad_value))


def hstack(images, pad: int = 4, pad_value: int = 255) -> np.ndarray:
    """Images side by side (each resized by nearest neighbour to the tallest height), as (H, W, 3) uint8."""
    imgs = [to_hwc_uint8(im) for im in images]
    if not imgs:
        raise CNNLibError("hstack needs at least one image")
    imgs = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im for im in imgs]
    height = max(im.shape[0] for im in imgs)
    resized = []
    for im in imgs:
        if im.shape[0] != height:
            w = max(1, round(im.shape[1] * height / im.shape[0]))
            im = np.asarray(Image.fromarray(im).resize((w, height), Image.Resampling.NEAREST))
        resized.append(im)
    parts = []
    for i, im in enumerate(resized):
        if i:
            parts.append(np.full((height, pad, 3), pad_value, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def png_bytes(img) -> bytes:
    """An image (see to_hwc_uint8) as PNG file content."""
    buf = io.BytesIO()
    Image.fromarray(to_hwc_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()
