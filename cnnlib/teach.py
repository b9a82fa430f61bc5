"""Teaching CNN internals on the learner's own model: the API the dashboard's teaching pages build on.

Every function takes a loaded model (cnnlib.inference.load_model, or any nn.Module with `model.meta =
{"input_shape", "normalization", "classes"}`: cnnlib's simple_cnn / resnet9 and imported torchvision / timm
networks alike) and one image x01: float (C, H, W) in [0, 1] (uint8 accepted), a test image or an upload.
None of them changes the model, its mode or its hooks: each works on a private copy (cnnlib.modelops).

1. The forward pass with its numbers (cnnlib.arithmetic)
    unit_arithmetic(model, x01, layer, channel, y, x) -> {"layer", "steps": [normalize?, conv, batchnorm?,
                                                          activation?, pool?], ...}; each step has its
                                                          inputs, "result" and the forward hook's "hook"
    head_arithmetic(model, x01, target=None, top=10)  -> last Linear's input, top weight x input terms, bias,
                                                          logits, softmax with exp(logit - max), probs
    conv_output_size(size, kernel, stride=1, padding=0, dilation=1) -> int
    toy_convolution(input (H, W), kernel (k, k), stride=1, padding=0) -> output + per-cell index lists

2. The image through every layer (here)
    layer_strip(model, x01, per_layer=4, max_layers=16) -> {"layers": [{"layer", "type", "shape",
        "channels", "means", "maps", "rf_size"}], "logits", "probs", "classes", "predicted"}

3. What a channel wants to see (cnnlib.featurevis)
    visualize_channel(model, layer, channel=None, target_class=None, steps=128, seed=0, progress=None)
        -> {"image" (C, H, W) in [0, 1], "start", "objective_history", "start_objective", "final_objective", ...}
    top_activating(model, x_test, layer, channel, k=9) -> int64 indices, most active first
    channel_scores(model, x_test, layer, channel)      -> float32 (N,) mean activation per image

4. What the training loop sees (here)
    training_batch_steps(meta, x_uint8 (B, C, H, W), seed=0) -> {"original", "padded", "cropped", "offsets",
        "flipped", "flip", "normalized", "mean", "std", "padding", "augment"}

5. Are these saliency maps about the model? (cnnlib.sanity, Adebayo et al. 2018)
    sanity_check(model, x01, method, target=None, seed=0) -> [{"step": "trained" | layer randomised,
        "randomized", "heatmap" (H, W), "spearman", "ssim", "target", "method"}]
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .arithmetic import conv_output_size, head_arithmetic, leaf_trace, own_image, toy_convolution, unit_arithmetic
from .config import TrainConfig
from .data import augment_batch
from .errors import CNNLibError
from .featurevis import channel_scores, top_activating, visualize_channel
from .interpret import list_layers
from .modelops import analysis_copy, model_device, norm_stats, to_input
from .sanity import sanity_check

__all__ = ["channel_scores", "conv_output_size", "head_arithmetic", "layer_strip", "sanity_check",
           "toy_convolution", "top_activating", "training_batch_steps", "unit_arithmetic", "visualize_channel"]

_NOT_SHOWN_WHEN_LONG = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)   # pre-activation maps


# -----------------------------------------------------------------------------
# 2. the image through every layer

def _strip_rows(net: nn.Module, model: nn.Module, max_layers: int) -> list[dict]:
    """The spatial layers worth a row, in execution order: all of them for small networks; for long ones
    only activations, pools and block outputs, then evenly spaced (first and last kept)."""
    rows = [r for r in list_layers(model) if r["spatial"] and r["output_shape"][1] * r["output_shape"][2] > 1]
    if len(rows) > max_layers:
        rows = [r for r in rows if not isinstance(net.get_submodule(r["name"]), _NOT_SHOWN_WHEN_LONG)] or rows
    if len(rows) > max_layers:
        keep = np.unique(np.round(np.linspace(0, len(rows) - 1, max(max_layers, 1))).astype(int))
        rows = [rows[i] for i in keep]
    return rows


def layer_strip(model: nn.Module, x01, per_layer: int = 4, max_layers: int = 16) -> dict:
    """One image through the network: for each shown spatial layer (execution order) its `per_layer` most
    active channels (by mean activation) as maps scaled to [0, 1] each, and the final class scores.

    Returns {"layers": [{"layer": name, "type", "shape": [C, h, w], "channels": [int] (most active first),
    "means": [float] (their mean activations), "maps": float32 (n, h, w) in [0, 1] (constant maps: 0.5),
    "rf_size": receptive field in input pixels}], "logits": float32 (K,), "probs": float32 (K,),
    "classes": [str], "predicted": int}.
    """
    if per_layer < 1:
        raise CNNLibError(f"per_layer must be at least 1, got {per_layer}")
    net = analysis_copy(model)
    rows = _strip_rows(net, model, max_layers)
    names = {r["name"] for r in rows}
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    x = to_input(own_image(x01).unsqueeze(0), mean, std)
    # clones at hook time: a later in-place op (torchvision's `out += identity`) cannot change what is shown
    with torch.no_grad(), leaf_trace(net, lambda n, m, out, calls: True, sorted(names)) as calls:
        logits = net(x)[0].float().cpu()
    seen = {}
    for c in calls:                                   # the first call of each layer
        seen.setdefault(c["name"], c["output"])
    layers = []
    for r in rows:
        a = seen[r["name"]][0].float().cpu()                                         # (C, h, w)
        means = a.mean((1, 2))
        top = torch.argsort(means, descending=True, stable=True)[:per_layer]
        maps = a[top]
        lo, hi = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
        span = hi - lo
        maps = torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                           torch.full_like(maps, 0.5))
        layers.append({"layer": r["name"], "type": r["type"], "shape": list(a.shape), "channels": top.tolist(),
                       "means": means[top].tolist(), "maps": maps.numpy().astype(np.float32), "rf_size": r["rf_size"]})
    probs = torch.softmax(logits, 0)
    k = logits.numel()
    classes = list((getattr(model, "meta", None) or {}).get("classes") or [str(i) for i in range(k)])
    return {"layers": layers, "logits": logits.numpy(), "probs": probs.numpy(), "classes": classes,
            "predicted": int(logits.argmax())}


# -----------------------------------------------------------------------------
# 4. what the training loop sees

def training_batch_steps(meta: dict, x_uint8, seed: int = 0) -> dict:
    """A batch x_uint8 (B, C, H, W) through the checkpoint's augmentation and normalization, stage by stage.

    The recipe is meta["config"] (augment, crop_padding, flip; TrainConfig's defaults where missing). The
    stages come from cnnlib.data.augment_batch itself, called twice with generators seeded alike: once with
    flip=False (crop only) and once with the recipe's flip. The crop offsets are drawn first, so both calls
    crop the same windows. Returns {"original" uint8 (B, C, H, W), "padded" uint8 (B, C, H + 2p, W + 2p)
    (zeros around), "cropped" uint8, "offsets" int64 (B, 2) (row, col) of each crop window in `padded`,
    "flipped" uint8 (exactly what training feeds on for this seed), "flip" bool (B,) (the window was
    mirrored; False also when mirroring changes nothing), "normalized" float32 (B, C, H, W) =
    (flipped / 255 - mean) / std, "mean" (C,), "std" (C,), "padding", "augment", "flip_enabled"}.
    """
    x = torch.as_tensor(np.array(x_uint8)) if not isinstance(x_uint8, torch.Tensor) else x_uint8.cpu()
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise CNNLibError(f"expected a uint8 batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    defaults = TrainConfig()
    cfg = (meta or {}).get("config") or {}
    augment = bool(cfg.get("augment", defaults.augment))
    padding = int(cfg.get("crop_padding", defaults.crop_padding)) if augment else 0
    flip = bool(cfg.get("flip", defaults.flip)) and augment
    if augment:
        cropped = augment_batch(x, padding, flip=False, generator=torch.Generator().manual_seed(int(seed)))
        flipped = augment_batch(x, padding, flip=flip, generator=torch.Generator().manual_seed(int(seed)))
    else:
        cropped = flipped = x.clone()
    padded = torch.nn.functional.pad(x, (padding,) * 4)                          # (B, C, H + 2p, W + 2p)
    h, w = x.shape[-2:]
    offsets = torch.zeros(len(x), 2, dtype=torch.int64)
    for i in range(len(x)):                      # find each window (read back, not re-drawn)
        offsets[i] = torch.tensor(next((dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                                       if torch.equal(padded[i, :, dy:dy + h, dx:dx + w], cropped[i])))
    mean, std = norm_stats(meta)
    return {"original": x.numpy(), "padded": padded.numpy(), "cropped": cropped.numpy(), "offsets": offsets.numpy(),
            "flipped": flipped.numpy(), "flip": np.array([not torch.equal(f, c) for f, c in zip(flipped, cropped)]),
            "normalized": to_input(flipped, mean, std).numpy(), "mean": mean.flatten().numpy(),
            "std": std.flatten().numpy(), "padding": padding, "augment": augment, "flip_enabled": flip}
