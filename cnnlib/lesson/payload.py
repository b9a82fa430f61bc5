"""What the lesson page knows, as one JSON-able dict: the model's facts, the parameters a unit's arithmetic
needs, the sampled test images with their labels and predictions, the confusion matrix, misclassified images
with saliency, the training history and the first-layer filters across epochs.

    payload = lesson_payload(model, layout, images=5, title=None)

Arrays travel as {"shape": [...], "b64": base64 of little-endian float32}; pictures as base64 PNG. Text taken
from the checkpoint (class names, layer names, the title) is plain strings here: the page shows it as text.
"""
from __future__ import annotations

import base64
import math

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError, DatasetError
from cnnlib.io.webpage import png
from cnnlib.lesson.graph import ACTIVATIONS, lesson_net, onnx_output_names, output_names

PNG_SIDE = 96           # saliency and filter pictures are drawn at least this wide


def f32(a) -> dict:
    a = np.ascontiguousarray(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype="<f4"))
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def _pair(v) -> list[int]:
    return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def _conv_padding(conv: nn.Conv2d) -> list[int]:
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [0, 0]
        k, d = _pair(conv.kernel_size), _pair(conv.dilation)
        return [d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2]
    return _pair(conv.padding)


def layer_params(net: nn.Module, layout: dict) -> list[dict]:
    """The layout's layers with what JavaScript needs to redo one unit of each."""
    rows = []
    for row in layout["layers"]:
        m, out = net.get_submodule(row["name"]), dict(row)
        if isinstance(m, nn.Conv2d):
            out.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_conv_padding(m),
                       dilation=_pair(m.dilation), groups=int(m.groups), weight=f32(m.weight),
                       bias=None if m.bias is None else f32(m.bias), padding_mode=str(m.padding_mode))
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            out.update(mean=f32(m.running_mean if m.running_mean is not None else torch.zeros(c)),
                       var=f32(m.running_var if m.running_var is not None else torch.ones(c)),
                       gamma=f32(m.weight if m.weight is not None else torch.ones(c)),
                       beta=f32(m.bias if m.bias is not None else torch.zeros(c)), eps=float(m.eps))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            out.update(pool="max" if isinstance(m, nn.MaxPool2d) else "avg", kernel=_pair(m.kernel_size),
                       stride=_pair(m.stride if m.stride is not None else m.kernel_size), padding=_pair(m.padding),
                       ceil_mode=bool(m.ceil_mode), count_include_pad=bool(getattr(m, "count_include_pad", True)),
                       dilation=_pair(getattr(m, "dilation", 1)))
        elif type(m).__name__ in ACTIVATIONS:
            out.update(activation=ACTIVATIONS[type(m).__name__],
                       negative_slope=float(getattr(m, "negative_slope", 0.01)), alpha=float(getattr(m, "alpha", 1.0)),
                       min_val=float(getattr(m, "min_val", -1.0)), max_val=float(getattr(m, "max_val", 1.0)),
                       approximate=str(getattr(m, "approximate", "none")))
        rows.append(out)
    return rows


def _demo_image(shape) -> np.ndarray:
    """A made-up picture (soft gradient, a disc, a bar) for a lesson whose checkpoint's test data is missing."""
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    r = np.clip(0.2 + 0.6 * xx, 0, 1)
    g = np.clip(0.3 + 0.5 * yy, 0, 1)
    b = (((yy - 0.5) ** 2 + (xx - 0.4) ** 2) < 0.06).astype(float) * 0.8 + 0.1
    rgb = np.stack([r, g, b])
    rgb[:, int(h * 0.7):int(h * 0.8), int(w * 0.1):int(w * 0.9)] = 0.95
    rgb = rgb if c == 3 else rgb.mean(0, keepdims=True)
    return (rgb * 255).round().astype(np.uint8)


