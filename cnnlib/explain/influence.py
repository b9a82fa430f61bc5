"""The training images that caused a prediction: TracIn influence (Pruthi et al., 2020) on the final layer.

    res = proponents_opponents(model, x01, train_x, train_y, k=8)       # x01 (C, H, W) in [0, 1] or uint8
    res["proponents"]   {"indices" int64 (k,), "scores" float32 (k,)}  training rows that pushed the prediction
    res["opponents"]    {"indices", "scores"}                           training rows that pushed against it
    res["label"]        the class the influence is measured for (default: the model's prediction)
    res = influence_for_checkpoint(model, x01, k=8)                     # the checkpoint's training split, cached

TracIn scores a training example z by the dot product of its loss gradient with the test example's, summed
over training checkpoints weighted by the learning rate. A checkpoint stores only its final weights, so this is
TracIn with one checkpoint (learning rate 1) and gradients of the final layer only (captum.influence.TracInCPFast,
exact for that layer: the product of the layers' inputs times the product of the logits' gradients, through the
constant a network may multiply its logits by, measured on the query image). The final
layer's input is the penultimate feature vector, so Captum runs on that layer alone over the training images'
features, computed once (and, for a checkpoint, cached beside the neighbour index): a query is then a few matrix
products, not a pass over the training images. Positive score: a proponent (training on it lowered the test
loss); negative: an opponent, typically a look-alike with another label, e.g. a mislabelled duplicate.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cnnlib.errors import CNNLibError

__all__ = ["proponents_opponents", "influence_for_checkpoint", "train_features", "cached_train_features"]


def train_features(model: nn.Module, train_x, batch_size: int | None = None, progress: str | None = None) -> np.ndarray:
    """Penultimate features float32 (N, D) of training images (N, C, H, W), the final layer's input (unnormalised)."""
    from cnnlib.models.anatomy import penultimate_features
    return penultimate_features(model, train_x, batch_size=batch_size, progress=progress)["features"]


class _Head(nn.Module):
    """The final Linear layer followed by the constant the network multiplies its output by (resnet9: 1/8)."""

    def __init__(self, fc: nn.Linear, scale: float):
        super().__init__()
        self.fc, self.scale = fc, scale

    def forward(self, f):
        return self.fc(f) * self.scale


def _head(model: nn.Module, features: np.ndarray, logits: np.ndarray) -> _Head:
    """A copy of the final layer and the logits' scale, measured on (features (B, D), logits (B, K)) by least
    squares; CNNLibError when the logits are not that layer's output times a constant (a head TracIn-last-layer
    cannot follow)."""
    from cnnlib.models.anatomy import penultimate_layer
    from cnnlib.modelops import get_layer
    fc = copy.deepcopy(get_layer(model, penultimate_layer(model))).float().cpu().eval()
    for p in fc.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        raw = fc(torch.from_numpy(features.astype(np.float32))).double().numpy()
    scale = float((raw * logits).sum() / max((raw * raw).sum(), 1e-30))
    if not np.allclose(raw * scale, logits, rtol=1e-3, atol=1e-3 * max(np.abs(logits).max(), 1.0)):
        raise CNNLibError("this network's logits are not its last Linear layer's output (times a constant), so "
                          "TracIn on the final layer does not apply to it")
    return _Head(fc, scale)


