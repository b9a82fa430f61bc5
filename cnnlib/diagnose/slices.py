"""Failure slices: groups of test images, close together in the network's feature space, on which the model
errs far more often than on the test set as a whole (the idea of Domino, Eyuboglu et al., ICLR 2022, and
sliceguard: cluster an embedding together with the labels and the errors, then rank the clusters).

    found = find_slices(features (N, D), targets (N,), preds (N,))           # on any signals
    found = slices_for_checkpoint(model, data=None)                          # a checkpoint's test split

Each slice: {"rank", "indices" (test images in it, most typical first), "size", "errors", "error_rate",
"excess" (error_rate minus the model's), "score" = size x excess (the ranking: many images, far worse),
"classes" [[class index, count], ...] (its class mix, largest first), "predicted" (the same for predictions),
"typical" (up to 9 indices nearest its centre), "p_value" (binomial: this many mistakes or more among `size`
images at the model's error rate)}. `verdicts` (cnnlib.diagnose.triage records) add "verdicts",
the verdict mix of its mistakes.

How: within each class, the penultimate features (L2-normalised, reduced by PCA to SliceConfig.pca_dim) are
cut by k-means (scikit-learn) into about sqrt(n / cluster_scale) groups of images that look alike to the
network; the groups of one class that are worse than the model and whose mistakes go mostly to the same class
are joined (a mode the network sees as another class, split by k-means, is one slice). The grouping never sees
which images are wrong (grouping on the errors themselves makes "slices" out of scattered mistakes: Domino
weighs predictions in), so each slice's error rate can be tested against the model's: it is reported when it
has min_size images or more and its binomial p-value is below alpha divided by the number of groups tried.
CLI: python -m cnnlib slices CKPT [--data PATH] [--top N] [--json].
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np

from cnnlib.errors import CNNLibError

__all__ = ["SliceConfig", "find_slices", "slices_for_checkpoint", "format_slices", "slices_main"]


@dataclass(frozen=True)
class SliceConfig:
    """Every setting of the slice search, with its unit."""
    cluster_scale: float = 8.0       # images: a class of n test images is cut into about sqrt(n / this) groups
    max_groups: int = 16             # count: at most this many groups per class
    pca_dim: int = 16                # dimensions the features are reduced to before clustering
    min_size: int = 8                # images: smaller slices are not reported
    alpha: float = 0.01              # probability: family-wise level of the binomial test (Bonferroni over groups)
    typical: int = 9                 # images listed as the most typical of a slice
    seed: int = 0                    # k-means initialisation


def _groups(z: np.ndarray, cfg: SliceConfig) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, distance of each row to its group's centre) from k-means on z (n, d)."""
    from sklearn.cluster import KMeans
    k = int(min(max(round(np.sqrt(len(z) / cfg.cluster_scale)), 2), cfg.max_groups, len(z)))
    km = KMeans(n_clusters=k, n_init=4, random_state=cfg.seed).fit(z)
    return km.labels_, np.linalg.norm(z - km.cluster_centers_[km.labels_], axis=1)


def _reduce(f: np.ndarray, cfg: SliceConfig) -> np.ndarray:
    from sklearn.decomposition import PCA
    dim = int(min(cfg.pca_dim, f.shape[1], len(f) - 1))
    return PCA(n_components=dim, random_state=cfg.seed).fit_transform(f) if dim >= 1 else f