def sample_images(meta: dict, per_class: int, seed: int = 0):
    """(x uint8 (n, C, H, W), labels (n,) or None, stored predictions (n,) or None, note) for the lesson."""
    from cnnlib.data.spec import load_checkpoint_split
    try:
        x, y = load_checkpoint_split(meta, "test")
    except (DatasetError, CNNLibError, OSError) as e:
        note = f"The test images are not on this computer ({str(e).splitlines()[0][:160]}): upload your own."
        return _demo_image(meta["input_shape"])[None], None, None, note
    y = np.asarray(y)
    stored = (meta.get("test_predictions") or {}).get("preds")
    stored = np.asarray(stored).astype(np.int64) if stored is not None and len(stored) == len(y) else None
    rng = np.random.default_rng(seed)
    picked = []
    for k in range(len(meta["classes"])):
        idx = np.flatnonzero(y == k)
        if stored is not None:      # half of them misclassified where there are such, so the errors have examples
            wrong, right = idx[stored[idx] != k], idx[stored[idx] == k]
            take_wrong = rng.permutation(wrong)[:per_class // 2]
            idx = np.concatenate([take_wrong, rng.permutation(right)[:per_class - len(take_wrong)]])
            idx = np.concatenate([idx, rng.permutation(np.setdiff1d(np.flatnonzero(y == k), idx))])[:per_class]
        else:
            idx = rng.permutation(idx)[:per_class]
        picked.extend(sorted(idx.tolist()))
    if not picked:
        return _demo_image(meta["input_shape"])[None], None, None, "The test split is empty: upload your own images."
    picked = np.array(picked)
    return (np.asarray(x[picked]), y[picked], None if stored is None else stored[picked],
            f"{per_class} test images per class, drawn at random from the checkpoint's test split.")


@torch.no_grad()
def torch_probabilities(model: nn.Module, x_uint8: np.ndarray, net: nn.Module | None = None) -> np.ndarray:
    """softmax of lesson_net on uint8 images: the numbers the page's classify() must reproduce."""
    net = net or lesson_net(model)
    out = []
    for i in range(0, len(x_uint8), 32):
        out.append(torch.softmax(net(torch.from_numpy(np.asarray(x_uint8[i:i + 32])).float() / 255.0), 1))
    return torch.cat(out).numpy().astype(np.float64)


def confusion(meta: dict, labels, preds) -> dict:
    """The confusion matrix of the stored test predictions (or of the sampled images), cells -> image indices."""
    k = len(meta["classes"])
    stored = meta.get("test_predictions") or {}
    if stored.get("targets") is not None and stored.get("preds") is not None:
        t, p = np.asarray(stored["targets"]).astype(np.int64), np.asarray(stored["preds"]).astype(np.int64)
        source = f"the checkpoint's stored predictions on its {len(t)} test images"
    elif labels is not None:
        t, p = np.asarray(labels), np.asarray(preds)
        source = f"the {len(t)} images in this lesson"
    else:
        return {"matrix": None, "cells": {}, "source": "no labelled test images"}
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (t.clip(0, k - 1), p.clip(0, k - 1)), 1)
    cells = {}
    if labels is not None:
        for i, (a, b) in enumerate(zip(labels, preds)):
            cells.setdefault(f"{int(a)},{int(b)}", []).append(i)
    return {"matrix": m.tolist(), "cells": cells, "source": source}


def _upscale(a: np.ndarray, side: int = PNG_SIDE) -> np.ndarray:
    """Nearest-neighbour enlargement of a small (H, W[, 3]) picture so it shows crisp, not blurred."""
    f = max(1, math.ceil(side / max(a.shape[0], 1)))
    return a.repeat(f, 0).repeat(f, 1)


def saliency(model: nn.Module, x_uint8: np.ndarray, labels, preds, limit: int) -> list[dict]:
    """Grad-CAM and Integrated Gradients of the predicted and the true class for up to `limit` misclassified
    images (one attribute_many call per method: one analysis copy of the network each)."""
    from cnnlib.explain.attribution import attribute_many
    if labels is None or limit <= 0:
        return []
    wrong = [i for i in range(len(labels)) if int(labels[i]) != int(preds[i])][:limit]
    if not wrong:
        return []
    steps = 32 if model.meta["input_shape"][1] <= 64 else 12
    xs = [torch.from_numpy(np.asarray(x_uint8[i])).float() / 255.0 for i in wrong for _ in (0, 1)]
    targets = [int(t) for i in wrong for t in (preds[i], labels[i])]
    maps = {}
    for method in ("gradcam", "integrated_gradients"):
        opts = {"n_steps": steps, "internal_batch_size": steps} if method != "gradcam" else {}
        maps[method] = attribute_many(model, xs, method, targets, **opts)
    out = []
    for j, i in enumerate(wrong):
        pics = {f"{m}:{which}": png(_upscale(maps[m][2 * j + k]["overlay"]))
                for m in maps for k, which in enumerate(("predicted", "true"))}
        out.append({"image": i, "true": int(labels[i]), "predicted": int(preds[i]), "maps": pics})
    return out


