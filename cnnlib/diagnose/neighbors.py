"""The training images behind a prediction: nearest neighbours in the penultimate feature space.

    index = index_for_checkpoint(model)                  # built once, then memory-mapped from the disk cache
    hits = neighbors_of(model, index, x01, k=9)          # one image (C, H, W) in [0, 1] or uint8
    hits["indices"]       int64 (k,)    rows of the index's split (load_checkpoint_split(meta, "train"))
    hits["similarities"]  float32 (k,)  cosine similarity in [-1, 1], largest first
    hits["labels"]        int64 (k,)    their (given) training labels
    hits["pred"]          int           the model's prediction for x01;   hits["feature"] float32 (D,)

Features are what the classifier reads (`interpret.penultimate_features`), L2-normalised, so a
matrix-vector product is the cosine similarity: `Index.query(f (D,) or (Q, D), k)` -> (indices, sims),
(k,) or (Q, k), exact, in a few milliseconds for 45,000 images of 128 numbers (bench/bench_diagnose.py).

Lower level: `build_index(model, x_train, y_train, cache_dir, key)` for any images; `index_from_store` builds
it from cnnlib.diagnose.features' one pass per split (that module also holds `model_key(model)`, naming a
network's weights by the sha256 of its state dict, and `write_entry` / `read_entry`, the disk format shared
by the feature store, this index and cnnlib.diagnose.projection):

    <cache_dir>/<name>.<array>.npy   one .npy per array (features: float32 or float16 (N, D); labels int64 (N,))
    <cache_dir>/<name>.json          {"version", header fields..., "arrays": {array: {shape, dtype, crc32}}}

Every file is written to a temporary name, fsynced and renamed (cnnlib.io.files.atomic_write); the header goes last,
so its presence means the arrays were complete. Reading checks the header against what the caller
expects (model key, data key, N, dtype), each array's dtype, shape, exact file length and CRC-32: a short,
corrupt or stale entry is rebuilt, never used. A read-only or full cache folder keeps the index in memory.
For a checkpoint, the entry sits beside the decoded splits in `<data root>/cnnlib-cache/`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cnnlib.diagnose.features import STORE_VERSION, _safe, model_key, read_entry, write_entry  # the disk format
from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import penultimate_features

DTYPES = ("float32", "float16")


# -----------------------------------------------------------------------------
# the index

def _unit(f) -> np.ndarray:
    """Rows of (Q, D) (or one (D,)) scaled to unit length, float32; zero rows stay zero."""
    f = np.atleast_2d(np.asarray(f, np.float32))
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


@dataclass
class Index:
    """L2-normalised features (N, D) of a split (a copy-on-write memmap when cached), their labels (N,),
    the header (model, data, layer, n, d, dtype) and the cache path (None: in memory only)."""
    features: np.ndarray
    labels: np.ndarray
    header: dict = field(default_factory=dict)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def query(self, features, k: int = 9, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by cosine similarity: features (D,) -> (indices int64 (k,), sims float32 (k,)),
        (Q, D) -> (Q, k) each, most similar first. `exclude`: index rows never returned."""
        one = np.ndim(features) == 1
        q = _unit(features)                                                 # (Q, D)
        if q.shape[1] != self.dim:
            raise CNNLibError(f"the query has {q.shape[1]} features but the index {self.dim}: "
                              "it was built with another model")
        k = max(0, min(int(k), len(self)))
        f = torch.from_numpy(self.features)            # (N, D), no copy: the map is copy-on-write, so writable
        sims = (torch.from_numpy(q).to(f.dtype) @ f.T).float()              # (Q, N): one matrix product
        if exclude is not None:
            sims[:, torch.as_tensor(np.asarray(exclude, np.int64))] = -float("inf")
        val, idx = torch.topk(sims, k, dim=1)                               # (Q, k), largest first
        idx, val = idx.numpy().astype(np.int64), val.numpy().astype(np.float32)
        return (idx[0], val[0]) if one else (idx, val)


def index_name(model_key_: str, key: str, dtype: str = "float32") -> str:
    """The cache entry's name (<cache_dir>/<name>.json and .<array>.npy) of an index under (model key, data key)."""
    return f"neighbors-{model_key_}-{_safe(key)}-{dtype}"


