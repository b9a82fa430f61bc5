"""Robustness: accuracy under the 15 common corruptions of CIFAR-10-C / ImageNet-C at 5 severities.

    res = robustness(model, x_uint8, y, images=1000, seed=0)     # x (N, C, H, W) uint8, y (N,)
    res = robustness_for_checkpoint(model, images=1000)          # its test split, cached per checkpoint
    res["accuracy"]        {corruption: [acc at severity 1..5]};   res["clean_accuracy"]
    res["per_class"]       {corruption: [[acc of class k] per severity]} (None where a class has no image)
    res["first_flip"]      [{"index", "corruption", "severity"}]: clean-right images, lowest flipping severity first
    corrupt(x_hwc_uint8, "fog", 3, rng)                          # one image (H, W, C) uint8 -> the same shape

The corruptions and their 5 parameter sets are CIFAR-10-C's (Hendrycks & Dietterich, ICLR 2019; make_cifar_c.py of
github.com/hendrycks/robustness) in numpy / scipy / OpenCV / Pillow: imagecorruptions 1.1.2 breaks on NumPy 2 and
scikit-image >= 0.19, its fork imagecorruptions-imaug pulls opencv-python beside our headless OpenCV, and both
carry ImageNet-C's 224-px parameters, which blur a 32-px image away at severity 1. Deviations: other image sizes
have the spatial parameters (blur radii, shuffle distance, snow streaks) scaled by H / 32; motion blur (ImageMagick
in the original) is a one-sided Gaussian line kernel, as imagecorruptions re-implements it; frost blends a crop of
imagecorruptions' frost photographs when that package is installed, else a procedural ice layer (plasma fractal and
streaks): frost figures are approximate without it. Grayscale images are corrupted as RGB and converted back. Each
(corruption, severity) draws from its own seeded generator: results are reproducible.
CLI: python -m cnnlib robustness CKPT [--data PATH] [--images N] [--json]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os

import numpy as np

from cnnlib.errors import CNNLibError
from cnnlib.io.files import atomic_write

__all__ = ["CORRUPTIONS", "corrupt", "robustness", "robustness_for_checkpoint", "format_table", "robustness_main",
           "cache_key"]

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
CACHE_VERSION = 1

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


# ---------------- the corruptions: x float (H, W, 3) in [0, 1] -> float (H, W, 3), clipped by the caller

def _blur(x, sigma, mode="nearest", truncate=4.0):              # skimage.filters.gaussian, channels apart
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(x, sigma=(sigma, sigma, 0)[:x.ndim], mode=mode, truncate=truncate)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    import cv2
    r = max(8, int(np.ceil(radius)))
    g = np.arange(-r, r + 1)
    xx, yy = np.meshgrid(g, g)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)


def _motion(x, radius: float, sigma: float, angle: float) -> np.ndarray:
    """One-sided Gaussian motion blur along `angle` degrees (ImageMagick's MotionBlurImage)."""
    width = int(2 * radius + 1)
    w = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    dy, dx = np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
    h, wd = x.shape[:2]
    pad = width + 1
    xp = np.pad(x, ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    out = np.zeros_like(x)
    for i, wi in enumerate(w):
        oy, ox = int(np.round(i * dy)), int(np.round(i * dx))
        out += wi * xp[pad - oy:pad - oy + h, pad - ox:pad - ox + wd]
    return out


@functools.lru_cache(maxsize=512)
def _linear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation, end points aligned: scipy.ndimage.zoom(order=1)'s sampling."""
    pos, m = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1)), np.zeros((n_out, n_in))
    lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
    hi, frac = np.minimum(lo + 1, n_in - 1), pos - lo
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def _zoom(x, factor: float) -> np.ndarray:
    """Centre crop of 1/factor of the image zoomed back to its size: the definition's scipy.ndimage.zoom(order=1)."""
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out, crop = int(round(ch * factor)), x[top:top + ch, top:top + ch]
    if h > 64:                            # dense matrices cost O(h^3): torch's bilinear, corners aligned, is the same
        import torch
        t = torch.from_numpy(np.ascontiguousarray(crop.reshape(ch, ch, -1).transpose(2, 0, 1)))[None]
        z = torch.nn.functional.interpolate(t, size=(out, out), mode="bilinear", align_corners=True)[0]
        z = z.numpy().transpose(1, 2, 0).reshape((out, out) + crop.shape[2:])
    else:
        m = _linear(ch, out)
        z = np.tensordot(m, crop, axes=(1, 0))                                 # rows: (out, ch, ...)
        z = np.moveaxis(np.tensordot(m, z, axes=(1, 1)), 0, 1)                 # columns: (out, out, ...)
    t = (out - h) // 2
    return z[t:t + h, t:t + h]