def filters_over_epochs(meta: dict, model: nn.Module, first_conv: str) -> list[dict]:
    """[{"epoch", "png"}]: the first conv's kernels as one tiled picture per recorded epoch (the trained ones
    when the checkpoint recorded none)."""
    from cnnlib.models.anatomy import filter_history, first_layer_filters
    rows = filter_history(meta, model) or [(None, model.get_submodule(first_conv).weight.detach())]
    out = []
    for epoch, w in rows[:40]:
        tiles = first_layer_filters(w)                      # (N, k, k, C) in [0, 1]
        n, k = tiles.shape[0], tiles.shape[1]
        cols = min(n, 16)
        grid = np.ones(((n + cols - 1) // cols * (k + 1), cols * (k + 1), 3), np.float32)
        for j, t in enumerate(tiles):
            r, c = divmod(j, cols)
            grid[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = t if t.shape[-1] == 3 else t.repeat(3, -1)
        f = max(1, 8 // max(k // 3, 1))
        out.append({"epoch": epoch, "png": png(grid.repeat(f, 0).repeat(f, 1).__mul__(255).round()), "count": int(n)})
    return out


def history_rows(meta: dict) -> list[dict]:
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [{k: float(r[k]) for k in keys if isinstance(r.get(k), (int, float))} for r in meta.get("history") or []]


def _head_scale(model: nn.Module, layout: dict, lin: nn.Linear, x_uint8) -> float | None:
    """The factor the network applies after its last Linear (resnet9: 0.125; most: 1.0), or None when the
    logits are not a multiple of the Linear's output (the page then shows only the model's own scores)."""
    from cnnlib.lesson.graph import runner
    outs = runner(model, layout)(x_uint8)
    with torch.no_grad():
        fc = lin(torch.from_numpy(outs[f"{layout['head']['name']}:input"])[None])[0].double()
    logits = torch.from_numpy(outs["logits"]).double()
    scale = float((fc @ logits) / (fc @ fc).clamp_min(1e-30))
    return float(f"{scale:.6g}") if torch.allclose(fc * scale, logits, rtol=1e-4, atol=1e-5) else None


def lesson_payload(model: nn.Module, layout: dict, images: int = 5, title: str | None = None,
                   saliency_limit: int | None = None) -> dict:
    """Everything the page shows, from the checkpoint and from torch (see the module docstring), and under
    "sample" the images as uint8 (N, C, H, W), their labels and predictions (for make_exercises; not JSON)."""
    meta = model.meta
    wrapper = lesson_net(model)
    net = wrapper.net
    x, labels, stored, note = sample_images(meta, max(1, int(images)))
    probs = torch_probabilities(model, x, wrapper)
    preds = probs.argmax(1)
    head = None
    if layout.get("head"):
        lin = net.get_submodule(layout["head"]["name"])
        head = {"name": layout["head"]["name"], "weight": f32(lin.weight),
                "bias": None if lin.bias is None else f32(lin.bias), "scale": _head_scale(model, layout, lin, x[0])}
    c = meta["input_shape"][0]
    limit = saliency_limit if saliency_limit is not None else (12 if meta["input_shape"][1] <= 64 else 3)
    name = (meta.get("model") or {}).get("name", type(model).__name__)
    pre = meta.get("preprocessing") or {"resize": 0, "crop": 0}
    payload = {
        "title": title or f"Inside {name}",
        "model": name,
        "dataset": (meta.get("data") or {}).get("name", ""),
        "classes": [str(k) for k in meta["classes"]],
        "input_shape": [int(s) for s in meta["input_shape"]],
        "preprocessing": {"resize": int(pre.get("resize") or 0), "crop": int(pre.get("crop") or 0),
                          "mean": [float(v) for v in meta["normalization"]["mean"]],
                          "std": [float(v) for v in meta["normalization"]["std"]]},
        "layers": layer_params(net, layout),
        "outputs": output_names(layout),
        "onnx_outputs": onnx_output_names(layout),
        "editable": layout["editable"],
        "fed": layout["fed"],
        "head": head,
        "images": [{"png": png(im), "label": None if labels is None else int(labels[i]),
                    "stored_prediction": None if stored is None else int(stored[i]), "prediction": int(preds[i]),
                    "probabilities": [float(p) for p in probs[i]]} for i, im in enumerate(x)],
        "images_note": note,
        "confusion": confusion(meta, labels, preds),
        "misclassified": saliency(model, x, labels, preds, limit),
        "history": history_rows(meta),
        "filters": filters_over_epochs(meta, net, layout["editable"]),
        "metrics": {k: float(v) for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))},
        "channels": c,
    }
    payload["sample"] = (x, labels, preds, probs)
    return payload
