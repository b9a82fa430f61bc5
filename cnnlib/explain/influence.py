"""The training images that caused a prediction: TracIn influence (Pruthi et al., 2020) on the final layer.

    res = proponents_opponents(model, x01, train_x, train_y, k=8)       # x01 (C, H, W) in [0, 1] or uint8
    res = proponents_opponents(model, x01, train_y=y, features=f)        # f (N, D) from train_features: fast
    res["proponents"]   {"indices" int64 (k,), "scores" float32 (k,)}  training rows that pushed the prediction
    res["opponents"]    {"indices", "scores"}                           training rows that pushed against it
    res["label"]        the class the influence is measured for (default: the model's prediction)
    res = influence_for_checkpoint(model, x01, k=8)                     # the checkpoint's training split, cached

TracIn scores a training example z by the dot product of its loss gradient with the test example's, summed
over training checkpoints weighted by the learning rate. A checkpoint stores only its final weights, so this is
TracIn with one checkpoint (learning rate 1) and gradients of the final layer only, exactly what
captum.influence.TracInCPFast computes for that layer. For a Linear layer that is a closed form:

    score(z_train, z_test) = (f_train . f_test) * (g_train . g_test)      f: the layer's input (N, D)
    g = d loss / d logits = softmax(logits) - one_hot(label)             (N, K), logits = s * (f W^T + b)

(s: the constant a network may multiply its last layer's output by, resnet9's 1/8, measured on the query
image). Like Captum, the bias's gradient (which would add g_train . g_test) is left out. So a query is two
matrix-vector products over the training rows, not a pass over the training images: the features are computed
once (for a checkpoint, one pass shared by every feature-space view, cnnlib.diagnose.features), and the training-side gradients g_train once per
features array (kept in memory while that array lives, up to _CACHE_BYTES; larger ones, e.g. 1,000 classes, are
recomputed per query in chunks of `batch_size` rows so memory stays bounded). engine="captum" runs Captum's
TracInCPFast itself (the slow reference; tests/test_influence.py checks both agree). Positive score: a
proponent (training on it lowered the test loss); negative: an opponent, typically a look-alike with another
label, e.g. a mislabelled duplicate.
"""
from __future__ import annotations

import threading
import weakref
import zlib

import numpy as np
import torch
from torch import nn

from cnnlib.errors import CNNLibError

__all__ = ["proponents_opponents", "influence_for_checkpoint", "train_features", "cached_train_features"]

_CACHE_BYTES = 64 << 20      # training-side gradients kept in memory, all features arrays together
_GRADS: dict = {}            # id(features) -> (weakref to features, fingerprint, scale, G float32 (N, K))
_LOCK = threading.Lock()     # the dashboard's sessions query from several threads


def train_features(model: nn.Module, train_x, batch_size: int | None = None, progress: str | None = None) -> np.ndarray:
    """Penultimate features float32 (N, D) of training images (N, C, H, W), the final layer's input (unnormalised)."""
    from cnnlib.models.anatomy import penultimate_features
    return penultimate_features(model, train_x, batch_size=batch_size, progress=progress)["features"]


def _query(model: nn.Module, x: torch.Tensor) -> tuple[str, np.ndarray, np.ndarray]:
    """(final layer's name, its input float32 (D,), the network's logits float32 (K,)) for one image (C, H, W).
    A working copy (shared weights, own hooks), not penultimate_features' inference copy: folding the
    BatchNorms costs a weight copy and two forward passes, several times the one image's own."""
    from cnnlib.models.anatomy import penultimate_layer
    from cnnlib.modelops import capture, forward_batches, model_device, norm_stats, working_copy
    net = working_copy(model)
    name = penultimate_layer(net)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(model))
    with capture(net, [name], inputs=True) as store:
        for _, logits in forward_batches(net, x[None], mean, std):
            feat = store.pop(name).flatten(1).float()                       # (1, D)
    return name, feat[0].cpu().numpy(), logits[0].cpu().numpy()


class _Head(nn.Module):
    """The final Linear layer followed by the constant the network multiplies its output by (Captum's model)."""

    def __init__(self, fc: nn.Linear, scale: float):
        super().__init__()
        self.fc, self.scale = fc, scale

    def forward(self, f):
        return self.fc(f) * self.scale


