"""Looking inside a CNN: layers, receptive fields, filters, feature maps, embeddings.

    list_layers(model)                      every layer in execution order: shape, params, receptive field
    first_layer_filters(model or weight)    first conv kernels as (N, k, k, C) tiles in [0, 1]
    filter_history(meta, model)             [(epoch, first-conv weight)] from epoch 0 (initialisation) on
    layer_kernels(model, "conv2")           a deeper conv's kernels (C_out, C_in, k, k) in [0, 1]
    feature_maps(model, x01, ["relu1"])     activations of listed layers for one image, scaled to [0, 1]
    embed(model, x_uint8, y)                penultimate features of a split projected to 2-D by PCA

Nothing here touches the model it is given (the dashboard shares one between sessions): every function
works on a private copy from cnnlib.modelops (`analysis_copy`: non-inplace activations, one module per
call, so hooks on torchvision / timm networks mean one place).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.models.registry import first_conv, get_model
from cnnlib.modelops import (analysis_copy, capture, forward_batches, get_layer, inference_copy, input_shape,
                       model_device, norm_stats, as_image01, to_input)


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
def list_layers(model: nn.Module, shape=None) -> list[dict]:
    """Every layer that runs, in execution order, with what it outputs for one image.

    Each row: name, type, output_shape ([C, h, w] for maps, [F] for vectors), spatial (a map?),
    params (the layer's own parameters: the column sums to the model's total), rf_size and rf_stride:
    the receptive field of one output unit in input pixels (it can exceed the image: it counts
    padding), None for vectors. Where branches merge (a residual sum) the field is the largest over
    the paths (the largest field of an earlier map of the same size). Runs on `analysis_copy`, so a
    module called twice appears once per call (`relu.call1`, `relu.call2`); a block whose output is
    its last layer's output is not repeated. Parameters of modules that never run come last.
    """
    shape = input_shape(model, shape)
    net = analysis_copy(model, shape)
    x = torch.zeros(1, *shape, device=model_device(net))
    rf_of = {id(x): (1, 1)}     # tensor id -> (rf size, jump), both in input pixels
    seen_maps = [((shape[1], shape[2]), (1, 1))]
    keep, rows, counted = [x], [], set()

    def field_of(src: torch.Tensor | None) -> tuple[int, int]:
        if src is None:
            return seen_maps[-1][1]
        if id(src) in rf_of:
            return rf_of[id(src)]
        same = [f for hw, f in seen_maps if src.dim() == 4 and hw == tuple(src.shape[-2:])]  # merged branches
        return max(same) if same else seen_maps[-1][1]

    def hook(name, m, args, out):
        if not isinstance(out, torch.Tensor):
            return
        own = sum(p.numel() for p in m.parameters(recurse=False)) if id(m) not in counted else 0
        leaf = next(m.children(), None) is None
        if id(out) in rf_of and not own and not leaf:
            return  # a container handing on its child's output
        counted.add(id(m))
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        rf = None
        if out.dim() == 4:
            if leaf:                                # grow the field of its input
                size, jump = field_of(src)
                k, s = _kernel_stride(m, src, out)
                rf = (size + (k - 1) * jump, jump * s)
            else:                                   # block: its output merges what was made inside it
                rf = field_of(out)
            seen_maps.append((tuple(out.shape[-2:]), rf))
        rf_of[id(out)] = rf or (0, 0)
        keep.append(out)
        rows.append({"name": name, "type": type(m).__name__, "output_shape": list(out.shape[1:]),
                     "spatial": out.dim() == 4, "params": own,
                     "rf_size": None if rf is None else int(rf[0]), "rf_stride": None if rf is None else int(rf[1])})

    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(n, m, a, o))
               for n, m in net.named_modules() if n]
    try:
        net(x)
    except RuntimeError as e:
        raise CNNLibError(f"{type(model).__name__} cannot run on an input of shape {shape}: {str(e)[:200]}") from None
    finally:
        for h in handles:
            h.remove()
    for name, m in net.named_modules():       # parameters of modules the forward pass never called
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if own and id(m) not in counted:
            counted.add(id(m))
            rows.append({"name": name or "(model)", "type": type(m).__name__ + " (not run)", "output_shape": [],
                         "spatial": False, "params": own, "rf_size": None, "rf_stride": None})
    return rows


def conv_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def default_gradcam_layer(model: nn.Module) -> str:
    """The output of the last conv block: the last layer whose map is still larger than 1x1."""
    try:
        spatial = [r["name"] for r in list_layers(model)      # adaptive pools only resample: not a block output
                   if r["spatial"] and r["output_shape"][1] * r["output_shape"][2] > 1
                   and not r["type"].startswith("Adaptive")]
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


def initial_first_layer(meta: dict) -> torch.Tensor | None:
    """The first conv's kernels before the first training step (C_out, C_in, k, k), or None.

    Checkpoints written since format 2 store them (`initial_first_layer`); for older ones trained by
    `cnnlib train` they are re-created exactly: training seeds torch with config["seed"] and then builds
    the model, so building it again after the same seed gives the same random initialisation.
    """
    if meta.get("initial_first_layer") is not None:
        return torch.as_tensor(meta["initial_first_layer"])
    cfg, spec = meta.get("config") or {}, meta.get("model") or {}
    if "seed" not in cfg or not meta.get("history") or not spec.get("name"):
        return None
    rng = torch.get_rng_state()
    try:
        torch.manual_seed(int(cfg["seed"]))
        return first_conv(get_model(spec["name"], **spec.get("kwargs", {})))[1].weight.detach().clone()
    except CNNLibError:
        return None
    finally:
        torch.set_rng_state(rng)


def filter_history(meta: dict, model: nn.Module | None = None) -> list[tuple[int, torch.Tensor]]:
    """[(epoch, first-conv weight (C_out, C_in, k, k))] for the initialisation (epoch 0) and every epoch
    the history recorded; [] when there is no history (imported models)."""
    rows = [(int(r["epoch"]), torch.as_tensor(r["first_layer"])) for r in meta.get("history") or []
            if r.get("first_layer") is not None]
    if not rows:
        return []
    init = initial_first_layer(meta)
    if init is not None and tuple(init.shape) == tuple(rows[0][1].shape):
        rows.insert(0, (0, init.to(rows[0][1].dtype)))
    return rows


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
    net = analysis_copy(model)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    x = to_input(as_image01(x01).unsqueeze(0), mean, std)
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


def penultimate_features(model: nn.Module, x, batch_size: int | None = None, layer: str | None = None,
                         progress: str | None = None) -> dict:
    """The features the classifier reads, for images x (N, C, H, W) (uint8 or [0, 1]; tensor, array or
    memmap, streamed in batches): {"features": float32 (N, D), "preds": int64 (N,), "logits": float32 (N, K),
    "layer": name}. Default: the input of the last nn.Linear; `layer`: that layer's output, flattened."""
    if len(np.shape(x)) != 4:
        raise CNNLibError(f"expected images (N, C, H, W), got shape {tuple(np.shape(x))}")
    mean, std = norm_stats(getattr(model, "meta", None), model_device(model))
    net, channels_last = inference_copy(model) if layer is None else (analysis_copy(model), False)
    name = layer or penultimate_layer(net)
    n = len(x)
    feats, logits_all = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    with capture(net, [name], inputs=layer is None) as store:
        for i, logits in forward_batches(net, x, mean, std, batch_size, channels_last=channels_last,
                                         progress=progress):
            f = store.pop(name).flatten(1).float()                                       # (B, D)
            if i == 0:            # filled in place, as evaluate.run_split (no per-batch arrays pinning the heap)
                feats = np.empty((n, f.shape[1]), np.float32)                            # (N, D)
                logits_all = np.empty((n, logits.shape[1]), np.float32)                  # (N, K)
            feats[i:i + len(f)] = f.cpu().numpy()
            logits_all[i:i + len(f)] = logits.cpu().numpy()
    return {"features": feats, "preds": logits_all.argmax(1).astype(np.int64) if n else np.zeros(0, np.int64),
            "logits": logits_all if n else np.zeros(0, np.float32), "layer": name}