def _plasma(size: int, decay: float, rng) -> np.ndarray:
    """Diamond-square fractal (size x size, a power of two) in [0, 1]."""
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[0::step, 0::step]
        sq = corners + np.roll(corners, -1, 0)
        sq = sq + np.roll(sq, -1, 1)
        m[half::step, half::step] = sq / 4 + wibble * rng.uniform(-wibble, wibble, sq.shape)
        dr, ul = m[half::step, half::step], m[0::step, 0::step]
        m[0::step, half::step] = (dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)) / 4 \
            + wibble * rng.uniform(-wibble, wibble, ul.shape)
        m[half::step, 0::step] = (dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)) / 4 \
            + wibble * rng.uniform(-wibble, wibble, ul.shape)
        step, wibble = half, wibble / decay
    m -= m.min()
    return m / max(m.max(), 1e-12)


def _hsv_value_add(x, c: float) -> np.ndarray:
    """Add c to HSV value (hue and saturation kept): RGB scales with V; black becomes grey V'."""
    v = x.max(2, keepdims=True)
    v2 = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * v2 / np.maximum(v, 1e-12), v2)


def _frost_layer(h: int, w: int, s: float, rng) -> np.ndarray:
    try:
        import importlib.resources
        from PIL import Image
        name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][int(rng.integers(5))]
        ref = importlib.resources.files("imagecorruptions") / "frost" / name
        with ref.open("rb") as f:
            im = Image.open(f).convert("RGB")
        im = im.resize((max(int(im.width * 0.2 * s), w + 1), max(int(im.height * 0.2 * s), h + 1)))
        a = np.asarray(im, np.float64) / 255
        y0, x0 = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        return a[y0:y0 + h, x0:x0 + w]
    except (ImportError, ModuleNotFoundError, OSError, TypeError, ValueError):
        size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
        base = _plasma(size, 2.0, rng)[:h, :w]
        streaks = _motion(rng.random((h, w)) ** 8, 3 * s, 1.5 * s, rng.uniform(0, 180))
        return np.clip(0.55 * base + 2.5 * streaks, 0, 1)[..., None] * np.array([0.85, 0.93, 1.0])