def find_slices(features, targets, preds, config: SliceConfig | None = None, verdicts: list[dict] | None = None,
                top: int | None = None) -> list[dict]:
    """The failure slices of a test set, worst first (see the module docstring)."""
    from scipy.stats import binom
    from threadpoolctl import threadpool_limits

    cfg = config or SliceConfig()
    f = np.asarray(features, np.float64)
    y, p = np.asarray(targets).astype(np.int64), np.asarray(preds).astype(np.int64)
    if f.ndim != 2 or len(f) != len(y) or len(y) != len(p):
        raise CNNLibError(f"slices need features (N, D) and N labels and predictions, got features "
                          f"{tuple(f.shape)}, {len(y)} labels and {len(p)} predictions")
    if len(y) < 2 * cfg.min_size:
        raise CNNLibError(f"slices need at least {2 * cfg.min_size} test images, not {len(y)}")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    wrong = y != p
    base = float(wrong.mean())
    k_classes = int(max(y.max(), p.max())) + 1
    candidates, tried = [], 0
    # one small PCA and k-means per class: BLAS threads only add overhead there (300 ms instead of 6 ms a class on
    # two busy cores, minutes at 1,000 classes), so the loop runs single-threaded
    with threadpool_limits(limits=1):
        for c in np.unique(y):
            ii = np.flatnonzero(y == c)
            if len(ii) < cfg.min_size:
                continue
            group, dist = _groups(_reduce(f[ii], cfg), cfg)
            tried += int(group.max()) + 1
            joined: dict[int, list] = {}              # most common wrong prediction -> [rows of ii, distances]
            for g in np.unique(group):
                rows = np.flatnonzero(group == g)
                if wrong[ii[rows]].mean() <= base:
                    continue
                target = int(np.bincount(p[ii[rows]][wrong[ii[rows]]], minlength=k_classes).argmax())
                joined.setdefault(target, []).append((rows, dist[rows]))
            for parts in joined.values():
                rows = np.concatenate([r for r, _ in parts])
                candidates.append((ii[rows], np.concatenate([d for _, d in parts])))
    by_verdict = {int(r["index"]): r["verdict"] for r in (verdicts or [])}
    out = []
    for idx, dist in candidates:
        errors, rate = int(wrong[idx].sum()), float(wrong[idx].mean())
        p_value = float(binom.sf(errors - 1, len(idx), base)) if base > 0 else 1.0
        if len(idx) < cfg.min_size or p_value > cfg.alpha / max(tried, 1):
            continue
        order = idx[np.argsort(dist, kind="stable")]
        mix, pmix = np.bincount(y[idx], minlength=k_classes), np.bincount(p[idx], minlength=k_classes)
        s = {"indices": order.tolist(), "size": int(len(idx)), "errors": errors, "error_rate": rate,
             "excess": rate - base, "score": len(idx) * (rate - base), "p_value": p_value,
             "classes": [[int(i), int(mix[i])] for i in np.argsort(-mix, kind="stable") if mix[i]][:5],
             "predicted": [[int(i), int(pmix[i])] for i in np.argsort(-pmix, kind="stable") if pmix[i]][:5],
             "typical": order[:cfg.typical].tolist()}
        if by_verdict:
            names = [by_verdict[i] for i in order.tolist() if i in by_verdict]
            s["verdicts"] = {v: names.count(v) for v in sorted(set(names), key=names.index)}
        out.append(s)
    out.sort(key=lambda s: -s["score"])
    for rank, s in enumerate(out, 1):
        s["rank"] = rank
    return out[:top] if top else out


def slices_for_checkpoint(model, data: str | None = None, root: str | None = None,
                          config: SliceConfig | None = None, top: int | None = None, progress: bool = False) -> dict:
    """find_slices on a checkpoint's test split: {"slices", "classes", "paths" (a folder's test files, else None),
    "n", "error_rate", "config"}. Features come from the cached test index (cnnlib.diagnose.neighbors);
    predictions are the stored ones, or computed (and cached) for other test images."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import stored_predictions
    from cnnlib.diagnose.neighbors import index_for_checkpoint
    from cnnlib.diagnose.triage import cached_test_predictions, folder_test_files
    meta = getattr(model, "meta", None) or {}
    index = index_for_checkpoint(model, "test", data, root, progress="test features" if progress else None)
    preds = stored_predictions(meta) if data is None else None
    if preds is None or not np.array_equal(preds["targets"], np.asarray(index.labels)):
        x, y = load_checkpoint_split(meta, "test", data, root)
        preds = cached_test_predictions(model, x, y, root, data, "test predictions" if progress else None)
    found = find_slices(index.features, preds["targets"], preds["preds"], config, top=top)
    paths = folder_test_files(meta, data, root)
    return {"slices": found, "classes": list(meta.get("classes") or []), "n": int(len(preds["targets"])),
            "error_rate": float(np.mean(np.asarray(preds["targets"]) != np.asarray(preds["preds"]))),
            "paths": paths if paths is not None and len(paths) == len(preds["targets"]) else None,
            "config": asdict(config or SliceConfig())}


def _mix(pairs, classes) -> str:
    return ", ".join(f"{classes[i] if i < len(classes) else i} {n}" for i, n in pairs)


def format_slices(result: dict) -> str:
    """A plain-text table of the slices, worst first."""
    classes = result["classes"]
    lines = [f"{len(result['slices'])} failure slices among {result['n']:,} test images "
             f"(the model's error rate: {result['error_rate']:.1%}); ranked by size x excess error"]
    for s in result["slices"]:
        lines.append(f"{s['rank']:>3}. {s['size']:>5} images, {s['error_rate']:.0%} wrong (+{s['excess']:.0%}): "
                     f"classes {_mix(s['classes'][:3], classes)}; predicted {_mix(s['predicted'][:3], classes)}")
    return "\n".join(lines)


def slices_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib slices",
                                description="Failure slices: groups of similar test images on which the model "
                                            "errs far more often than overall, worst first.")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, metavar="PATH", help="test images instead of the checkpoint's own")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--top", type=int, default=10, help="how many slices to list")
    p.add_argument("--json", action="store_true", help="a JSON object with every slice's images (and files)")
    args = p.parse_args(argv)
    try:
        if args.top < 1:
            raise CNNLibError(f"--top must be at least 1, not {args.top}")
        from cnnlib.inference import load_model
        model = load_model(args.checkpoint, "cpu")
        result = slices_for_checkpoint(model, args.data, args.data_root, top=args.top, progress=sys.stderr.isatty())
    except CNNLibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        if result["paths"]:
            for s in result["slices"]:
                s["files"] = [result["paths"][i] for i in s["indices"]]
        print(json.dumps(result))
    else:
        print(format_slices(result))
    return 0
