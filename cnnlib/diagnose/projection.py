"""2-D maps of feature space that separate classes: PCA, t-SNE and UMAP, cached on disk.

    xy = project(features, "tsne", seed=0)           # features (N, D) -> float32 (N, 2)
    e = embedding_for_checkpoint(model, "umap", n=5000)
    e["xy"]       float32 (n, 2)    e["indices"]  int64 (n,) rows of the split (sorted)
    e["labels"]   int64 (n,)        e["preds"]    int64 (n,)     e["correct"]  bool (n,)
    e["method"], e["n"], e["seconds"] (time to compute; 0.0 on a cache hit), e["cached"] (bool)

PCA is `interpret.pca_2d` (linear, instant: distances mean something). t-SNE (sklearn.manifold.TSNE) keeps
neighbourhoods, not distances or cluster sizes; as scikit-learn recommends, features with more than 50
dimensions are first reduced to 50 by PCA; `max_iter` defaults to 500 (scikit-learn: 1000) to keep 10,000
points near half a minute on 2 cores. UMAP (umap-learn, imported only when asked: it takes seconds to
import) keeps more of the global layout; with a seed it runs single-threaded, so it is repeatable.
Timings for 10,000 points are in bench/bench_diagnose.py.

`embedding(features, method, cache_dir, key)` caches any projection; `embedding_for_checkpoint` keys it by
(model weights, data spec, split, method, n, seed, options) in `<data root>/cnnlib-cache/` in the format of
cnnlib.diagnose.neighbors (arrays + a verified JSON header, atomic writes), so the dashboard computes each map once
and a later session, or another browser, reads it in milliseconds. On a hit it does not touch the model.
"""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import pca_2d, penultimate_features
from cnnlib.diagnose.features import _safe, model_key, read_entry, write_entry

METHODS = ("pca", "tsne", "umap")
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# option defaults, per method (the dashboard shows these); scikit-learn / umap-learn's meaning
SMALL = 5000       # fewer points than this: t-SNE / UMAP run on one thread (see project)
METHOD_OPTIONS: dict[str, dict] = {
    "pca": {},
    "tsne": {"perplexity": 30.0, "max_iter": 500, "pca_dims": 50},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "pca_dims": 0},
}


def _options(method: str, opts: dict) -> dict:
    if method not in METHODS:
        raise CNNLibError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    unknown = set(opts) - set(METHOD_OPTIONS[method])
    if unknown:
        raise CNNLibError(f"unknown {method} option {', '.join(sorted(unknown))}; its options: "
                          f"{', '.join(METHOD_OPTIONS[method]) or 'none'}")
    return {**METHOD_OPTIONS[method], **{k: v for k, v in opts.items() if v is not None}}