def _apply(name: str, x: np.ndarray, c, rng, s: float) -> np.ndarray:
    """The corruption `name` with parameters c on x float (H, W, 3) in [0, 1]; s = H / 32 (spatial scale)."""
    import cv2
    h, w = x.shape[:2]
    if name == "gaussian_noise":
        return x + rng.normal(size=x.shape, scale=c)
    if name == "shot_noise":
        return rng.poisson(x * c) / c
    if name == "impulse_noise":
        hit, salt = rng.random(x.shape) < c, rng.random(x.shape) < 0.5
        return np.where(hit, salt.astype(x.dtype), x)
    if name == "defocus_blur":
        k = _disk(c[0] * s, c[1])
        return np.stack([cv2.filter2D(x[..., i].astype(np.float32), -1, k) for i in range(3)], -1)
    if name == "glass_blur":
        sigma, delta, passes = c[0] * s, max(1, int(round(c[1] * s))), c[2]
        y = (np.clip(_blur(x, sigma), 0, 1) * 255).astype(np.uint8).reshape(h * w, 3)
        pos = [(hh, ww) for hh in range(h - delta, delta, -1) for ww in range(w - delta, delta, -1)]
        perm = list(range(h * w))        # the swaps, in order, done on pixel positions, then applied at once
        for _ in range(passes):          # locally shuffle pixels, bottom-right to top-left
            shifts = rng.integers(-delta, delta, size=(len(pos), 2)).tolist()    # (dx, dy), high exclusive
            for (hh, ww), (dx, dy) in zip(pos, shifts):
                a_, b_ = hh * w + ww, (hh + dy) * w + ww + dx
                perm[a_], perm[b_] = perm[b_], perm[a_]
        return _blur(y[perm].reshape(h, w, 3) / 255.0, sigma)
    if name == "motion_blur":
        return _motion(x, c[0] * s, c[1] * s, rng.uniform(-45, 45))
    if name == "zoom_blur":
        zooms = np.arange(1, c, 0.01)
        return (x + sum(_zoom(x, z) for z in zooms)) / (len(zooms) + 1)
    if name == "snow":
        layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
        layer = _zoom(layer, c[2])
        layer[layer < c[3]] = 0
        layer = _motion(np.clip(layer, 0, 1), c[4] * s, c[5] * s, rng.uniform(-135, -45))[..., None]
        gray = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]
        x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
        return x + layer + np.rot90(layer, k=2)
    if name == "frost":
        return c[0] * x + c[1] * _frost_layer(h, w, s, rng)
    if name == "fog":
        size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
        top = x.max()
        return (x + c[0] * _plasma(size, c[1], rng)[:h, :w, None]) * top / (top + c[0])
    if name == "brightness":
        return _hsv_value_add(x, c)
    if name == "contrast":
        mean = x.mean((0, 1), keepdims=True)
        return (x - mean) * c + mean
    if name == "elastic_transform":
        from scipy.ndimage import map_coordinates
        alpha, sigma, jitter = (v * h for v in c)
        cs, sq = np.float32([h, w]) // 2, min(h, w) // 3
        p1 = np.float32([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq])
        p2 = p1 + rng.uniform(-jitter, jitter, size=p1.shape).astype(np.float32)
        x = cv2.warpAffine(x.astype(np.float32), cv2.getAffineTransform(p1, p2), (w, h),
                           borderMode=cv2.BORDER_REFLECT_101)
        dx, dy = (_blur(rng.uniform(-1, 1, (h, w)), sigma, "reflect", 3) * alpha if sigma else np.zeros((h, w))
                  for _ in range(2))
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return np.stack([map_coordinates(x[..., i], [yy + dy, xx + dx], order=1, mode="reflect")
                         for i in range(3)], -1)
    from PIL import Image
    im = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    if name == "pixelate":
        im = im.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize((w, h), Image.BOX)
    else:                                                                 # jpeg_compression
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=c)
        im = Image.open(io.BytesIO(buf.getvalue()))
    return np.asarray(im, np.float64) / 255


def corrupt(image, name: str, severity: int, rng=None) -> np.ndarray:
    """One image (H, W, C) uint8, C = 1 or 3 -> corrupted (H, W, C) uint8. rng: numpy Generator (default seed 0)."""
    if name not in CORRUPTIONS:
        raise CNNLibError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CNNLibError(f"severity must be 1 to 5, not {severity!r}")
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (1, 3) or a.dtype != np.uint8 or min(a.shape[:2]) < 4:
        raise CNNLibError(f"corrupt needs one uint8 image (H, W, 1 or 3) of at least 4 px, got {a.dtype} {a.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.repeat(a, 3, 2) if a.shape[2] == 1 else a
    out = _apply(name, x.astype(np.float64) / 255, P[name][severity - 1], rng, a.shape[0] / 32)
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)                       # truncation, as CIFAR-10-C's np.uint8
    if a.shape[2] == 1:
        import cv2
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None]
    return out


