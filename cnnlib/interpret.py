"""Looking inside a CNN: layers, receptive fields, filters, feature maps, embeddings.

    list_layers(model)                      every module that outputs a spatial map: shape, params, receptive field
    first_layer_filters(model or weight)    first conv kernels as (N, k, k, C) tiles in [0, 1]
    layer_kernels(model, "conv2")           a deeper conv's kernels (C_out, C_in, k, k) in [0, 1]
    feature_maps(model, x01, ["relu1"])     activations of listed layers for one image, scaled to [0, 1]
    embed(model, x_uint8, y)                penultimate features of a split projected to 2-D by PCA
    attribute(...), METHODS, overlay(...)   live in attribution.py (also reachable as interpret.attribute)

Thread safety: the dashboard shares one cached model between sessions, so no
function here puts a hook on it or changes its mode. Each call works on
`working_copy(model)`: new module objects (own hooks, own train/eval flag)
that share the original's parameter and buffer tensors, so a copy costs
microseconds, not a weight copy. The shared model is left exactly as found.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .errors import CNNLibError
from .inference import normalize
from .viz import grid  # noqa: F401  (part of this module's API: tiles -> one image)


# -----------------------------------------------------------------------------
# shared plumbing: private copies, hooks, inputs

def working_copy(model: nn.Module) -> nn.Module:
    """Structural copy in eval() that shares parameters and buffers (and `meta`) with `model`."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    if hasattr(model, "meta"):
        memo[id(model.meta)] = model.meta
    return copy.deepcopy(model, memo).eval()


def inference_copy(model: nn.Module) -> tuple[nn.Module, bool]:
    """(network, channels_last) for fast batched inference: a full copy with each BatchNorm folded into
    its conv (torch.fx) in channels_last memory format; the plain working copy if fx cannot trace it."""
    from torch.fx.experimental.optimization import fuse
    net = working_copy(model)
    try:
        net = fuse(net)           # copies the weights, so the memory-format change below stays private
    except Exception:  # noqa: BLE001  (any untraceable forward: fall back to the unfused copy)
        return net, False
    return net.to(memory_format=torch.channels_last), True


def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CNNLibError(f"{type(model).__name__} has no layer {name!r}") from None