def build_index(model: nn.Module, x_train, y_train, cache_dir: str | None = None, key: str = "",
                dtype: str = "float32", batch_size: int = 256, progress: str | None = None,
                rebuild: bool = False, features=None) -> Index:
    """The neighbour index of images x_train (N, C, H, W) (uint8 or [0, 1]; memmaps are streamed) with
    labels y_train (N,), cached in `cache_dir` under (model_key(model), key) when a folder is given.

    key: names the data (e.g. DataSpec.key() + "-train"); dtype "float32" or "float16" (half the disk);
    features: cnnlib.diagnose.features' result for these images ({"features" (N, D), "layer"}), or a function
    returning it, called only on a cache miss: then no pass of its own.
    """
    if dtype not in DTYPES:
        raise CNNLibError(f"unknown index dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    y = np.asarray(y_train).astype(np.int64).reshape(-1)
    if len(y) == 0 and len(np.shape(x_train)) == 4:
        raise CNNLibError("this checkpoint's data has no training images (its folder holds only a test set), "
                          "so there are no training images to compare with")
    if len(np.shape(x_train)) != 4 or len(x_train) != len(y) or len(y) == 0:
        raise CNNLibError(f"an index needs images (N, C, H, W) and N labels, got {tuple(np.shape(x_train))} "
                          f"and {y.shape}")
    expect = {"kind": "neighbors", "model": model_key(model), "data": str(key), "n": len(y), "dtype": dtype}
    name = index_name(expect["model"], key, dtype)
    if cache_dir and not rebuild:
        hit = read_entry(cache_dir, name, expect)
        if hit is not None and np.array_equal(hit[0]["labels"], y):
            return Index(hit[0]["features"], hit[0]["labels"], hit[1], os.path.join(cache_dir, name))
    if callable(features):
        features = features()
    out = features or penultimate_features(model, x_train, batch_size=batch_size, progress=progress)
    if len(out["features"]) != len(y):
        raise CNNLibError(f"{len(out['features'])} feature rows for {len(y)} labels: they describe other images")
    feats = _unit(out["features"]).astype(dtype)                                         # (N, D)
    header = {**expect, "layer": out["layer"], "d": int(feats.shape[1])}
    if cache_dir:
        try:
            write_entry(cache_dir, name, {"features": feats, "labels": y}, header)
            hit = read_entry(cache_dir, name, expect)
            if hit is not None:
                return Index(hit[0]["features"], hit[0]["labels"], hit[1], os.path.join(cache_dir, name))
        except OSError:
            pass                                       # read-only or full: keep it in memory
    return Index(feats, y, {"version": STORE_VERSION, **header}, None)


def index_for_checkpoint(model: nn.Module, split: str = "train", data: str | None = None, root: str | None = None,
                         dtype: str = "float32", progress: str | None = None) -> Index:
    """build_index on a checkpoint's own split (default: its training images), cached in the data root's
    cnnlib-cache/ folder; DatasetError (one sentence) when the data are not on disk."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.features import checkpoint_feature_key
    meta = getattr(model, "meta", None) or {}
    folder, key = checkpoint_feature_key(meta, split, data, root)
    x, y = load_checkpoint_split(meta, split, data, root)
    return index_from_store(model, x, y, folder, key, dtype, progress)


def index_from_store(model: nn.Module, x, y, folder: str | None, key: str, dtype: str = "float32",
                     progress=None) -> Index:
    """build_index under (folder, key) whose features, on a miss, come from cnnlib.diagnose.features' store
    (one pass per checkpoint and split, shared with influence, maps, triage and slices); `progress` as there."""
    from cnnlib.diagnose.features import split_features
    return build_index(model, x, y, folder, key, dtype,
                       features=lambda: split_features(model, x, y, folder, key, progress=progress))


def neighbors_of(model: nn.Module, index: Index, x01, k: int = 9, exclude=None) -> dict:
    """The k training images nearest to an image (C, H, W) (or to each of a batch (B, C, H, W)) in the
    model's feature space; see the module docstring for the keys (a batch gives (B, k) arrays and preds)."""
    x = x01 if isinstance(x01, torch.Tensor) else torch.from_numpy(np.array(x01))   # a private copy (memmaps)
    one = x.dim() == 3
    out = penultimate_features(model, x[None] if one else x)
    idx, sims = index.query(out["features"], k, exclude)                                # (B, k)
    res = {"indices": idx, "similarities": sims, "labels": np.asarray(index.labels)[idx],
           "pred": out["preds"], "feature": out["features"]}
    if one:
        res = {k_: (v[0] if k_ != "pred" else int(v[0])) for k_, v in res.items()}
    return res