def _head(model: nn.Module, name: str, feat: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(W float32 (K, D), b float32 (K,), scale) of the final layer; the scale is measured on one image's (features
    (D,), logits (K,)) by least squares. CNNLibError when the logits are not that layer's output times a constant
    (a head TracIn-last-layer cannot follow)."""
    from cnnlib.modelops import get_layer
    fc = get_layer(model, name)
    w = fc.weight.detach().float().cpu().numpy()                             # (K, D)
    b = fc.bias.detach().float().cpu().numpy() if fc.bias is not None else np.zeros(len(w), np.float32)
    if feat.shape[0] != w.shape[1]:
        raise CNNLibError(f"the final layer {name} reads {w.shape[1]} numbers, its input had {feat.shape[0]}")
    raw = w.astype(np.float64) @ feat + b                                    # (K,) the layer's own output
    scale = float((raw * logits).sum() / max((raw * raw).sum(), 1e-30))
    if not np.allclose(raw * scale, logits, rtol=1e-3, atol=1e-3 * max(np.abs(logits).max(), 1.0)):
        raise CNNLibError("this network's logits are not its last Linear layer's output (times a constant), so "
                          "TracIn on the final layer does not apply to it")
    return w, b, scale


def _grads(w: np.ndarray, b: np.ndarray, scale: float, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d cross-entropy / d logits float32 (B, K) = softmax(scale * (f W^T + b)) - one_hot(y), for rows f (B, D)."""
    z = torch.from_numpy(np.ascontiguousarray(f, np.float32)) @ torch.from_numpy(w).T     # (B, K)
    g = torch.softmax((z + torch.from_numpy(b)) * scale, dim=1)
    g[torch.arange(len(g)), torch.from_numpy(y)] -= 1.0
    return g.numpy()


def _fingerprint(w, b, scale, y) -> tuple:
    """What the training-side gradients depend on besides the features: the head's weights and the labels."""
    return (w.shape, zlib.crc32(w.tobytes()), zlib.crc32(b.tobytes()), len(y), zlib.crc32(y.tobytes()))


def _cached_grads(features, w, b, scale, f, y, rows) -> np.ndarray | None:
    """The training-side gradients G (N, K) of `features` from memory, else computed and kept when they fit in
    _CACHE_BYTES (oldest entries dropped first); None when they do not fit (the caller chunks) or `features`
    cannot be referenced weakly. Keyed by the array's identity: treat a features array as read-only."""
    if len(f) * len(w) * 4 > _CACHE_BYTES:
        return None
    try:
        ref = weakref.ref(features, lambda r, key=id(features): _GRADS.pop(key, None))
    except TypeError:                                                       # e.g. a list: nothing to key on
        return None
    fp = _fingerprint(w, b, scale, y)
    hit = _GRADS.get(id(features))
    if hit is not None and hit[0]() is features and hit[1] == fp and abs(hit[2] - scale) <= 1e-5 * abs(hit[2]):
        return hit[3]
    g = np.empty((len(f), len(w)), np.float32)                              # (N, K), filled in place
    for i in range(0, len(f), rows):
        g[i:i + rows] = _grads(w, b, scale, f[i:i + rows], y[i:i + rows])
    with _LOCK:
        _GRADS[id(features)] = (ref, fp, scale, g)
        while sum(e[3].nbytes for e in list(_GRADS.values())) > _CACHE_BYTES:
            _GRADS.pop(next(iter(_GRADS)), None)                                # the oldest entry
    return g


def _closed_form(features, w, b, scale, f, y, ft, target, rows) -> np.ndarray:
    """TracIn scores float32 (N,) = (F f_t) * (G g_t); G from memory or in chunks of `rows` training rows."""
    gt = _grads(w, b, scale, ft[None], np.array([target]))[0]                # (K,) the query's gradient
    g = _cached_grads(features, w, b, scale, f, y, rows) if features is not None else None
    if g is not None:
        return (f @ ft) * (g @ gt)
    out = np.empty(len(f), np.float32)
    for i in range(0, len(f), rows):                                         # (rows, K) at a time
        out[i:i + rows] = (f[i:i + rows] @ ft) * (_grads(w, b, scale, f[i:i + rows], y[i:i + rows]) @ gt)
    return out