# ----------------------------------------------------------------------------- accuracy under corruption

def cache_key(model, xs: np.ndarray, ys: np.ndarray, settings: dict) -> str:
    """The name of a result in the cache: the weights, the settings and the images' bytes and labels."""
    from cnnlib.diagnose.neighbors import model_key
    h = hashlib.sha1(json.dumps({"v": CACHE_VERSION, "model": model_key(model), **settings}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(xs).data)
    h.update(np.ascontiguousarray(ys, np.int64).data)
    return h.hexdigest()[:20]


def robustness(model, x, y, corruptions=CORRUPTIONS, severities=SEVERITIES, images: int | None = 1000,
               seed: int = 0, progress: bool | str = False, cache_dir: str | None = None) -> dict:
    """Accuracy of `model` on images x (N, C, H, W) uint8 with labels y (N,) under each corruption and severity
    (see the module docstring for the keys). images: a random sample of that many (None: all), drawn with `seed`;
    cache_dir: the result is kept there as JSON under the weights' hash and these settings, and reused."""
    corruptions, severities = list(corruptions), sorted({int(s) for s in severities})
    bad = [c for c in corruptions if c not in CORRUPTIONS] + [str(s) for s in severities if s not in SEVERITIES]
    if bad or not corruptions or not severities:
        raise CNNLibError(f"unknown corruption or severity {bad[0] if bad else '(none given)'}: corruptions are "
                          f"{', '.join(CORRUPTIONS)}, severities 1 to 5")
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(np.shape(x)) != 4 or len(x) != len(y) or len(y) == 0 or np.asarray(x[:1]).dtype != np.uint8:
        raise CNNLibError(f"robustness needs uint8 images (N, C, H, W) and N labels, got {tuple(np.shape(x))} "
                          f"and {y.shape}")
    if images is not None and images < 1:
        raise CNNLibError(f"the number of images must be at least 1 (--images 0: all of them), not {images}")
    n = len(y) if images is None else min(int(images), len(y))
    idx = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False)) if n < len(y) else np.arange(n)
    xs, ys = np.asarray(x[idx]), y[idx]
    settings = {"corruptions": corruptions, "severities": severities, "images": n, "seed": seed}
    path = os.path.join(cache_dir, f"robustness-{cache_key(model, xs, ys, settings)}.json") if cache_dir else None
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("settings") == settings:
                return {**cached, "cached": True}
        except (OSError, ValueError):
            pass                                                   # unreadable: computed again
    from tqdm.auto import tqdm
    k = len((getattr(model, "meta", None) or {}).get("classes") or []) or int(ys.max()) + 1
    predict = _predictor(model)
    clean = predict(xs) == ys
    flip_at = np.full((len(corruptions), n), 0, np.int64)          # lowest severity that turns right into wrong
    acc, per_class = {}, {}
    bar = tqdm(total=len(corruptions) * len(severities) * n, unit="img", dynamic_ncols=True, leave=False,
               desc=progress if isinstance(progress, str) else "corruptions", disable=not progress)
    try:
        for ci, name in enumerate(corruptions):
            acc[name], per_class[name] = [], []
            for s in severities:
                rng = np.random.default_rng([seed, ci, s])
                xc = np.empty_like(xs)
                for i in range(n):
                    xc[i] = corrupt(xs[i].transpose(1, 2, 0), name, s, rng).transpose(2, 0, 1)
                    bar.update(1)
                right = predict(xc) == ys
                acc[name].append(float(right.mean()))
                per_class[name].append(_per_class(right, ys, k))
                flip_at[ci][clean & ~right & (flip_at[ci] == 0)] = s
    finally:
        bar.close()
    first, which = np.where(flip_at > 0, flip_at, 99).min(0), np.where(flip_at > 0, flip_at, 99).argmin(0)
    order = np.lexsort((idx, first))
    flips = [{"index": int(idx[j]), "corruption": corruptions[which[j]], "severity": int(first[j])}
             for j in order if first[j] < 99]
    result = {"settings": settings, "n": n, "indices": idx.tolist(), "clean_accuracy": float(clean.mean()),
              "clean_per_class": _per_class(clean, ys, k), "accuracy": acc,
              "mean_accuracy": {c: float(np.mean(v)) for c, v in acc.items()}, "per_class": per_class,
              "first_flip": flips, "cached": False}
    try:
        if path:
            atomic_write(path, lambda f: f.write(json.dumps(result).encode()))
    except OSError:
        pass                                                       # read-only or full: not cached
    return result