def _reduce(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """PCA to `dims` components first when the features have more (0: never)."""
    if not dims or x.shape[1] <= dims or len(x) <= dims:
        return x
    from sklearn.decomposition import PCA
    return PCA(n_components=int(dims), random_state=seed).fit_transform(x).astype(np.float32)


def project(features, method: str = "pca", seed: int | None = 0, threads: int | None = None, **opts) -> np.ndarray:
    """features (N, D) -> xy float32 (N, 2) by PCA, t-SNE or UMAP (options: METHOD_OPTIONS).

    seed: the random state (t-SNE, UMAP); None lets UMAP use every core, but then runs differ.
    threads: OpenMP / BLAS threads for t-SNE and UMAP (threadpoolctl; None: 1 below SMALL points, where
    threads only cost, else the libraries' default). OpenMP threads spin while they wait: on a busy
    machine 2 threads ran a 2,000-point t-SNE 5x slower than 1 thread (29 s against 6 s)."""
    opts = _options(method, opts)
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or len(x) < 3 or not np.isfinite(x).all():
        raise CNNLibError(f"a projection needs at least 3 finite feature vectors (N, D), got shape {x.shape}")
    if method == "pca":
        return pca_2d(torch.from_numpy(x))[0]
    from threadpoolctl import threadpool_limits
    threads = threads if threads is not None else (1 if len(x) < SMALL else None)
    with threadpool_limits(limits=threads):      # limits=None: leave the pools as they are
        if method == "tsne":
            from sklearn.manifold import TSNE
            x = _reduce(x, opts["pca_dims"], seed or 0)
            # perplexity must stay below N; learning_rate="auto" is max(N / early_exaggeration / 4, 50)
            tsne = TSNE(n_components=2, perplexity=float(min(opts["perplexity"], (len(x) - 1) / 3)), init="pca",
                        learning_rate="auto", max_iter=int(opts["max_iter"]), random_state=seed)
            return tsne.fit_transform(x).astype(np.float32)
        # umap-learn is slow to import: only when asked
        import umap
        x = _reduce(x, opts["pca_dims"], seed or 0)
        reducer = umap.UMAP(n_components=2, n_neighbors=int(min(opts["n_neighbors"], len(x) - 1)),
                            min_dist=float(opts["min_dist"]), random_state=seed,
                            n_jobs=1 if seed is not None else (threads or -1))
        return np.asarray(reducer.fit_transform(x), np.float32)


def embedding(features, method: str = "pca", cache_dir: str | None = None, key: str = "", seed: int | None = 0,
              **opts) -> dict:
    """project() through the disk cache: {"xy" (N, 2), "seconds", "cached"}. `key` must name the features
    (e.g. model_key + data key + split + n); the method, seed and options are added here."""
    opts = _options(method, opts)
    x = np.asarray(features, np.float32)
    expect, name = _entry(key, method, len(x), seed, opts)
    if cache_dir:
        hit = read_entry(cache_dir, name, expect)
        if hit is not None:
            return {"xy": np.asarray(hit[0]["xy"]), "seconds": 0.0, "cached": True}
    t = time.perf_counter()
    xy = project(x, method, seed, **opts)
    seconds = time.perf_counter() - t
    if cache_dir:
        try:
            write_entry(cache_dir, name, {"xy": xy}, {**expect, "seconds": seconds})
        except OSError:
            pass
    return {"xy": xy, "seconds": seconds, "cached": False}


def _entry(key: str, method: str, n: int, seed, opts: dict) -> tuple[dict, str]:
    """(header fields a hit must match, file name) of one projection."""
    expect = {"kind": "projection", "key": str(key), "method": method, "n": int(n), "seed": seed,
              "options": json.loads(json.dumps(opts, sort_keys=True))}
    tag = hashlib.sha1(json.dumps(expect, sort_keys=True).encode()).hexdigest()[:12]
    return expect, f"projection-{_safe(key)}-{method}-{n}-{tag}"


def subsample(n_total: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted row indices int64: all of range(n_total) when n is None or >= n_total, else n drawn at random."""
    if n is None or n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if n < 3:
        raise CNNLibError(f"a projection needs at least 3 points, not {n}")
    return np.sort(np.random.default_rng(seed).choice(n_total, int(n), replace=False)).astype(np.int64)


def embedding_for_checkpoint(model: nn.Module, method: str = "pca", n: int | None = None, split: str = "test",
                             data: str | None = None, root: str | None = None, seed: int = 0, x=None, y=None,
                             progress: str | None = None, **opts) -> dict:
    """A checkpoint's split (test by default; or images x, labels y given here) projected to 2-D, cached
    under the data root (see the module docstring for the keys). n: a random subset of that many images."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.features import checkpoint_feature_key, split_features
    opts = _options(method, opts)
    meta = getattr(model, "meta", None) or {}
    if x is None or y is None:
        x, y = load_checkpoint_split(meta, split, data, root)
        folder, data_key = checkpoint_feature_key(meta, split, data, root)
    else:                        # the caller's images: not cached (their content has no key here)
        folder, data_key = None, ""
    y = np.asarray(y).astype(np.int64)
    idx = subsample(len(y), n, seed)
    key = f"{model_key(model)}-{data_key}"
    expect, name = _entry(key, method, len(idx), seed, opts)
    hit = read_entry(folder, name, expect) if folder else None
    if hit is not None and np.array_equal(hit[0]["indices"], idx):
        xy, preds, seconds, cached = np.asarray(hit[0]["xy"]), np.asarray(hit[0]["preds"]), 0.0, True
    else:
        if folder:               # the split's features from the one store (all rows, once), then the sample's
            store = split_features(model, x, y, folder, data_key, progress=progress)
            feats, preds = np.asarray(store["features"][idx]), np.asarray(store["preds"][idx])
        else:
            out = penultimate_features(model, x[idx] if len(idx) < len(y) else x, progress=progress)
            feats, preds = out["features"], out["preds"]
        t = time.perf_counter()
        xy = project(feats, method, seed, **opts)
        seconds, cached = time.perf_counter() - t, False
        if folder:
            try:
                write_entry(folder, name, {"xy": xy, "indices": idx, "preds": preds}, {**expect, "seconds": seconds})
            except OSError:
                pass
    labels = y[idx]
    return {"xy": xy, "indices": idx, "labels": labels, "preds": preds, "correct": preds == labels,
            "method": method, "n": len(idx), "seconds": seconds, "cached": cached}
