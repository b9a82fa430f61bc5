"""The forward pass written out with its numbers: one unit through conv -> BatchNorm -> activation -> pool,
and the classifier head through softmax. Every number comes from the real model.

    unit_arithmetic(model, x01, "conv2", channel=5, y=3, x=7)   one unit of a conv layer (or of the conv that
                                                                starts a block), step by step
    head_arithmetic(model, x01, target=None, top=10)            last Linear: weight x input, bias, logits, softmax
    (conv_output_size and toy_convolution, for the widget: cnnlib.teach.toy)

unit_arithmetic returns {"layer": the conv's name, "requested": the name asked for, "channel", "y", "x",
"input_shape" [C_in, H, W] of the conv's input, "output_shape" [C_out, H', W'], "steps": [step, ...]}.
Every step is a dict with "kind", "layer" (module name in the analysis copy; a module called twice per
forward pass shows as `relu.call1`, `relu.call2`), "type", its inputs, "result" (the arithmetic, float64)
and "hook" (the value a forward hook captured at that module for the same unit: result == hook to float
precision). The same step dicts are also under their kind: out["conv"], out["batchnorm"], ... Kinds:

    "normalize"   only when the conv reads the network input: raw (C_g, k, k) pixels in [0, 1] (0 where padding),
                  mean (C_g,), std (C_g,) -> result (C_g, k, k) = (raw - mean) / std; hook: the conv's input patch
    "conv"        stride, padding, dilation, groups, input_channels (the C_g input channels this output channel
                  reads), rows (k,) / cols (k,) input coordinates (outside 0..H-1: zero padding), padding_mask
                  (k, k) bool, patch (C_g, k, k) (zeros where padding), kernel (C_g, k, k), products (C_g, k, k),
                  sum, bias (None: the conv has none) -> result = sum + bias
    "batchnorm"   input, mean, var, eps, std = sqrt(var + eps), gamma, beta, normalized = (input - mean) / std
                  -> result = gamma * normalized + beta; statistics: "running" (eval) or "batch"
    "activation"  formula (text), input -> result
    "pool"        kernel_size, stride, padding, window (py, px) (the first pool output whose window holds the
                  unit; windows lists all of them), rows, cols, values (k, k) of the pooled map (NaN where
                  padding), padding_mask, unit_at (i, j) (the unit's place in the window), argmax (i, j) (max
                  pool) -> result = max (or mean); hook: the pool output at (channel, py, px)

head_arithmetic returns {"layer" (the last Linear), "features_from" (the layer whose output is the Linear's input)
"features_shape", "input" (D,), "target", "class", "weights" (D,) the target's row, "contributions" (D,) =
weights * input, "top": [{"index", "unit" (e.g. "pool2[c=3, y=1, x=2]"), "input", "weight", "contribution"}]
sorted by |contribution|, "rest" (the other contributions' sum), "sum", "bias", "fc_output" = sum + bias,
"scale" (a factor the model applies after the Linear, 1.0 for most), "logit", "logits" (K,) for every class,
"model_logits" (K,) (the real forward), "softmax": {"max", "shifted" (K,), "exp" (K,), "sum", "probs" (K,)},
"probs" (K,), "model_probs" (K,), "classes"}.

Nothing here touches the model it is given: the arithmetic reads a private `modelops.analysis_copy`, whose
forward hooks are removed when the pass ends (also when it raises).
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import penultimate_layer
from cnnlib.modelops import analysis_copy, as_image01, get_layer, model_device, norm_stats, to_input

_NORMS = (nn.BatchNorm2d,)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.GELU, nn.Hardswish,
                nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.PReLU)
_PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.Flatten)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


# -----------------------------------------------------------------------------
# tracing: which leaf modules ran, in order, with copies of what they saw

def _leaves(net: nn.Module):
    return [(n, m) for n, m in net.named_modules() if n and next(m.children(), None) is None]


@contextmanager
def leaf_trace(net: nn.Module, keep, names=None):
    """Forward hooks on every leaf module (or on the modules `names`), yielding a list that fills with one
    record per call, in execution order: {"name", "module", "in_ref", "out_ref"} (the tensors themselves,
    for identity checks) plus "input" / "output" (detached clones, safe from later in-place ops like
    torchvision's `out += identity`) when keep(name, module, output, calls_so_far) is true. The hooks are
    removed when the block ends (also when the forward pass raises)."""
    calls, handles = [], []

    def hook(name, m, args, out):
        if not isinstance(out, torch.Tensor):
            return
        inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
        rec = {"name": name, "module": m, "in_ref": inp, "out_ref": out}
        if keep(name, m, out, calls):
            rec["input"] = None if inp is None else inp.detach().clone()
            rec["output"] = out.detach().clone()
        calls.append(rec)
    try:
        for name, m in (_leaves(net) if names is None else [(n, net.get_submodule(n)) for n in names]):
            handles.append(m.register_forward_hook(lambda m, a, o, n=name: hook(n, m, a, o)))
        yield calls
    finally:
        for h in handles:
            h.remove()


def own_image(x01) -> torch.Tensor:
    """as_image01 on a private copy (a read-only memmap row is copied first) -> float32 (C, H, W)."""
    return as_image01(x01 if isinstance(x01, torch.Tensor) else np.array(x01))


def _prepare(model: nn.Module, x01) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(analysis copy, x01 (1, C, H, W), normalized input (1, C, H, W), mean (C,), std (C,))."""
    net = analysis_copy(model)
    meta = getattr(model, "meta", None)
    mean, std = norm_stats(meta, model_device(net))
    img = own_image(x01).to(model_device(net)).unsqueeze(0)                   # (1, C, H, W) in [0, 1]
    if img.shape[1] != mean.shape[1]:
        raise CNNLibError(f"the image has {img.shape[1]} channels but the model takes {mean.shape[1]}")
    return net, img, to_input(img, mean, std), mean.flatten(), std.flatten()


# -----------------------------------------------------------------------------
# one unit, step by step

def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(top, left) zero padding of a conv; 'same' pads total d(k-1) with the smaller half first, as PyTorch."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        k, d = _pair(conv.kernel_size), _pair(conv.dilation)
        return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    return _pair(conv.padding)


def _conv_step(rec: dict, channel: int, y: int, x: int) -> dict:
    conv: nn.Conv2d = rec["module"]
    if conv.padding_mode != "zeros":
        raise CNNLibError(f"unit_arithmetic writes out zero-padded convolutions only; {rec['name']!r} pads with "
                          f"{conv.padding_mode!r}")
    inp = rec["input"][0].double()                                  # (C_in, H, W): what the conv really read
    (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    ph, pw = _conv_padding(conv)
    per_group = conv.out_channels // conv.groups
    g = channel // per_group                                        # the group this output channel belongs to
    cin_g = conv.in_channels // conv.groups
    in_ch = list(range(g * cin_g, (g + 1) * cin_g))
    rows = [y * sh - ph + i * dh for i in range(kh)]                # input coordinates the kernel covers
    cols = [x * sw - pw + j * dw for j in range(kw)]
    h, w = inp.shape[-2:]
    inside = torch.tensor([[0 <= r < h and 0 <= c < w for c in cols] for r in rows])          # (kh, kw)
    patch = torch.zeros(cin_g, kh, kw, dtype=torch.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if inside[i, j]:
                patch[:, i, j] = inp[in_ch, r, c]
    kernel = conv.weight.detach()[channel].double().cpu()          # (C_in / groups, kh, kw)
    products = patch * kernel
    total = float(products.sum())
    bias = None if conv.bias is None else float(conv.bias.detach()[channel])
    return {"kind": "conv", "layer": rec["name"], "type": type(conv).__name__, "kernel_size": (kh, kw),
            "stride": (sh, sw), "padding": (ph, pw), "dilation": (dh, dw), "groups": int(conv.groups),
            "input_channels": in_ch, "rows": rows, "cols": cols, "padding_mask": (~inside).numpy(),
            "patch": patch.numpy(), "kernel": kernel.numpy(), "products": products.numpy(), "sum": total,
            "bias": bias, "result": total + (bias or 0.0),
            "hook": float(rec["output"][0, channel, y, x])}


def _normalize_step(img: torch.Tensor, conv_step: dict, mean: torch.Tensor, std: torch.Tensor,
                    conv_input: torch.Tensor) -> dict:
    """The raw pixels under the kernel -> (raw - mean) / std, the patch the first conv reads."""
    ch, rows, cols, pad = conv_step["input_channels"], conv_step["rows"], conv_step["cols"], conv_step["padding_mask"]
    raw = np.zeros(conv_step["patch"].shape)
    hook = np.zeros(conv_step["patch"].shape)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if not pad[i, j]:
                raw[:, i, j] = img[0, ch, r, c].double().cpu().numpy()
                hook[:, i, j] = conv_input[0, ch, r, c].double().cpu().numpy()
    m, s = mean[ch].double().cpu().numpy(), std[ch].double().cpu().numpy()
    result = np.where(pad[None], 0.0, (raw - m[:, None, None]) / s[:, None, None])   # padding is added after
    return {"kind": "normalize", "layer": "(input)", "type": "Normalize", "raw": raw, "mean": m, "std": s,
            "padding_mask": pad, "result": result, "hook": hook}


def _bn_step(rec: dict, channel: int, y: int, x: int, value: float) -> dict:
    bn: nn.BatchNorm2d = rec["module"]
    if bn.running_mean is not None and not bn.training:
        mean, var, stats = float(bn.running_mean[channel]), float(bn.running_var[channel]), "running"
    else:                                         # no running statistics: this batch's (one image), biased var
        a = rec["input"][:, channel].double()
        mean, var, stats = float(a.mean()), float(a.var(unbiased=False)), "batch"
    gamma = 1.0 if bn.weight is None else float(bn.weight.detach()[channel])
    beta = 0.0 if bn.bias is None else float(bn.bias.detach()[channel])
    std = math.sqrt(var + bn.eps)
    normalized = (value - mean) / std
    return {"kind": "batchnorm", "layer": rec["name"], "type": type(bn).__name__, "statistics": stats,
            "input": value, "mean": mean, "var": var, "eps": float(bn.eps), "std": std, "gamma": gamma,
            "beta": beta, "normalized": normalized, "result": gamma * normalized + beta,
            "hook": float(rec["output"][0, channel, y, x])}


def _activation(m: nn.Module, v: float) -> tuple[str, float]:
    """(formula, value) of an activation module at v, written out for the common ones."""
    sig = lambda t: 1.0 / (1.0 + math.exp(-t))  # noqa: E731
    if type(m) is nn.ReLU:
        return "max(0, x)", max(0.0, v)
    if type(m) is nn.ReLU6:
        return "min(max(0, x), 6)", min(max(0.0, v), 6.0)
    if type(m) is nn.LeakyReLU:
        return f"x if x > 0 else {m.negative_slope:g} * x", v if v > 0 else m.negative_slope * v
    if type(m) is nn.SiLU:
        return "x * sigmoid(x)", v * sig(v)
    if type(m) is nn.Sigmoid:
        return "1 / (1 + exp(-x))", sig(v)
    if type(m) is nn.Tanh:
        return "tanh(x)", math.tanh(v)
    if type(m) is nn.GELU and m.approximate == "none":
        return "x * (1 + erf(x / sqrt(2))) / 2", v * (1 + math.erf(v / math.sqrt(2))) / 2
    if type(m) is nn.Hardswish:
        return "x * min(max(x + 3, 0), 6) / 6", v * min(max(v + 3, 0.0), 6.0) / 6
    if type(m) is nn.ELU:
        return f"x if x > 0 else {m.alpha:g} * (exp(x) - 1)", v if v > 0 else m.alpha * math.expm1(v)
    with torch.no_grad():                          # anything else: (a float64 copy of) the module on that number
        one = torch.full((1, 1, 1, 1), v, dtype=torch.float64)
        return type(m).__name__ + "(x)", float(copy.deepcopy(m).double()(one))


def _activation_step(rec: dict, channel: int, y: int, x: int, value: float) -> dict:
    formula, result = _activation(rec["module"], value)
    return {"kind": "activation", "layer": rec["name"], "type": type(rec["module"]).__name__, "formula": formula,
            "input": value, "result": result, "hook": float(rec["output"][0, channel, y, x])}


def _pool_step(rec: dict, channel: int, y: int, x: int) -> dict:
    pool = rec["module"]
    (kh, kw), (ph, pw) = _pair(pool.kernel_size), _pair(pool.padding)
    (sh, sw) = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    (dh, dw) = _pair(getattr(pool, "dilation", 1))
    out = rec["output"][0, channel]                                   # (H'', W'')
    fmap = rec["input"][0, channel].double()                          # the pooled map (H', W')
    h, w = fmap.shape
    ys = [py for py in range(out.shape[0]) if any(py * sh - ph + i * dh == y for i in range(kh))]
    xs = [px for px in range(out.shape[1]) if any(px * sw - pw + j * dw == x for j in range(kw))]
    if not ys or not xs:
        return {}                                 # the unit falls in no window (a floor-mode edge): no pool step
    py, px = ys[0], xs[0]
    rows = [py * sh - ph + i * dh for i in range(kh)]
    cols = [px * sw - pw + j * dw for j in range(kw)]
    inside = np.array([[0 <= r < h and 0 <= c < w for c in cols] for r in rows])
    values = np.full((kh, kw), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if inside[i, j]:
                values[i, j] = float(fmap[r, c])
    step = {"kind": "pool", "layer": rec["name"], "type": type(pool).__name__, "kernel_size": (kh, kw),
            "stride": (sh, sw), "padding": (ph, pw), "window": (py, px), "windows": [(a, b) for a in ys for b in xs],
            "rows": rows, "cols": cols, "values": values, "padding_mask": ~inside,
            "unit_at": (rows.index(y), cols.index(x)), "hook": float(out[py, px])}
    if isinstance(pool, nn.MaxPool2d):
        i, j = np.unravel_index(np.nanargmax(values), values.shape)
        step.update(argmax=(int(i), int(j)), result=float(values[i, j]))
    else:                                         # AvgPool2d: zeros for padding, PyTorch's divisor
        in_pad = np.array([[-ph <= r < h + ph and -pw <= c < w + pw for c in cols] for r in rows])
        divisor = pool.divisor_override or int((in_pad if pool.count_include_pad else inside).sum())
        step.update(divisor=divisor, result=float(np.nansum(values)) / divisor)
    return step


def unit_arithmetic(model: nn.Module, x01, layer: str, channel: int, y: int, x: int) -> dict:
    """One unit (channel, y, x) of a Conv2d layer (or of the first conv that runs inside block `layer`),
    written out for image x01 (C, H, W) in [0, 1]: the input patch it sees, kernel, products, sum, bias, then
    the BatchNorm, activation and pool that directly follow it in execution order (each only if its input is
    the previous step's output). See the module docstring for the returned dict."""
    net, img, xin, mean, std = _prepare(model, x01)
    get_layer(net, layer)
    in_block = lambda n: n == layer or n.startswith(layer + ".")  # noqa: E731

    def keep(name, m, out, calls):   # the chosen conv and the three leaf calls after it
        first = next((i for i, c in enumerate(calls) if "output" in c), None)
        return (first is None and isinstance(m, nn.Conv2d) and in_block(name)) or \
            (first is not None and len(calls) - first <= 3)
    with torch.no_grad(), leaf_trace(net, keep) as calls:
        net(xin)
    recs = [c for c in calls if "output" in c]
    if not recs:
        kind = type(get_layer(net, layer)).__name__
        raise CNNLibError(f"{layer!r} ({kind}) runs no Conv2d; pick a Conv2d layer or a block that starts with one")
    conv_rec = recs[0]
    c_out, h_out, w_out = conv_rec["output"].shape[1:]
    if not (0 <= channel < c_out and 0 <= y < h_out and 0 <= x < w_out):
        raise CNNLibError(f"unit (channel {channel}, y {y}, x {x}) is outside {conv_rec['name']}'s output "
                          f"{c_out}x{h_out}x{w_out}")
    conv = _conv_step(conv_rec, channel, y, x)
    steps = [conv]
    if conv_rec["in_ref"] is xin:                  # the conv reads the image: show the normalization first
        steps.insert(0, _normalize_step(img, conv, mean, std, xin))
    prev, stage = conv_rec, 0                      # stages: 1 norm, 2 activation, 3 pool (each at most once)
    for rec in recs[1:]:
        m = rec["module"]
        kind = 1 if isinstance(m, _NORMS) else 2 if isinstance(m, _ACTIVATIONS) else 3 if isinstance(m, _POOLS) else 0
        # the next step must read exactly what the previous one wrote: the same tensor, not changed in place
        # since (torchvision's `out += identity` adds the shortcut into bn2's output before the ReLU)
        if rec["in_ref"] is not prev["out_ref"] or not torch.equal(rec["input"], prev["output"]) or kind <= stage:
            break
        value = steps[-1]["hook"]                  # each step starts from the real model's previous output
        step = (_bn_step(rec, channel, y, x, value) if kind == 1 else
                _activation_step(rec, channel, y, x, value) if kind == 2 else _pool_step(rec, channel, y, x))
        if not step:
            break
        steps.append(step)
        prev, stage = rec, kind
    out = {"layer": conv_rec["name"], "requested": layer, "channel": int(channel), "y": int(y), "x": int(x),
           "input_shape": list(conv_rec["input"].shape[1:]), "output_shape": [int(c_out), int(h_out), int(w_out)],
           "steps": steps}
    for s in steps:
        out[s["kind"]] = s
    return out


# -----------------------------------------------------------------------------
# the classifier head

def _unit_name(name: str, shape: tuple, j: int) -> str:
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        c, yy, xx = np.unravel_index(j, shape)
        return f"{name}[c={c}, y={yy}, x={xx}]"
    return f"{name}[{j}]"


def head_arithmetic(model: nn.Module, x01, target: int | None = None, top: int = 10) -> dict:
    """The last Linear layer written out for image x01 (C, H, W) in [0, 1]: its input vector, the largest
    weight x input contributions to `target`'s logit (default: the predicted class), bias, every class's
    logit, and the softmax with exp(logit - max). See the module docstring for the returned dict."""
    net, _, xin, _, _ = _prepare(model, x01)
    fc_name = penultimate_layer(net)
    fc: nn.Linear = get_layer(net, fc_name)
    d = fc.in_features
    keep = lambda n, m, out, calls: n == fc_name or (out.numel() == d and not isinstance(m, _PASS_THROUGH))  # noqa: E731
    with torch.no_grad(), leaf_trace(net, keep) as calls:
        logits_model = net(xin)[0].double().cpu()                                      # (K,)
    fc_rec = next(c for c in calls if c["name"] == fc_name)
    feats = fc_rec["input"][0].flatten().double().cpu()                                 # (D,)
    source, shape = fc_name + " input", (d,)
    for c in reversed(calls[:calls.index(fc_rec)]):            # the layer that made this vector (flatten is free)
        if "output" in c and c["output"].numel() == d and torch.equal(c["output"].flatten().double().cpu(), feats):
            source, shape = c["name"], tuple(c["output"].shape[1:])
            break
    W = fc.weight.detach().double().cpu()                                               # (K, D)
    b = None if fc.bias is None else fc.bias.detach().double().cpu()
    fc_out = W @ feats + (b if b is not None else 0.0)                                  # (K,)
    k = fc_out.numel()
    if k != logits_model.numel():
        raise CNNLibError(f"the last Linear {fc_name!r} has {k} outputs but the model returns {logits_model.numel()} "
                          f"logits, so head_arithmetic cannot write the head out")
    scale = 1.0
    if not torch.allclose(fc_out, logits_model, rtol=1e-4, atol=1e-5):           # e.g. resnet9's logits * 0.125
        scale = float(f"{float((fc_out @ logits_model) / (fc_out @ fc_out).clamp_min(1e-30)):.6g}")  # least squares
        if not torch.allclose(fc_out * scale, logits_model, rtol=1e-4, atol=1e-5):
            raise CNNLibError(f"the model transforms {fc_name!r}'s output before returning its logits in a way "
                              f"head_arithmetic cannot write out")
    logits = fc_out * scale
    t = int(logits_model.argmax()) if target is None else int(target)
    if not 0 <= t < k:
        raise CNNLibError(f"target class {target} is out of range (the model has {k} classes)")
    contrib = W[t] * feats                                                              # (D,)
    order = torch.argsort(contrib.abs(), descending=True)[:max(0, int(top))].tolist()
    rows = [{"index": j, "unit": _unit_name(source, shape, j), "input": float(feats[j]), "weight": float(W[t, j]),
             "contribution": float(contrib[j])} for j in order]
    m = float(logits.max())
    shifted = logits - m
    e = torch.exp(shifted)
    probs = e / e.sum()
    classes = list((getattr(model, "meta", None) or {}).get("classes") or [str(i) for i in range(k)])
    return {"layer": fc_name, "features_from": source, "features_shape": list(shape), "input": feats.numpy(),
            "target": t, "class": classes[t] if t < len(classes) else str(t), "weights": W[t].numpy(),
            "contributions": contrib.numpy(), "top": rows,
            "rest": float(contrib.sum() - sum(r["contribution"] for r in rows)), "sum": float(contrib.sum()),
            "bias": None if b is None else float(b[t]), "fc_output": float(fc_out[t]), "scale": scale,
            "logit": float(logits[t]), "logits": logits.numpy(), "model_logits": logits_model.numpy(),
            "softmax": {"max": m, "shifted": shifted.numpy(), "exp": e.numpy(), "sum": float(e.sum()),
                        "probs": probs.numpy()},
            "probs": probs.numpy(), "model_probs": torch.softmax(logits_model, 0).numpy(), "classes": classes}
