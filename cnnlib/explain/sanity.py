"""Are these saliency maps about the model? The model-randomisation test of Adebayo et al., "Sanity Checks
for Saliency Maps" (NeurIPS 2018): re-initialise the layers one after another, from the classifier down to
the first conv, and watch whether the explanation changes. A method whose map barely moves when the
weights it claims to explain are random is showing the image (edges), not the model.

    steps = sanity_check(model, x01, "saliency")
    steps[0]   {"step": "trained", "randomized": [], "heatmap": (H, W), "spearman": 1.0, "ssim": 1.0, ...}
    steps[i]   {"step": "fc2", "randomized": ["fc2"], ...}, then "fc1", "conv2" (with "bn2"), ... "conv1"

Each step's dict: step ("trained" or the conv / Linear layer randomised at this step), randomized (every
layer reset so far, top first: a BatchNorm is reset with the conv it follows), heatmap float32 (H, W) in
[0, 1] (cnnlib.explain.attribution.attribute's, for the same target class throughout), spearman (rank correlation of
the heatmap with the trained model's over all pixels; NaN when either map is constant), ssim (structural
similarity of the two heatmaps, 7x7 windows), target, method. The randomisation runs on a deep copy of the
model (each layer's own reset_parameters(), or `randomize`'s redraw for layers without one, under torch's
RNG seeded with `seed` and restored afterwards),
so the given model is never touched; attributions go through attribution.attribute.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cnnlib.teach.arithmetic import own_image
from cnnlib.explain.attribution import METHODS, attribute
from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import list_layers

_WEIGHTED = (nn.Conv2d, nn.Linear)


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties sharing their average rank (scipy.stats.rankdata's 'average')."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_a)) + 1]             # first index of every run of equals
    ends = np.r_[starts[1:], len(a)]
    avg = (starts + ends + 1) / 2.0                                       # average 1-based rank of each run
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of equal size (NaN when either is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """Mean structural similarity of two (H, W) maps with uniform win x win windows (Wang et al. 2004 constants)."""
    a, b = torch.as_tensor(a, dtype=torch.float64)[None, None], torch.as_tensor(b, dtype=torch.float64)[None, None]
    win = max(1, min(win, a.shape[-1], a.shape[-2]))
    box = lambda t: torch.nn.functional.avg_pool2d(t, win, stride=1)  # noqa: E731  (valid windows only)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ma, mb = box(a), box(b)
    va, vb, cov = box(a * a) - ma * ma, box(b * b) - mb * mb, box(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def randomization_order(model: nn.Module) -> list[list[str]]:
    """The cascade: groups of layer names, top (classifier) first. Each group is a Conv2d or Linear with
    the parameterised non-weight layers (BatchNorm, ...) that run after it and before the next one."""
    rows = [r for r in list_layers(model) if r["params"] and not r["type"].endswith("(not run)")]
    groups: list[list[str]] = []
    for r in rows:                                   # execution order
        m = model.get_submodule(r["name"])
        if isinstance(m, _WEIGHTED) or not groups:
            groups.append([r["name"]])
        else:
            groups[-1].append(r["name"])
    return groups[::-1]


def randomize(m: nn.Module) -> None:
    """Re-initialise one layer in place: its own reset_parameters() when it has one (torch's default init);
    otherwise (a block holding parameters of its own, such as timm's ConvNeXt block with its layer scale)
    each of its own parameters is redrawn from a normal with that tensor's mean and spread (its std, or
    its mean magnitude when it is constant), so the trained values are gone but the scale is kept."""
    with torch.no_grad():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
            return
        for p in m.parameters(recurse=False):
            spread = float(p.float().std()) if p.numel() > 1 else 0.0
            spread = spread or float(p.float().abs().mean())
            if spread > 0:
                p.copy_(torch.randn_like(p) * spread + p.mean())


def sanity_check(model: nn.Module, x01, method: str, target: int | None = None, seed: int = 0,
                 with_ssim: bool = True, **opts) -> list[dict]:
    """Cascading model-randomisation test for one image x01 (C, H, W) in [0, 1] and one attribution method.

    target: the class explained at every step (default: the trained model's prediction); opts: passed to
    attribution.attribute (n_steps, layer, ...). See the module docstring for the returned list."""
    if method not in METHODS:
        raise CNNLibError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    image = own_image(x01)
    trained = attribute(model, image, method, target, **opts)
    target = trained["target"]
    ref = trained["heatmap"]
    rows = [{"step": "trained", "randomized": [], "heatmap": ref, "spearman": 1.0,
             "ssim": 1.0 if with_ssim else None, "target": target, "method": method}]
    rnd = copy.deepcopy(model).eval()                    # private weights: the given model stays as it is
    done: list[str] = []
    with torch.random.fork_rng(devices=[]):              # reset_parameters draws from torch's global RNG
        torch.manual_seed(int(seed))
        for group in randomization_order(rnd):
            for name in group:
                randomize(rnd.get_submodule(name))
            done += group
            heat = attribute(rnd, image, method, target, **opts)["heatmap"]
            rows.append({"step": group[0], "randomized": list(done), "heatmap": heat,
                         "spearman": spearman(ref, heat), "ssim": ssim(ref, heat) if with_ssim else None,
                         "target": target, "method": method})
    return rows