def _predictor(model):
    """images (n, C, H, W) uint8 -> predicted classes (n,), through ONE inference copy (BatchNorm folded once,
    not once per corruption and severity) and cnnlib.modelops' batched path."""
    from cnnlib.modelops import forward_batches, inference_copy, model_device, norm_stats
    net, channels_last = inference_copy(model)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))

    def predict(x) -> np.ndarray:
        out = np.empty(len(x), np.int64)
        for i, z in forward_batches(net, x, mean, std, channels_last=channels_last):
            out[i:i + len(z)] = z.argmax(1).cpu().numpy()
        return out
    return predict


def _per_class(right: np.ndarray, ys: np.ndarray, k: int) -> list:   # accuracy per class, None: no image
    count = np.bincount(ys, minlength=k)
    hits = np.bincount(ys, weights=right.astype(np.float64), minlength=k)
    return [float(h / c) if c else None for h, c in zip(hits, count)]


def robustness_for_checkpoint(model, data: str | None = None, root: str | None = None, **kw) -> dict:
    """robustness on a checkpoint's test split (`data`: another dataset name or folder), cached in the data
    root's cnnlib-cache/ folder; adds "classes"."""
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec, load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    x, y = load_checkpoint_split(meta, "test", data, root)
    res = robustness(model, x, y, cache_dir=cache_dir(checkpoint_data_spec(meta, data or "", root).root), **kw)
    return {**res, "classes": list(meta.get("classes") or [])}


def format_table(res: dict, flips: int = 10) -> str:
    sev = res["settings"]["severities"]
    lines = [f"accuracy on {res['n']} test images: clean {res['clean_accuracy']:.1%}", "",
             f"{'corruption':<18}" + "".join(f"{'s' + str(s):>8}" for s in sev) + f"{'mean':>8}"]
    for c, row in res["accuracy"].items():
        lines.append(f"{c:<18}" + "".join(f"{a:8.1%}" for a in row) + f"{res['mean_accuracy'][c]:8.1%}")
    mean = float(np.mean(list(res["mean_accuracy"].values())))
    lines += [f"{'all corruptions':<18}" + " " * 8 * len(sev) + f"{mean:8.1%}", "",
              f"first to flip ({len(res['first_flip'])} of the images right when clean flip at some severity):"]
    lines += [f"  index {f['index']:>6}  {f['corruption']} severity {f['severity']}" for f in res["first_flip"][:flips]]
    return "\n".join(lines)


def robustness_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib robustness",
                                description="Accuracy under the 15 common corruptions (CIFAR-10-C's definitions) at "
                                            "severities 1-5, per class, and the images that flip first.")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, metavar="PATH", help="test images (default: the checkpoint's own)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--images", type=int, default=1000, metavar="N",
                   help="random sample of N test images (default 1000; 0: all of them)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), metavar="NAME", help="default: all 15")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    from cnnlib.inference import load_model
    model = load_model(args.checkpoint, "cpu")
    res = robustness_for_checkpoint(model, args.data, args.data_root, corruptions=args.corruptions,
                                    images=args.images or None, seed=args.seed, progress="corruptions")
    print(json.dumps(res) if args.json else format_table(res))
    return 0