def _captum(w, b, scale, f, y, ft, target, batch_size) -> np.ndarray:
    """The same scores float32 (N,) from captum.influence.TracInCPFast over a DataLoader of the features."""
    from captum.influence import TracInCPFast
    from torch.utils.data import DataLoader, TensorDataset
    fc = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(w))
        fc.bias.copy_(torch.from_numpy(b))
    loader = DataLoader(TensorDataset(torch.from_numpy(np.array(f, np.float32)), torch.from_numpy(y)),
                        batch_size=batch_size, shuffle=False)
    tracin = TracInCPFast(_Head(fc, scale), fc, loader, checkpoints=[0], checkpoints_load_func=lambda m, c: 1.0,
                          loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=batch_size)
    test = (torch.from_numpy(ft[None].astype(np.float32)), torch.tensor([target]))
    return tracin.influence(test, k=None)[0].detach().numpy()


def proponents_opponents(model: nn.Module, x01, train_x=None, train_y=None, k: int = 8, label: int | None = None,
                         features=None, batch_size: int = 4096, engine: str = "closed") -> dict:
    """The k training images with the highest (proponents) and lowest (opponents) TracIn influence on the loss of
    image x01 (C, H, W) at `label` (default: the model's prediction). train_x (N, C, H, W), train_y (N,); or
    `features` (N, D) from train_features (then train_x may be None; pass the same array again and the
    training-side gradients are reused). engine "closed" (the closed form, chunks of batch_size rows) or
    "captum" (TracInCPFast, the reference)."""
    if engine not in ("closed", "captum"):
        raise CNNLibError(f"engine must be 'closed' or 'captum', not {engine!r}")
    y = np.asarray(train_y).astype(np.int64).reshape(-1) if train_y is not None else None
    if y is None or len(y) == 0:
        raise CNNLibError("influence needs the training images' labels (there are no training images)")
    f = train_features(model, train_x) if features is None else np.asarray(features, np.float32)
    if f.ndim != 2 or len(f) != len(y):
        raise CNNLibError(f"influence needs one feature row per training label, got {f.shape} for {len(y)} labels")
    x = x01 if isinstance(x01, torch.Tensor) else torch.from_numpy(np.array(x01))
    if x.dim() != 3:
        raise CNNLibError(f"influence takes one image (C, H, W), got shape {tuple(x.shape)}")
    name, ft, logits = _query(model, x)
    pred = int(np.argmax(logits))
    target = pred if label is None else int(label)
    w, b, scale = _head(model, name, ft, logits)
    if f.shape[1] != w.shape[1]:
        raise CNNLibError(f"the training features have {f.shape[1]} numbers but the final layer reads "
                          f"{w.shape[1]}: they come from another model")
    if not 0 <= target < len(w):
        raise CNNLibError(f"label must be a class index in 0..{len(w) - 1}, not {target}")
    if y.min() < 0 or y.max() >= len(w):
        raise CNNLibError(f"the training labels must be class indices in 0..{len(w) - 1}")
    k = max(1, min(int(k), len(y)))
    rows = max(1, int(batch_size))
    scores = torch.from_numpy(_closed_form(features, w, b, scale, f, y, ft, target, rows) if engine == "closed"
                              else _captum(w, b, scale, f, y, ft, target, rows))              # (N,)
    res = {"label": target, "pred": pred}
    for which, largest in (("proponents", True), ("opponents", False)):
        val, idx = torch.topk(scores, k, largest=largest)
        idx = idx.numpy().astype(np.int64)
        res[which] = {"indices": idx, "scores": val.numpy().astype(np.float32), "labels": y[idx]}
    return res


def influence_for_checkpoint(model: nn.Module, x01, k: int = 8, label: int | None = None, data: str | None = None,
                             root: str | None = None, progress: str | None = None) -> dict:
    """proponents_opponents over a checkpoint's training split (indices are rows of load_checkpoint_split(meta,
    "train")); the training features come from cnnlib.diagnose.features' store (one pass per checkpoint, on disk)."""
    from cnnlib.data.spec import load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    x, y = load_checkpoint_split(meta, "train", data, root)
    f = cached_train_features(model, x, y, data, root, progress=progress)
    return proponents_opponents(model, x01, train_y=y, k=k, label=label, features=f)


def cached_train_features(model: nn.Module, x, y, data: str | None = None, root: str | None = None,
                          progress: str | None = None) -> np.ndarray:
    """train_features of a checkpoint's training split (x, y): cnnlib.diagnose.features' one pass per checkpoint
    and split, read from or written to the data root's cnnlib-cache/ folder (checked against the weights' hash
    and the labels), shared with the neighbour index, triage and the maps."""
    from cnnlib.diagnose.features import features_for_checkpoint
    if not len(y):
        return np.zeros((0, 0), np.float32)
    return features_for_checkpoint(model, "train", data, root, progress=progress, x=x, y=y)["features"]
