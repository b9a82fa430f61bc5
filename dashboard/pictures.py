"""Images the pages draw, built from cnnlib's rendering helpers (cnnlib.viz, attribution.overlay) under the
names the pages use. All return uint8 (H, W, 3) or (H, W) arrays for st.image."""
from __future__ import annotations

import numpy as np
from cnnlib import viz


def enlarge(img, size: int = 160) -> np.ndarray:
    """A small image (C, H, W) / (H, W[, C]) enlarged without blur (nearest neighbour) to about `size` px."""
    return viz.enlarge(img, size=size)


def mosaic(tiles, ncols: int, factor: int = 1, pad: int = 2, cmap: str | None = None) -> np.ndarray:
    """Tiles (N, h, w[, C]) in [0, 1] as one picture, `ncols` per row, each enlarged `factor` times."""
    return viz.tile_image(tiles, ncols=ncols, pad=pad, factor=factor, cmap=cmap)


def fit_factor(tile_px: int, ncols: int, width_px: int, pad: int = 2) -> int:
    """The enlargement that makes `ncols` tiles of `tile_px` (plus padding) fill about `width_px`."""
    return max(1, (width_px - pad * (ncols - 1)) // max(1, ncols * tile_px))


def side_by_side(images) -> np.ndarray:
    """Images in one row (for a PNG download of what a page shows)."""
    return viz.hstack(images)


def heat_colours(values01, cmap: str = "jet") -> np.ndarray:
    """A heatmap (H, W) in [0, 1] in colour."""
    return viz.colorize(values01, cmap)


def overlay(x01: np.ndarray, heatmap: np.ndarray, alpha: float, cmap: str = "jet") -> np.ndarray:
    """A heatmap painted over the image with opacity `alpha`."""
    from cnnlib.explain import attribution
    return attribution.overlay(x01, heatmap, alpha=alpha, cmap=cmap)


def kernel_tiles(weight, scale: str = "filter") -> np.ndarray:
    """First-layer kernels (C_out, C_in, k, k) as tiles (C_out, k, k, C_in) in [0, 1]."""
    from cnnlib.models import anatomy as interpret
    return interpret.first_layer_filters(weight, scale=scale)


def change_tiles(weight, initial) -> tuple[np.ndarray, float]:
    """W - W_0 as tiles (C_out, k, k, C_in) in [0, 1] on ONE symmetric scale: 0.5 (mid grey) = unchanged,
    brighter = grew, darker = shrank. Returns (tiles, the largest absolute change)."""
    d = np.asarray(weight, np.float32) - np.asarray(initial, np.float32)
    vmax = float(np.abs(d).max()) or 1.0
    return (0.5 + 0.5 * d / vmax).transpose(0, 2, 3, 1).astype(np.float32), vmax


def layer_kernel_tiles(model, layer: str, scale: str) -> np.ndarray:
    """A deeper conv layer's kernels (C_out, C_in, k, k) in [0, 1]."""
    from cnnlib.models import anatomy as interpret
    return interpret.layer_kernels(model, layer, scale=scale)


def png_bytes(img) -> bytes:
    return viz.png_bytes(img)