def embed(model: nn.Module, x_uint8, y=None, batch_size: int | None = None, method: str = "pca",
          layer: str | None = None) -> dict:
    """Penultimate features of a split (x (N, C, H, W) uint8 or [0, 1] floats) projected to 2-D.

    Returns xy float32 (N, 2), labels int64 (N,) or None, preds int64 (N,), correct bool (N,) or None,
    explained_variance (2,) (ratio of total variance), layer (the features are this layer's input
    when it is the classifier, else its output, flattened), dim (feature size).
    """
    if method != "pca":
        raise CNNLibError(f"unknown embedding method {method!r}; only 'pca' is available")
    if len(np.shape(x_uint8)) != 4 or len(x_uint8) < 2:
        raise CNNLibError(f"embed needs a batch of at least 2 images (N, C, H, W), got shape {tuple(np.shape(x_uint8))}")
    out = penultimate_features(model, x_uint8, batch_size, layer)
    feats, name = torch.from_numpy(out["features"]), out["layer"]
    xy, ratio = pca_2d(feats)
    preds = out["preds"]
    labels = None if y is None else torch.as_tensor(y).cpu().numpy().astype(np.int64)
    return {"xy": xy, "labels": labels, "preds": preds,
            "correct": None if labels is None else preds == labels,
            "explained_variance": ratio, "layer": name, "dim": int(feats.shape[1])}

