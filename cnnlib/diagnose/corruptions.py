"""The 15 common corruptions of CIFAR-10-C / ImageNet-C at 5 severities, on whole batches of images.

    out = corrupt_batch(x_bhwc_uint8, "fog", 3, rng)      # (B, H, W, C) uint8 -> the same shape
    out = corrupt(x_hwc_uint8, "fog", 3, rng)             # one image (H, W, C) uint8 -> the same shape

corrupt_batch(xs, name, s, rng) is [corrupt(x, name, s, rng) for x in xs] with one generator shared in that order:
every image draws the same random numbers, in the same order, as it would one at a time (the draws are taken per
image in a short loop, or all at once where numpy's stream is the same), and the arithmetic runs on the whole
(B, H, W, 3) float64 array. Only the loops that are C code already (PIL's JPEG and pixelate, OpenCV's filter and
warp) stay per image. The results equal the per-image definitions of cnnlib before batching (tests/
test_robustness.py keeps that reference and compares every corruption and severity), except where a zoom is
involved: it interpolates with two taps per output, not a dense matrix product through BLAS, whose fused
multiply-adds round the last bit differently, so a zoom-blurred value can truncate one uint8 level apart (on
about 1 value in 10,000).

The corruptions and their 5 parameter sets are CIFAR-10-C's (Hendrycks & Dietterich, ICLR 2019; make_cifar_c.py of
github.com/hendrycks/robustness) in numpy / scipy / OpenCV / Pillow: imagecorruptions 1.1.2 breaks on NumPy 2 and
scikit-image >= 0.19, its fork imagecorruptions-imaug pulls opencv-python beside our headless OpenCV, and both
carry ImageNet-C's 224-px parameters, which blur a 32-px image away at severity 1. Deviations: other image sizes
have the spatial parameters (blur radii, shuffle distance, snow streaks) scaled by H / 32; motion blur (ImageMagick
in the original) is a one-sided Gaussian line kernel, as imagecorruptions re-implements it; frost blends a crop of
imagecorruptions' frost photographs when that package is installed, else a procedural ice layer (plasma fractal and
streaks): frost figures are approximate without it. Grayscale images are corrupted as RGB and converted back.
"""
from __future__ import annotations

import functools
import io

import numpy as np

from cnnlib.errors import CNNLibError

__all__ = ["CORRUPTIONS", "SEVERITIES", "P", "corrupt", "corrupt_batch"]

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK_PIXELS = 2 ** 15     # images per _apply call: 32 at 32 px, so its float64 arrays stay in a core's L2 cache

# CIFAR-10-C's parameters, one tuple per severity 1..5 (meaning beside each)
P = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],              # std of additive noise, [0, 1] pixel units
    "shot_noise": [500, 250, 100, 75, 50],                       # photons per unit intensity (Poisson)
    "impulse_noise": [.01, .02, .03, .05, .07],                  # fraction of values set to 0 or 1
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],   # disk radius px, anti-alias sigma
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, max shift, passes
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],  # kernel radius px, sigma px (angle +-45 deg)
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],                 # zooms 1, 1.01, ... below this, averaged
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    #     flake mean, flake std, layer zoom, flake threshold, motion radius, motion sigma, image weight
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],        # image weight, frost weight
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],  # fog strength, fractal roughness decay
    "brightness": [.05, .1, .15, .2, .3],                        # added to HSV value
    "contrast": [.75, .5, .4, .3, 0.15],                         # factor on the distance to the channel mean
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    #     displacement alpha, smoothing sigma, affine jitter: each times the image side
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],                   # side fraction of the down-sampled image
    "jpeg_compression": [80, 65, 58, 50, 40],                    # JPEG quality
}


# ---------------- helpers on batches: x float (B, H, W, ...) in [0, 1]

def _blur(x, sigma, mode="nearest", truncate=4.0):
    """skimage.filters.gaussian of each image of x (B, H, W[, C]): the batch and channel axes are not blurred."""
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(x, sigma=(0, sigma, sigma, 0)[:x.ndim], mode=mode, truncate=truncate)