def proponents_opponents(model: nn.Module, x01, train_x=None, train_y=None, k: int = 8, label: int | None = None,
                         features=None, batch_size: int = 4096) -> dict:
    """The k training images with the highest (proponents) and lowest (opponents) TracIn influence on the loss of
    image x01 (C, H, W) at `label` (default: the model's prediction). train_x (N, C, H, W), train_y (N,); or
    `features` (N, D) from train_features (then train_x may be None)."""
    from torch.utils.data import DataLoader, TensorDataset

    from captum.influence import TracInCPFast
    from cnnlib.models.anatomy import penultimate_features
    y = np.asarray(train_y).astype(np.int64).reshape(-1) if train_y is not None else None
    if y is None or len(y) == 0:
        raise CNNLibError("influence needs the training images' labels (there are no training images)")
    f = train_features(model, train_x) if features is None else np.asarray(features, np.float32)
    if f.ndim != 2 or len(f) != len(y):
        raise CNNLibError(f"influence needs one feature row per training label, got {f.shape} for {len(y)} labels")
    x = x01 if isinstance(x01, torch.Tensor) else torch.from_numpy(np.array(x01))
    if x.dim() != 3:
        raise CNNLibError(f"influence takes one image (C, H, W), got shape {tuple(x.shape)}")
    out = penultimate_features(model, x[None])
    pred = int(out["preds"][0])
    target = pred if label is None else int(label)
    head = _head(model, out["features"], out["logits"])
    layer = head.fc
    if f.shape[1] != layer.in_features:
        raise CNNLibError(f"the training features have {f.shape[1]} numbers but the final layer reads "
                          f"{layer.in_features}: they come from another model")
    if not 0 <= target < layer.out_features:
        raise CNNLibError(f"label must be a class index in 0..{layer.out_features - 1}, not {target}")
    k = max(1, min(int(k), len(y)))
    loader = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(f)), torch.from_numpy(y)),
                        batch_size=batch_size, shuffle=False)
    tracin = TracInCPFast(head, layer, loader, checkpoints=[0], checkpoints_load_func=lambda m, c: 1.0,
                          loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=batch_size)
    test = (torch.from_numpy(out["features"][:1].astype(np.float32)), torch.tensor([target]))
    scores = tracin.influence(test, k=None)[0].detach()            # (N,): one pass for both ends
    res = {"label": target, "pred": pred}
    for which, largest in (("proponents", True), ("opponents", False)):
        val, idx = torch.topk(scores, k, largest=largest)
        idx = idx.numpy().astype(np.int64)
        res[which] = {"indices": idx, "scores": val.numpy().astype(np.float32), "labels": y[idx]}
    return res


def influence_for_checkpoint(model: nn.Module, x01, k: int = 8, label: int | None = None, data: str | None = None,
                             root: str | None = None, progress: str | None = None) -> dict:
    """proponents_opponents over a checkpoint's training split (indices are rows of load_checkpoint_split(meta,
    "train")); the training features are cached in the data root's cnnlib-cache/ folder (cnnlib.diagnose.neighbors'
    format, checked against the weights' hash)."""
    from cnnlib.data.spec import load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    x, y = load_checkpoint_split(meta, "train", data, root)
    f = cached_train_features(model, x, y, data, root, lambda m, xs: train_features(m, xs, progress=progress))
    return proponents_opponents(model, x01, train_y=y, k=k, label=label, features=f)


def cached_train_features(model: nn.Module, x, y, data: str | None = None, root: str | None = None,
                          compute=train_features) -> np.ndarray:
    """train_features of a checkpoint's training split (x, y), read from or written to the data root's
    cnnlib-cache/ folder (cnnlib.diagnose.neighbors' format, checked against the weights' hash and the labels);
    `compute(model, x)` makes them on a miss (the dashboard passes one that draws a progress bar)."""
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec
    from cnnlib.diagnose.neighbors import _safe, model_key, read_entry, write_entry
    spec = checkpoint_data_spec(getattr(model, "meta", None) or {}, data or "", root)
    key = f"{spec.key()}-train"
    expect = {"kind": "influence-features", "model": model_key(model), "data": key, "n": len(y)}
    folder, name = cache_dir(spec.root), f"influence-{expect['model']}-{_safe(key)}"
    hit = read_entry(folder, name, expect)
    if hit is not None and np.array_equal(hit[0]["labels"], y):
        return hit[0]["features"]
    f = compute(model, x) if len(y) else np.zeros((0, 0), np.float32)
    try:
        write_entry(folder, name, {"features": f, "labels": np.asarray(y, np.int64)}, expect)
    except OSError:
        pass                                   # a read-only or full cache folder: computed again next time
    return f