@contextmanager
def capture(model: nn.Module, names, inputs: bool = False):
    """Forward hooks on the named layers, yielding {name: output (or first input) tensor}.

    The hooks are removed when the block ends, also when it raises.
    """
    store, handles = {}, []

    def make(name):   # hooks must return None: a returned value would replace the layer's input / output
        if inputs:
            def pre_hook(m, args):
                store.setdefault(name, args[0])
            return pre_hook

        def hook(m, args, out):
            store.setdefault(name, out)
        return hook
    try:
        for name in names:
            layer = get_layer(model, name)
            handles.append(layer.register_forward_pre_hook(make(name)) if inputs
                           else layer.register_forward_hook(make(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _input_shape(model: nn.Module, input_shape=None) -> list[int]:
    shape = input_shape or getattr(model, "meta", {}).get("input_shape")
    if shape is None:
        raise CNNLibError("the input shape is unknown: load the model with load_model() or pass input_shape=[C, H, W]")
    return [int(s) for s in shape]


def as_image01(x) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) uint8 / float in [0, 1] (tensor or array) -> float32 (C, H, W)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        raise CNNLibError(f"expected one image (C, H, W), got shape {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def normalize01(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> inference.normalize, with a clear error when the statistics are missing."""
    if not meta or "normalization" not in meta:
        raise CNNLibError("the model has no normalization statistics: load it with load_model()")
    return normalize(x, meta)


# -----------------------------------------------------------------------------
# layers and receptive fields

def _kernel_stride(m: nn.Module, inp: torch.Tensor | None, out: torch.Tensor) -> tuple[int, int]:
    """(effective kernel size, stride) of a layer along the height axis, in its input's pixels."""
    pair = lambda v: v[0] if isinstance(v, (tuple, list)) else v  # noqa: E731
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = pair(m.kernel_size), pair(m.stride)
        d = pair(getattr(m, "dilation", 1))
        return d * (k - 1) + 1, s
    if inp is not None and inp.dim() == 4 and inp.shape[-2] != out.shape[-2]:
        h_in, h_out = inp.shape[-2], out.shape[-2]   # adaptive pools and unknown resamplers
        s = max(h_in // max(h_out, 1), 1)
        return max(h_in - (h_out - 1) * s, 1), s
    return 1, 1


@torch.inference_mode()
def list_layers(model: nn.Module, input_shape=None) -> list[dict]:
    """Every module whose output is a spatial map (B, C, h, w), in execution order.

    Each row: name, type, output_shape [C, h, w], params (a block counts its children),
    rf_size and rf_stride: the receptive field of one output unit, in input pixels (it can
    exceed the image: it counts padding). Exact for chains and residual blocks (a block's
    output takes its longest path); other branches follow the path executed last.
    """
    shape = _input_shape(model, input_shape)
    net = working_copy(model)
    x = torch.zeros(1, *shape, device=model_device(net))
    rf_of = {id(x): (1, 1)}     # tensor id -> (rf size, jump), both in input pixels
    keep, last, rows = [x], [(1, 1)], []

    def hook(name, m, args, out):
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or id(out) in rf_of:
            return  # not spatial, or a container handing on its child's output
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if next(m.children(), None) is None:   # leaf: grow the field of its input
            rf, jump = rf_of.get(id(src), last[0]) if src is not None else last[0]
            k, s = _kernel_stride(m, src, out)
            rf, jump = rf + (k - 1) * jump, jump * s
        else:                                   # block: the field of the last map made inside it
            rf, jump = last[0]
        rf_of[id(out)] = last[0] = (rf, jump)
        keep.append(out)
        rows.append({"name": name, "type": type(m).__name__, "output_shape": list(out.shape[1:]),
                     "params": sum(p.numel() for p in m.parameters()), "rf_size": int(rf), "rf_stride": int(jump)})

    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(n, m, a, o))
               for n, m in net.named_modules() if n]
    try:
        net(x)
    except RuntimeError as e:
        raise CNNLibError(f"{type(model).__name__} cannot run on an input of shape {shape}: {e}") from None
    finally:
        for h in handles:
            h.remove()
    return rows


def conv_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def default_gradcam_layer(model: nn.Module) -> str:
    """The output of the last conv block: the last listed layer whose map is still larger than 1x1."""
    try:
        spatial = [r["name"] for r in list_layers(model) if r["output_shape"][1] * r["output_shape"][2] > 1]
    except CNNLibError:
        spatial = []
    if spatial:
        return spatial[-1]
    convs = conv_layer_names(model)
    if not convs:
        raise CNNLibError(f"{type(model).__name__} has no convolutional layer for Grad-CAM")
    return convs[-1]


# -----------------------------------------------------------------------------
# filters

def _minmax(a: np.ndarray, axes) -> np.ndarray:
    """Scale to [0, 1] over `axes` (None: everything); constant groups become 0.5."""
    lo, hi = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0.5).astype(np.float32)


def first_layer_filters(model_or_weight, scale: str = "filter") -> np.ndarray:
    """First conv kernels (C_out, C_in, k, k) -> tiles (C_out, k, k, C_in) float32 in [0, 1].

    Accepts a model or a weight tensor (e.g. a per-epoch snapshot from the history).
    scale="filter": each filter on its own min..max; "shared": one min..max for all.
    """
    if isinstance(model_or_weight, nn.Module):
        from .models import first_conv
        w = first_conv(model_or_weight)[1].weight
    else:
        w = torch.as_tensor(model_or_weight)
    w = w.detach().float().cpu().numpy()
    if w.ndim != 4:
        raise CNNLibError(f"conv weights must be (C_out, C_in, k, k), got shape {w.shape}")
    tiles = w.transpose(0, 2, 3, 1)                                   # (N, k, k, C)
    if scale not in ("filter", "shared"):
        raise CNNLibError(f"scale must be 'filter' or 'shared', not {scale!r}")
    return _minmax(tiles, (1, 2, 3) if scale == "filter" else None)


def layer_kernels(model: nn.Module, layer_name: str, scale: str = "filter") -> np.ndarray:
    """A conv layer's kernels (C_out, C_in, k, k) float32 in [0, 1].

    scale="kernel": every 2-D kernel on its own range; "filter": per output channel; "shared": one range.
    """
    layer = get_layer(model, layer_name)
    if not isinstance(layer, nn.Conv2d):
        raise CNNLibError(f"{layer_name!r} is a {type(layer).__name__}, not a Conv2d")
    axes = {"kernel": (2, 3), "filter": (1, 2, 3), "shared": None}
    if scale not in axes:
        raise CNNLibError(f"scale must be one of {list(axes)}, not {scale!r}")
    return _minmax(layer.weight.detach().float().cpu().numpy(), axes[scale])


# -----------------------------------------------------------------------------
# feature maps

def feature_maps(model: nn.Module, x01, layer_names=None, scale: str = "channel") -> dict:
    """Activations of `layer_names` (a name, a list, or None = every listed layer) for one image.

    x01: (C, H, W) in [0, 1] (uint8 accepted). Returns {name: {"maps": float32 (C, h, w) in [0, 1],
    "raw": float32 (C, h, w), "min": (C,), "max": (C,)}}; "min"/"max" are each channel's raw range.
    scale="channel": each channel on its own range; "shared": one range for the whole layer.
    Non-spatial outputs (B, F) come back as (F, 1, 1).
    """
    if scale not in ("channel", "shared"):
        raise CNNLibError(f"scale must be 'channel' or 'shared', not {scale!r}")
    if layer_names is None:
        layer_names = [r["name"] for r in list_layers(model)]
    names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
    net = working_copy(model)
    x = normalize01(as_image01(x01).unsqueeze(0).to(model_device(net)), getattr(model, "meta", None))
    with torch.inference_mode(), capture(net, names) as store:
        net(x)
    out = {}
    for name in names:
        a = store.get(name)
        if not isinstance(a, torch.Tensor):
            raise CNNLibError(f"layer {name!r} did not produce a tensor for this input")
        a = a[0].float().cpu().numpy()
        a = a.reshape(-1, 1, 1) if a.ndim == 1 else a.reshape(a.shape[0], *a.shape[-2:])   # (C, h, w)
        maps = _minmax(a, (1, 2) if scale == "channel" else None)
        out[name] = {"maps": maps, "raw": a.astype(np.float32),
                     "min": a.min(axis=(1, 2)).astype(np.float32), "max": a.max(axis=(1, 2)).astype(np.float32)}
    return out


# -----------------------------------------------------------------------------
# embeddings

def penultimate_layer(model: nn.Module) -> str:
    """The classifier: the last nn.Linear; its input is the penultimate feature vector."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CNNLibError(f"{type(model).__name__} has no Linear classifier; pass layer=")
    return linears[-1]


def pca_2d(feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> (xy (N, 2), explained variance ratio (2,)) by SVD; signs fixed (largest loading > 0)."""
    f = feats.double()
    f = f - f.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(f, full_matrices=False)       # vh (r, D)
    vh = vh[:2]
    sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    vh = vh * torch.where(sign == 0, torch.ones_like(sign), sign)
    xy = f @ vh.T                                              # (N, 2)
    if xy.shape[1] < 2:
        xy = torch.cat([xy, torch.zeros(len(xy), 2 - xy.shape[1], dtype=xy.dtype)], 1)
    var = s.pow(2)
    ratio = (var[:2] / var.sum().clamp_min(1e-30)).tolist()
    ratio += [0.0] * (2 - len(ratio))
    return xy.float().numpy(), np.array(ratio, np.float32)


def embed(model: nn.Module, x_uint8, y=None, batch_size: int = 256, method: str = "pca",
          layer: str | None = None) -> dict:
    """Penultimate features of a split (x (N, C, H, W) uint8 or [0, 1] floats) projected to 2-D.

    Returns xy float32 (N, 2), labels int64 (N,) or None, preds int64 (N,), correct bool (N,) or None,
    explained_variance (2,) (ratio of total variance), layer (the features are this layer's input
    when it is the classifier, else its output, flattened), dim (feature size).
    """
    if method != "pca":
        raise CNNLibError(f"unknown embedding method {method!r}; only 'pca' is available")
    x = torch.as_tensor(x_uint8)
    if x.dim() != 4 or len(x) < 2:
        raise CNNLibError(f"embed needs a batch of at least 2 images (N, C, H, W), got shape {tuple(x.shape)}")
    meta = getattr(model, "meta", None)
    net, fmt = inference_copy(model) if layer is None else (working_copy(model), False)
    fmt = torch.channels_last if fmt else torch.contiguous_format
    dev = model_device(net)
    name = layer or penultimate_layer(net)
    take_input = layer is None
    feats, preds = [], []
    with torch.inference_mode(), capture(net, [name], inputs=take_input) as store:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
            store.clear()
            preds.append(net(normalize01(xb, meta).contiguous(memory_format=fmt)).argmax(1).cpu())
            feats.append(store[name].flatten(1).float().cpu())          # (B, D)
    feats = torch.cat(feats)
    xy, ratio = pca_2d(feats)
    preds = torch.cat(preds).numpy().astype(np.int64)
    labels = None if y is None else torch.as_tensor(y).cpu().numpy().astype(np.int64)
    return {"xy": xy, "labels": labels, "preds": preds,
            "correct": None if labels is None else preds == labels,
            "explained_variance": ratio, "layer": name, "dim": int(feats.shape[1])}


# attribution.py imports this module, so its names are re-exported lazily (PEP 562).
_ATTRIBUTION_NAMES = ("METHODS", "METHOD_LABELS", "attribute", "attribute_many", "overlay", "colormap")


def __getattr__(name):
    if name in _ATTRIBUTION_NAMES:
        from . import attribution
        return getattr(attribution, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