@functools.lru_cache(maxsize=64)
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The anti-aliased disk kernel float32 (2r+1, 2r+1) of defocus blur, made once per parameter set."""
    import cv2
    r = max(8, int(np.ceil(radius)))
    g = np.arange(-r, r + 1)
    xx, yy = np.meshgrid(g, g)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)


def _motion(x, radius: float, sigma: float, angles) -> np.ndarray:
    """One-sided Gaussian motion blur (ImageMagick's MotionBlurImage) of each image of x (B, H, W, ...) along its
    own angle in degrees (B,): tap i of the kernel reads the edge-padded image shifted i px along that angle."""
    width = int(2 * radius + 1)
    w = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    rad = np.deg2rad(np.asarray(angles, np.float64))
    dy, dx = np.sin(rad), np.cos(rad)                                   # (B,)
    b, h, wd = x.shape[:3]
    pad = width + 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 3), mode="edge")
    row, px = xp[0, 0].size, xp[0, 0, 0].size                           # values per padded row, per pixel
    flat = xp.reshape(-1)
    window = (np.arange(h)[:, None] * row + np.arange(wd * px)[None, :]).reshape(-1)   # one image's (H, W, ...)
    out = np.zeros_like(x)
    for i, wi in enumerate(w):                        # one flat gather per tap: image b's window moved by its shift
        oy, ox = np.round(i * dy).astype(np.int64), np.round(i * dx).astype(np.int64)
        start = np.arange(b) * xp[0].size + (pad - oy) * row + (pad - ox) * px
        out += wi * flat.take(start[:, None] + window).reshape(x.shape)
    return out


@functools.lru_cache(maxsize=512)
def _taps(n_in: int, n_out: int, first: int, count: int):
    """Linear interpolation from n_in to n_out samples, end points aligned (scipy.ndimage.zoom(order=1)'s
    sampling), for outputs first .. first+count-1: the two inputs (lo, hi) and the weight of hi, each (count,)."""
    pos = np.arange(n_out)[first:first + count] * ((n_in - 1) / max(n_out - 1, 1))
    lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), pos - lo


def _zoom(x, factor: float) -> np.ndarray:
    """Centre crop of 1/factor of each image of x (B, H, H, ...) zoomed back to H: scipy.ndimage.zoom(order=1),
    two taps per output along the rows, then along the columns; only the H centre rows and columns are made."""
    h = x.shape[1]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out, z = int(round(ch * factor)), x[:, top:top + ch, top:top + ch]
    lo, hi, f = _taps(ch, out, (out - h) // 2, h)
    for axis in (1, 2):
        fa = f.reshape((-1,) + (1,) * (z.ndim - 1 - axis))             # broadcast along the later axes
        z = np.take(z, lo, axis) * (1 - fa) + np.take(z, hi, axis) * fa
    return z


def _plasma(size: int, decay: float, u: np.ndarray) -> np.ndarray:
    """Diamond-square fractals (B, size, size) in [0, 1] (size a power of two) from u (B, _plasma_draws(size))
    uniform [0, 1) numbers: the numbers rng.uniform(-wibble, wibble, ...) draws, level by level, one image after
    the other (low + (high - low) * u, numpy's own formula, so the fractal is the per-image one bit for bit)."""
    b = len(u)
    m = np.zeros((b, size, size))
    step, wibble, k = size, 100.0, 0

    def draw(shape):
        nonlocal k
        n = shape[1] * shape[2]
        r = -wibble + (wibble - -wibble) * u[:, k:k + n].reshape(shape)
        k += n
        return r
    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + np.roll(corners, -1, 1)
        sq = sq + np.roll(sq, -1, 2)
        m[:, half::step, half::step] = sq / 4 + wibble * draw(sq.shape)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = (dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 2)) / 4 + wibble * draw(ul.shape)
        m[:, half::step, 0::step] = (dr + np.roll(dr, 1, 2) + ul + np.roll(ul, -1, 1)) / 4 + wibble * draw(ul.shape)
        step, wibble = half, wibble / decay
    m -= m.min((1, 2), keepdims=True)
    return m / np.maximum(m.max((1, 2), keepdims=True), 1e-12)


def _plasma_draws(size: int) -> int:
    """How many uniform numbers one size x size fractal draws: 3 (size/step)^2 per level, step = size .. 2."""
    return sum(3 * (size // step) ** 2 for step in (1 << e for e in range(int(np.log2(size)), 0, -1)))


def _hsv_value_add(x, c: float) -> np.ndarray:
    """Add c to HSV value (hue and saturation kept): RGB scales with V; black becomes grey V'."""
    v = x.max(-1, keepdims=True)
    v2 = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * v2 / np.maximum(v, 1e-12), v2)


@functools.lru_cache(maxsize=32)
def _frost_photo(name: str, w: int, h: int, s: float) -> np.ndarray:
    """imagecorruptions' frost photograph `name` resized for an (h, w) image, float (H', W', 3) in [0, 1]."""
    import importlib.resources
    from PIL import Image
    ref = importlib.resources.files("imagecorruptions") / "frost" / name
    with ref.open("rb") as f:
        im = Image.open(f).convert("RGB")
    im = im.resize((max(int(im.width * 0.2 * s), w + 1), max(int(im.height * 0.2 * s), h + 1)))
    return np.asarray(im, np.float64) / 255


def _frost_layers(b: int, h: int, w: int, s: float, rng) -> np.ndarray:
    """(B, H, W, 3) frost: a random crop of a frost photograph per image, else the procedural ice layer."""
    out, procedural = np.empty((b, h, w, 3)), []
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    missing = set()                                   # photographs that could not be read (no imagecorruptions)
    for i in range(b):                                # one image's draws, in the per-image order
        name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][int(rng.integers(5))]
        try:
            if name in missing:
                raise OSError(name)
            a = _frost_photo(name, w, h, s)
            y0, x0 = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
            out[i] = a[y0:y0 + h, x0:x0 + w]
        except (ImportError, ModuleNotFoundError, OSError, TypeError, ValueError):
            missing.add(name)
            procedural.append((i, rng.random(_plasma_draws(size)), rng.random((h, w)), rng.uniform(0, 180)))
    if procedural:
        at = [p[0] for p in procedural]
        base = _plasma(size, 2.0, np.stack([p[1] for p in procedural]))[:, :h, :w]
        streaks = _motion(np.stack([p[2] for p in procedural]) ** 8, 3 * s, 1.5 * s, [p[3] for p in procedural])
        out[at] = np.clip(0.55 * base + 2.5 * streaks, 0, 1)[..., None] * np.array([0.85, 0.93, 1.0])
    return out


def _glass_shuffle(y: np.ndarray, delta: int, passes: int, rng) -> np.ndarray:
    """Glass blur's local pixel shuffle of y (B, H, W, 3): at each position, bottom-right to top-left, swap the
    pixel with one up to delta px away; the swaps are composed on pixel indices (H*W, B), position by position
    for the whole batch at once, and applied once."""
    b, h, w = y.shape[:3]
    pos = np.array([hh * w + ww for hh in range(h - delta, delta, -1) for ww in range(w - delta, delta, -1)])
    shifts = np.stack([np.stack([rng.integers(-delta, delta, size=(len(pos), 2)) for _ in range(passes)])
                       for _ in range(b)])                                  # (B, passes, L, (dx, dy))
    perm, cols = np.repeat(np.arange(h * w)[:, None], b, 1), np.arange(b)   # (H*W, B)
    for p in range(passes):
        other = (pos[None] + shifts[:, p, :, 1] * w + shifts[:, p, :, 0]).T  # (L, B): the partner of each swap
        for a_, b_ in zip(pos.tolist(), other):
            t = perm[a_].copy()
            perm[a_] = perm[b_, cols]
            perm[b_, cols] = t
    return np.take_along_axis(y.reshape(b, h * w, 3), perm.T[..., None], 1).reshape(y.shape)


def _apply(name: str, x: np.ndarray, c, rng, s: float) -> np.ndarray:
    """The corruption `name` with parameters c on x float (B, H, W, 3) in [0, 1]; s = H / 32 (spatial scale)."""
    import cv2
    b, h, w = x.shape[:3]
    if name == "gaussian_noise":
        return x + rng.normal(size=x.shape, scale=c)
    if name == "shot_noise":
        return rng.poisson(x * c) / c
    if name == "impulse_noise":                       # per image: which values are hit, then which turn white
        r = rng.random((b, 2) + x.shape[1:])
        return np.where(r[:, 0] < c, (r[:, 1] < 0.5).astype(x.dtype), x)
    if name == "defocus_blur":
        k, x32 = _disk(c[0] * s, c[1]), x.astype(np.float32)
        return np.stack([cv2.filter2D(im, -1, k) for im in x32])
    if name == "glass_blur":
        sigma, delta, passes = c[0] * s, max(1, int(round(c[1] * s))), c[2]
        y = (np.clip(_blur(x, sigma), 0, 1) * 255).astype(np.uint8)
        return _blur(_glass_shuffle(y, delta, passes, rng) / 255.0, sigma)
    if name == "motion_blur":
        return _motion(x, c[0] * s, c[1] * s, rng.uniform(-45, 45, size=b))
    if name == "zoom_blur":
        zooms = np.arange(1, c, 0.01)
        return (x + sum(_zoom(x, z) for z in zooms)) / (len(zooms) + 1)
    if name == "snow":
        layer, angle = np.empty((b, h, w)), np.empty(b)
        for i in range(b):                            # per image: its flakes, then their streak angle
            layer[i] = rng.normal(size=(h, w), loc=c[0], scale=c[1])
            angle[i] = rng.uniform(-135, -45)
        layer = _zoom(layer, c[2])
        layer[layer < c[3]] = 0
        layer = _motion(np.clip(layer, 0, 1), c[4] * s, c[5] * s, angle)[..., None]
        gray = cv2.cvtColor(x.astype(np.float32).reshape(b * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(b, h, w, 1)
        x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
        return x + layer + np.rot90(layer, k=2, axes=(1, 2))
    if name == "frost":
        return c[0] * x + c[1] * _frost_layers(b, h, w, s, rng)
    if name == "fog":
        size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
        top = x.max((1, 2, 3), keepdims=True)
        return (x + c[0] * _plasma(size, c[1], rng.random((b, _plasma_draws(size))))[:, :h, :w, None]) \
            * top / (top + c[0])
    if name == "brightness":
        return _hsv_value_add(x, c)
    if name == "contrast":
        mean = x.mean((1, 2), keepdims=True)
        return (x - mean) * c + mean
    if name == "elastic_transform":
        return _elastic(x, c, rng)
    from PIL import Image
    out = np.empty(x.shape)
    for i, a in enumerate((np.clip(x, 0, 1) * 255).astype(np.uint8)):     # PIL's C code, one image at a time
        im = Image.fromarray(a)
        if name == "pixelate":
            im = im.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize((w, h), Image.BOX)
        else:                                                             # jpeg_compression
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=c)
            im = Image.open(io.BytesIO(buf.getvalue()))
        out[i] = np.asarray(im, np.float64) / 255
    return out


def _elastic(x, c, rng) -> np.ndarray:
    """Elastic transform of x (B, H, W, 3): a random affine warp (OpenCV, per image), then a smooth random
    displacement field read with linear interpolation (scipy, the whole batch at once)."""
    import cv2
    from scipy.ndimage import map_coordinates
    b, h, w = x.shape[:3]
    alpha, sigma, jitter = (v * h for v in c)
    cs, sq = np.float32([h, w]) // 2, min(h, w) // 3
    p1 = np.float32([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq])
    warped, d = np.empty(x.shape, np.float32), np.zeros((b, 2, h, w))
    x32 = x.astype(np.float32)
    for i in range(b):                                # per image: its affine jitter, then its two raw fields
        p2 = p1 + rng.uniform(-jitter, jitter, size=p1.shape).astype(np.float32)
        warped[i] = cv2.warpAffine(x32[i], cv2.getAffineTransform(p1, p2), (w, h), borderMode=cv2.BORDER_REFLECT_101)
        if sigma:
            d[i, 0], d[i, 1] = rng.uniform(-1, 1, (h, w)), rng.uniform(-1, 1, (h, w))
    if sigma:
        from scipy.ndimage import gaussian_filter
        d = gaussian_filter(d, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3) * alpha
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ib = np.broadcast_to(np.arange(b)[:, None, None], (b, h, w))
    coords = [ib, yy + d[:, 1], xx + d[:, 0]]                             # (B, H, W) each: image, row, column
    return np.stack([map_coordinates(warped[..., i], coords, order=1, mode="reflect") for i in range(3)], -1)


def corrupt_batch(images, name: str, severity: int, rng=None) -> np.ndarray:
    """Images (B, H, W, C) uint8, C = 1 or 3 -> corrupted (B, H, W, C) uint8, the same as corrupt() on each image
    in turn with the same generator. rng: numpy Generator (default seed 0)."""
    if name not in CORRUPTIONS:
        raise CNNLibError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CNNLibError(f"severity must be 1 to 5, not {severity!r}")
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[3] not in (1, 3) or a.dtype != np.uint8 or min(a.shape[1:3]) < 4:
        raise CNNLibError(f"corrupt needs uint8 images (H, W, 1 or 3) of at least 4 px, got {a.dtype} {a.shape[1:]}")
    rng = rng if rng is not None else np.random.default_rng(0)
    if len(a) == 0:
        return a.copy()
    x = np.repeat(a, 3, 3) if a.shape[3] == 1 else a
    out, step = np.empty(x.shape, np.uint8), max(1, CHUNK_PIXELS // (x.shape[1] * x.shape[2]))
    for i in range(0, len(x), step):                  # in order, so the generator's stream is the per-image one
        y = _apply(name, x[i:i + step].astype(np.float64) / 255, P[name][severity - 1], rng, a.shape[1] / 32)
        out[i:i + step] = np.clip(y, 0, 1) * 255      # truncation, as CIFAR-10-C's np.uint8
    if a.shape[3] == 1:
        import cv2
        b, h, w = out.shape[:3]
        out = cv2.cvtColor(out.reshape(b * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(b, h, w, 1)
    return out


def corrupt(image, name: str, severity: int, rng=None) -> np.ndarray:
    """One image (H, W, C) uint8, C = 1 or 3 -> corrupted (H, W, C) uint8. rng: numpy Generator (default seed 0)."""
    a = np.asarray(image)
    if a.ndim != 3:
        raise CNNLibError(f"corrupt needs one uint8 image (H, W, 1 or 3) of at least 4 px, got {a.dtype} {a.shape}")
    return corrupt_batch(a[None], name, severity, rng)[0]
