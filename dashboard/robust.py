"""The Robustness page's computations: cnnlib.diagnose.robustness on a sample of the test images, one corruption
at a time (so a progress bar moves after each, and each corruption's result is cached on disk by cnnlib under
the weights' hash, the sample and the settings: a second look loads at once), merged into one result with the
keys robustness() returns; and one corrupted image for the "flips first" strip."""
from __future__ import annotations

import os

import numpy as np
import streamlit as st

import testdata
from checkpoints import Ctx

DEFAULT_IMAGES = 200
_RESULTS: dict = {}         # (checkpoint, data, images, corruptions) -> the merged result, shared by sessions


def corruptions() -> tuple[str, ...]:
    from cnnlib.diagnose import robustness
    return tuple(robustness.CORRUPTIONS)


def _cache_dir(ctx: Ctx) -> str:
    from cnnlib.data import cache as datacache
    from cnnlib.data import spec as data_spec
    return datacache.cache_dir(data_spec.checkpoint_data_spec(ctx.meta, ctx.data or "").root)


def _cached_path(ctx: Ctx, pixels, name: str, images: int, seed: int = 0) -> str:
    """Where cnnlib's robustness() keeps one corruption's result for this sample (its own cache key)."""
    from cnnlib.diagnose import robustness
    x, y = pixels
    y = np.asarray(y).astype(np.int64)
    n = min(int(images), len(y))
    idx = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False)) if n < len(y) else np.arange(n)
    settings = {"corruptions": [name], "severities": list(robustness.SEVERITIES), "images": n, "seed": seed}
    key = robustness.cache_key(ctx.model, np.asarray(x[idx]), y[idx], settings)
    return os.path.join(_cache_dir(ctx), f"robustness-{key}.json")


def _token(ctx: Ctx, names, images: int) -> tuple:
    return ctx.key, testdata.pixels_key(ctx), int(images), tuple(sorted(names))


def cached(ctx: Ctx, pixels, names, images: int) -> bool:
    """Is every chosen corruption's result already on disk for this sample (so loading it is instant)?"""
    return _token(ctx, names, images) in _RESULTS or \
        all(os.path.isfile(_cached_path(ctx, pixels, c, images)) for c in names)


def run(ctx: Ctx, pixels, names, images: int, bar=None) -> dict:
    """robustness() over the chosen corruptions on a sample of `images` test images, one corruption per call
    (bar: a st.progress moved after each), merged: settings, n, indices, clean_accuracy, clean_per_class,
    accuracy, mean_accuracy, per_class, first_flip (lowest flipping severity first, then test order; the first
    corruption in CORRUPTIONS order that flips it), cached (all of them loaded from disk)."""
    from cnnlib.diagnose import robustness
    token = _token(ctx, names, images)
    if token in _RESULTS:                             # merged already (this process): no weights hashed again
        return _RESULTS[token]
    x, y = pixels
    names = [c for c in corruptions() if c in set(names)]
    parts = []
    for i, name in enumerate(names):
        if bar is not None:
            bar.progress(i / len(names), text=f"{name.replace('_', ' ')} at 5 severities on {min(images, len(y))} "
                                              f"test images ({i + 1} of {len(names)})…")
        parts.append(robustness.robustness(ctx.model, x, y, corruptions=[name], images=int(images), seed=0,
                                           cache_dir=_cache_dir(ctx)))
    if bar is not None:
        bar.empty()
    first = parts[0]
    out = {k: first[k] for k in ("n", "indices", "clean_accuracy", "clean_per_class")}
    out["settings"] = {**first["settings"], "corruptions": names}
    for k in ("accuracy", "mean_accuracy", "per_class"):
        out[k] = {c: p[k][c] for c, p in zip(names, parts)}
    flips: dict[int, dict] = {}
    for p in parts:                                   # names in CORRUPTIONS order: the first lowest severity wins
        for f in p["first_flip"]:
            if f["index"] not in flips or f["severity"] < flips[f["index"]]["severity"]:
                flips[f["index"]] = f
    out["first_flip"] = sorted(flips.values(), key=lambda f: (f["severity"], f["index"]))
    out["cached"] = all(p.get("cached") for p in parts)
    out["classes"] = list(ctx.meta.get("classes") or [])
    while len(_RESULTS) >= 16:
        _RESULTS.pop(next(iter(_RESULTS)))
    _RESULTS[token] = out
    return out


@st.cache_data(show_spinner=False, max_entries=256)
def corrupted(data_key: str, index: int, name: str, severity: int, _x) -> np.ndarray:
    """Test image `index` (C, H, W) uint8 under one corruption and severity (a fixed generator per image)."""
    from cnnlib.diagnose import robustness
    img = np.asarray(_x[index]).transpose(1, 2, 0)
    out = robustness.corrupt(img, name, int(severity), np.random.default_rng([0, int(index), int(severity)]))
    return np.asarray(out).reshape(img.shape).transpose(2, 0, 1)


def flip_pairs(ctx: Ctx, pixels, flips: list[dict], n: int = 8, size: int = 96) -> tuple[list, list[str]]:
    """The first n flipping images, each clean beside its corrupted self at the severity where it turns wrong
    (one picture per image, so a pair never breaks across rows), and their captions."""
    import pictures
    x, y = pixels
    ims, caps = [], []
    for f in flips[:n]:
        i = int(f["index"])
        bad = corrupted(testdata.pixels_key(ctx), i, f["corruption"], f["severity"], x)
        ims.append(pictures.side_by_side([pictures.enlarge(x[i], size), pictures.enlarge(bad, size)]))
        caps.append(f"#{i} {ctx.classes[int(y[i])]} · {f['corruption'].replace('_', ' ')} {f['severity']}")
    return ims, caps
