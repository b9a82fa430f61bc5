"""One pass per checkpoint and split: the penultimate features every feature-space view reads, kept on disk.

    fs = features_for_checkpoint(model, "train")            # computed once, then memory-mapped from the cache
    fs["features"]  float32 (N, D)  what the classifier reads (the last Linear layer's input), unnormalised
    fs["labels"]    int64 (N,)      the split's given labels;      fs["preds"]  int64 (N,)  the model's predictions
    fs["layer"]     str             the layer whose input the features are;   fs["cached"]  bool

The nearest training images and similar test images (cnnlib.diagnose.neighbors normalises these rows),
TracIn influence (cnnlib.explain.influence reads them as they are), the 2-D maps (cnnlib.diagnose.projection
takes rows of them), triage and the failure slices all start here, so a checkpoint's images go through the
network once per split, not once per view. Lower level: `split_features(model, x, y, folder, key)` for any
images under a caller's key. The disk format is cnnlib.diagnose.neighbors' (`features-<model>-<data>.*.npy`
and its JSON header, written atomically, checked against the weights' hash, the data key, N and each array's
CRC-32 on every read): a short, corrupt or stale entry is computed again, never used; a read-only or full
cache folder keeps the result in memory only. `progress` is a tqdm label, or a callable(done, total) called
after each batch (the dashboard's warm-up draws its progress from it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from cnnlib.data.cache import _remove_stale
from cnnlib.io.files import atomic_write

__all__ = ["split_features", "features_for_checkpoint", "checkpoint_feature_key", "model_key", "write_entry",
           "read_entry"]

KIND = "features"
STORE_VERSION = 1

# -----------------------------------------------------------------------------
# naming and the on-disk format (shared by neighbors, projection, influence, triage, robustness)

def model_key(model: nn.Module) -> str:
    """16 hex digits naming the network's architecture and weights (sha256 of the state dict's tensors)."""
    h = hashlib.sha256(repr((getattr(model, "meta", None) or {}).get("model")).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()[:16]


def _safe(key: str) -> str:
    """A key as a file-name part: kept when plain, else its hash."""
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", key) else hashlib.sha1(key.encode()).hexdigest()[:16]


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B")) & 0xFFFFFFFF


def write_entry(folder: str, name: str, arrays: dict[str, np.ndarray], header: dict) -> None:
    """Write arrays + JSON header atomically (header last). Raises OSError on a read-only folder."""
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, name)
    _remove_stale(base)
    info = {}
    for k, a in arrays.items():
        a = np.ascontiguousarray(a)
        atomic_write(f"{base}.{k}.npy", lambda f, a=a: np.save(f, a, allow_pickle=False))
        info[k] = {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": _crc(a)}
    head = {"version": STORE_VERSION, **header, "arrays": info}
    atomic_write(base + ".json", lambda f: f.write(json.dumps(head, sort_keys=True).encode()))


def read_entry(folder: str, name: str, expect: dict) -> tuple[dict[str, np.ndarray], dict] | None:
    """({array: copy-on-write memmap}, header) when the entry is complete, intact and its header has every
    field of `expect` with the same value; else None (missing, short, corrupt or stale: rebuild)."""
    base = os.path.join(folder, name)
    try:
        with open(base + ".json", encoding="utf-8") as f:
            head = json.load(f)
        if head.get("version") != STORE_VERSION or any(head.get(k) != v for k, v in expect.items()):
            return None
        out = {}
        for k, info in head["arrays"].items():
            path = f"{base}.{k}.npy"
            a = np.load(path, mmap_mode="c", allow_pickle=False)    # raises on a short file; "c": writable for torch,
            #                                                   the file itself never changes
            if (str(a.dtype) != info["dtype"] or list(a.shape) != info["shape"]
                    or (isinstance(a, np.memmap) and os.path.getsize(path) != a.offset + a.nbytes)
                    or _crc(a) != info["crc32"]):
                return None
            out[k] = a
        return out, head
    except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError):
        return None




class _Counted:
    """Images (N, C, H, W) whose batch reads (slices) call back(done, total): progress without tqdm."""

    def __init__(self, x, back: Callable[[int, int], None]):
        self.x, self.back, self.done = x, back, 0
        self.shape, self.dtype = x.shape, x.dtype

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, s):
        out = self.x[s]
        if isinstance(s, slice):
            self.done += len(out)
            self.back(min(self.done, len(self.x)), len(self.x))
        return out


def split_features(model: nn.Module, x, y, folder: str | None = None, key: str = "",
                   progress: str | Callable[[int, int], None] | None = None, rebuild: bool = False) -> dict:
    """Penultimate features of images x (N, C, H, W) (uint8 or [0, 1]; memmaps are streamed) with labels y (N,),
    cached in `folder` under (model_key(model), key) when a folder is given; see the module docstring."""
    from cnnlib.models.anatomy import penultimate_features
    y = np.asarray(y).astype(np.int64).reshape(-1)
    expect = {"kind": KIND, "model": model_key(model), "data": str(key), "n": len(y)}
    name = f"features-{expect['model']}-{_safe(key)}"
    if folder and not rebuild:
        hit = read_entry(folder, name, expect)
        if hit is not None and np.array_equal(hit[0]["labels"], y):
            arrays, head = hit
            return {"features": arrays["features"], "labels": arrays["labels"], "preds": arrays["preds"],
                    "layer": head.get("layer", ""), "cached": True}
    if callable(progress):
        x, label = _Counted(x, progress), None
        progress(0, len(y))
    else:
        label = progress
    if len(y):
        out = penultimate_features(model, x, progress=label)
        feats, preds, layer = out["features"], out["preds"], out["layer"]       # (N, D), (N,)
    else:
        feats, preds, layer = np.zeros((0, 0), np.float32), np.zeros(0, np.int64), ""
    del x
    arrays = {"features": np.ascontiguousarray(feats, np.float32), "labels": y, "preds": preds.astype(np.int64)}
    if folder:
        try:
            write_entry(folder, name, arrays, {**expect, "layer": layer, "d": int(feats.shape[1]) if feats.ndim == 2 else 0})
            hit = read_entry(folder, name, expect)       # memory-mapped: the pages are shared, not held twice
            if hit is not None:
                arrays = hit[0]
        except OSError:
            pass                                         # a read-only or full cache folder: in memory this time
    return {**arrays, "layer": layer, "cached": False}


def checkpoint_feature_key(meta: dict, split: str, data: str | None = None, root: str | None = None) -> tuple[str, str]:
    """(cache folder, data key) under which a checkpoint's split is stored: its data root's cnnlib-cache/ and
    DataSpec.key() + "-" + split (the key cnnlib.diagnose.neighbors' index uses too)."""
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec
    spec = checkpoint_data_spec(meta or {}, data or "", root)
    return cache_dir(spec.root), f"{spec.key()}-{split}"


def features_for_checkpoint(model: nn.Module, split: str = "test", data: str | None = None, root: str | None = None,
                            progress: str | Callable[[int, int], None] | None = None, x=None, y=None) -> dict:
    """split_features of a checkpoint's own split ("train", "val" or "test"; or its pixels x, y already loaded
    by the caller), cached beside the decoded images; DatasetError (one sentence) when they are not on disk."""
    from cnnlib.data.spec import load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    if x is None or y is None:
        x, y = load_checkpoint_split(meta, split, data, root)
    folder, key = checkpoint_feature_key(meta, split, data, root)
    return split_features(model, x, y, folder, key, progress=progress)
