"""How far to trust a saliency map: deletion and insertion curves (Petsiuk et al., RISE, 2018).

    r = deletion_insertion(model, x01, heatmap, target)      # one image (C, H, W), one map (H, W)
    r["fractions"]      float32 (S+1,)  share of pixels removed / inserted: 0, 1/S, ..., 1
    r["deletion"]       float32 (S+1,)  target probability as the most important pixels are removed first
    r["insertion"]      float32 (S+1,)  target probability as they are put back into the baseline first
    r["deletion_auc"], r["insertion_auc"]   areas under the curves (trapezoids over fractions, in [0, 1])
    r["target"], r["baseline"]

A map that finds what the model uses makes the probability fall fast when those pixels go (small deletion
AUC) and rise fast when only they are there (large insertion AUC). "Removed" means replaced by the
baseline: "black" (zeros), "blur" (a strong Gaussian blur of the image, sigma = H / 8: removes detail, not
colour, so it makes fewer out-of-distribution images; RISE's choice for insertion), "mean" (the training
mean colour) or a number. Ties in the map (flat regions) are broken in a seeded random order, not raster
order. All 2 (S + 1) images go through the model in batches on the shared model (no hooks, no mode change).

    rows = faithfulness_table(model, images, ["gradcam", "layercam", "saliency"], steps=16)
    one row per method (plus "random", a uniform-noise map, for reference), averaged over the images:
    {"method", "label", "n", "deletion_auc", "insertion_auc" (means), "deletion_auc_sem", "insertion_auc_sem"
     (standard errors), "score" (insertion_auc - deletion_auc: higher is more faithful), "fractions",
     "deletion", "insertion" (mean curves (S+1,)), "seconds_map", "seconds_curves" (per image)}

The dashboard can plot the mean curves per method and show the table sorted by "score"; it should say that
these numbers rank methods for this model and these images, not in general (and that pixels removed
in any order make images the model never saw in training: the curves also measure that).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.modelops import as_image01, probabilities

BASELINES = ("black", "blur", "mean")


def baseline_image(x01: torch.Tensor, baseline, meta: dict | None = None) -> torch.Tensor:
    """What "removed" means for image (C, H, W) in [0, 1]: a (C, H, W) image (see the module docstring)."""
    if isinstance(baseline, str):
        if baseline == "black":
            return torch.zeros_like(x01)
        if baseline == "blur":
            from torchvision.transforms.functional import gaussian_blur
            h = x01.shape[-2]
            return gaussian_blur(x01[None], kernel_size=2 * (h // 4) + 1, sigma=max(h / 8, 0.5))[0]
        if baseline == "mean":
            if not meta or "normalization" not in meta:
                raise CNNLibError("the 'mean' baseline needs the model's normalization statistics")
            return torch.tensor(meta["normalization"]["mean"], dtype=x01.dtype).view(-1, 1, 1).expand_as(x01).clone()
        raise CNNLibError(f"unknown baseline {baseline!r}; use {', '.join(BASELINES)} or a number")
    return torch.full_like(x01, float(baseline))


def _sem(a: np.ndarray) -> float:
    """Standard error of the mean (0 for one value)."""
    return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def _auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    return float(((curve[1:] + curve[:-1]) / 2 * np.diff(fractions)).sum())


def deletion_insertion(model: nn.Module, x01, heatmap, target: int | None = None, steps: int = 16,
                       baseline="black", seed: int = 0) -> dict:
    """Deletion and insertion curves of one map (see the module docstring). x01 (C, H, W) in [0, 1]
    (uint8 accepted); heatmap (H, W), larger = more important; target: a class (None: the predicted one)."""
    x = as_image01(x01).cpu()                                                     # (C, H, W)
    h, w = x.shape[1:]
    heat = np.asarray(heatmap, np.float64)
    if heat.shape != (h, w) or not np.isfinite(heat).all():
        raise CNNLibError(f"the heatmap must be finite and (H, W) = {(h, w)}, got {heat.shape}")
    steps = int(steps)
    if not 1 <= steps <= h * w:
        raise CNNLibError(f"steps must be between 1 and the number of pixels ({h * w}), not {steps}")
    base = baseline_image(x, baseline, getattr(model, "meta", None))
    # pixel ranks: most important first; ties in a seeded random order
    tiebreak = np.random.default_rng(seed).permutation(h * w)
    order = np.lexsort((tiebreak, -heat.ravel()))                                 # (H*W,) pixel indices
    rank = np.empty(h * w, np.int64)
    rank[order] = np.arange(h * w)
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)          # pixels changed at each step
    gone = torch.from_numpy(rank[None, :] < counts[:, None]).view(steps + 1, 1, h, w)   # (S+1, 1, H, W)
    deleted = torch.where(gone, base, x)                                          # (S+1, C, H, W)
    inserted = torch.where(gone, x, base)
    probs = probabilities(model, torch.cat([deleted, inserted]))                  # (2(S+1), K)
    t = int(probs[0].argmax()) if target is None else int(target)
    if not 0 <= t < probs.shape[1]:
        raise CNNLibError(f"target class {target} is out of range (the model has {probs.shape[1]} classes)")
    fractions = (counts / (h * w)).astype(np.float32)
    dele, ins = probs[:steps + 1, t].astype(np.float32), probs[steps + 1:, t].astype(np.float32)
    return {"fractions": fractions, "deletion": dele, "insertion": ins,
            "deletion_auc": _auc(fractions, dele), "insertion_auc": _auc(fractions, ins),
            "target": t, "baseline": baseline if isinstance(baseline, str) else float(baseline)}


def faithfulness_table(model: nn.Module, images, methods, targets=None, steps: int = 16, baseline="black",
                       include_random: bool = True, seed: int = 0, **opts) -> list[dict]:
    """Mean deletion / insertion AUC per attribution method over images (N, C, H, W) (see the module
    docstring). targets: one class per image (None: each image's predicted class, the same for every
    method); opts go to attribution.attribute_many (e.g. n_steps, layer)."""
    from cnnlib.explain.attribution import METHOD_LABELS, METHODS, attribute_many
    xs = [as_image01(x) for x in images]
    if not xs:
        raise CNNLibError("faithfulness_table needs at least one image")
    for m in methods:
        if m not in METHODS:
            raise CNNLibError(f"unknown attribution method {m!r}; choose from {', '.join(METHODS)}")
    if targets is None:
        targets = probabilities(model, torch.stack(xs)).argmax(1).tolist()
    targets = [int(t) for t in targets]
    if len(targets) != len(xs):
        raise CNNLibError(f"{len(xs)} images but {len(targets)} targets")
    rng = np.random.default_rng(seed)
    rows = []
    for method in list(methods) + (["random"] if include_random else []):
        t0 = time.perf_counter()
        if method == "random":            # the reference a useful map must beat
            heats = [rng.random(x.shape[1:]) for x in xs]
        else:
            heats = [r["heatmap"] for r in attribute_many(model, xs, method, targets, **opts)]
        t1 = time.perf_counter()
        curves = [deletion_insertion(model, x, hm, t, steps, baseline, seed) for x, hm, t in zip(xs, heats, targets)]
        t2 = time.perf_counter()
        d = np.array([c["deletion_auc"] for c in curves])
        i = np.array([c["insertion_auc"] for c in curves])
        rows.append({"method": method, "label": METHOD_LABELS.get(method, "Random map"), "n": len(xs),
                     "deletion_auc": float(d.mean()), "insertion_auc": float(i.mean()),
                     "deletion_auc_sem": _sem(d), "insertion_auc_sem": _sem(i),
                     "score": float(i.mean() - d.mean()), "fractions": curves[0]["fractions"],
                     "deletion": np.mean([c["deletion"] for c in curves], 0).astype(np.float32),
                     "insertion": np.mean([c["insertion"] for c in curves], 0).astype(np.float32),
                     "seconds_map": (t1 - t0) / len(xs), "seconds_curves": (t2 - t1) / len(xs)})
    return rows
