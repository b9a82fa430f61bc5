"""The image through every layer: a few of the most active channels of each spatial layer, down to the class
scores, for the dashboard's "Through the layers" page and the lesson's overview.

    layer_strip(model, x01, per_layer=4, max_layers=16) -> {"layers": [{"layer", "type", "shape",
        "channels", "means", "maps", "rf_size"}], "logits", "probs", "classes", "predicted"}

`model` is a loaded model (cnnlib.inference.load_model, or any nn.Module with `model.meta = {"input_shape",
"normalization", "classes"}`) and x01 one image float (C, H, W) in [0, 1] (uint8 accepted). The model, its
mode and its hooks are left alone: the pass runs on a private copy (cnnlib.modelops).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import list_layers
from cnnlib.modelops import analysis_copy, model_device, norm_stats, to_input
from cnnlib.teach.arithmetic import leaf_trace, own_image

__all__ = ["layer_strip"]

_NOT_SHOWN_WHEN_LONG = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)   # pre-activation maps


# -----------------------------------------------------------------------------

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
