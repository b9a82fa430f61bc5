"""The lesson's network as ONNX: raw [0, 1] pixels in, the logits and every layer the lesson shows out.

    layout = trace_layout(model)          which layers the lesson shows, in execution order, and how they chain
    export_lesson_onnx(model, out, layout)

The graph (opset 17, TorchScript-based exporter, `dynamo=False`):

    inputs   images float32 (1, C, H, W) in [0, 1] (normalization folded in, as cnnlib.io.export)
             "weight:<conv>" float32 for every convolution shown: its kernels are graph inputs, not
             initializers, so the file does not hold them a second time (the page has them for a unit's
             arithmetic and feeds them) and an edited kernel re-runs the whole network ("what if")
    outputs  logits (1, K), then one output per shown layer (named after the module, as the model names
             it), then "<conv>:input" for a convolution whose input is no other shown output, then
             "<linear>:input" (1, D): what the classifier's last Linear reads

It runs on `modelops.analysis_copy`, so a module called twice per forward pass is two layers (`relu.call1`,
`relu.call2`) and no in-place activation overwrites a captured map. Every captured map is cloned the moment
its module returns, so a later in-place sum (`out += identity`) does not change it.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.modelops import Normalized, analysis_copy, as_image01, to_input

MAP_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
             nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
             nn.Sigmoid, nn.Tanh, nn.Mish)
ACTIVATIONS = {"ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "ELU": "elu", "SiLU": "silu",
               "GELU": "gelu", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid", "Hardtanh": "hardtanh",
               "Sigmoid": "sigmoid", "Tanh": "tanh", "Mish": "mish"}


def _leaves(net: nn.Module):
    return [(n, m) for n, m in net.named_modules() if n and next(m.children(), None) is None]


def lesson_net(model: nn.Module) -> nn.Module:
    """Normalized(analysis_copy(model)) in eval mode, fp32, CPU: what the lesson exports and tests compare to."""
    net = analysis_copy(model).float().cpu().eval()
    return Normalized(net, model.meta).eval()


@torch.no_grad()
def trace_layout(model: nn.Module, wrapper: nn.Module | None = None) -> dict:
    """One forward pass of a zero image with hooks: the shown layers and their chain.

    Returns {"layers": [{"name", "type", "shape" [C, h, w], "source" (conv only: "input" for the network's
    normalized input, a shown layer's name, or "<name>:input" for an extra output), "next" (the shown layer
    that reads this one's output, if exactly one does)}], "extra_inputs": [conv names needing "<conv>:input"],
    "editable": the first conv's name, "fed": every conv shown (their kernels are graph inputs)}.
    """
    wrapper = wrapper or lesson_net(model)
    net = wrapper.net
    x = torch.zeros(1, *model.meta["input_shape"])
    xn = to_input(x, wrapper.mean, wrapper.std)
    produced = {id(xn): ("input", xn._version)}
    keep, rows, readers = [xn], [], {}

    def hook(name, m, args, out):
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        row = {"name": name, "type": type(m).__name__, "shape": list(out.shape[1:])}
        if src is not None:
            got = produced.get(id(src))
            origin = got[0] if got is not None and got[1] == src._version else None
            readers.setdefault(origin, []).append(name)
            if isinstance(m, nn.Conv2d):
                row["source"] = origin if origin is not None else f"{name}:input"
        produced[id(out)] = (name, out._version)
        keep.extend([out, src])
        rows.append(row)

    shown = [(n, m) for n, m in _leaves(net) if isinstance(m, MAP_TYPES)]
    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(n, m, a, o)) for n, m in shown]
    linears = []

    def linear_hook(name):
        def hook(m, args, out):
            linears.append((name, m, out))
        return hook
    handles += [m.register_forward_hook(linear_hook(n)) for n, m in _leaves(net) if isinstance(m, nn.Linear)]
    try:
        net(xn)
    except Exception as e:  # noqa: BLE001 - a network that cannot take its own input shape
        raise CNNLibError(f"the network cannot run on its input shape {model.meta['input_shape']}: "
                          f"{type(e).__name__}") from None
    finally:
        for h in handles:
            h.remove()
    seen, layers = set(), []
    for row in rows:                       # a module called again on the same place: keep the first call
        if row["name"] in seen:
            continue
        seen.add(row["name"])
        nxt = readers.get(row["name"], [])
        row["next"] = nxt[0] if len(nxt) == 1 else None
        layers.append(row)
    if not any(r["type"] == "Conv2d" for r in layers):
        raise CNNLibError(f"{type(model).__name__} has no convolution for a lesson to show")
    extra = [r["name"] for r in layers if r.get("source", "").endswith(":input")]
    convs = [r for r in layers if r["type"] == "Conv2d"]
    head = None
    if linears and linears[-1][2].dim() == 2 and linears[-1][2].shape[1] == len(model.meta["classes"]):
        head = {"name": linears[-1][0], "in_features": int(linears[-1][1].in_features)}
    return {"layers": layers, "extra_inputs": extra, "editable": convs[0]["name"], "head": head,
            "fed": [r["name"] for r in convs]}


class _FedConv(nn.Module):
    """A Conv2d whose kernels come from outside (`fed`, set before each forward pass): a graph input."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.fed = conv, None

    def forward(self, x):
        c = self.conv
        if c.padding_mode != "zeros":
            x = nn.functional.pad(x, c._reversed_padding_repeated_twice, mode=c.padding_mode)
            return nn.functional.conv2d(x, self.fed, c.bias, c.stride, 0, c.dilation, c.groups)
        return nn.functional.conv2d(x, self.fed, c.bias, c.stride, c.padding, c.dilation, c.groups)


class _Tapped(nn.Module):
    """images, *conv kernels -> (logits, *shown maps, *conv inputs): the exported module."""

    def __init__(self, wrapper: nn.Module, layout: dict):
        super().__init__()
        self.wrapper, self.layout = wrapper, layout
        self.names = [r["name"] for r in layout["layers"]]
        self.store, self.inputs = {}, {}
        net = wrapper.net
        self.fed = {}
        for name in layout["fed"]:
            self.fed[name] = _FedConv(net.get_submodule(name))
            parent, _, last = name.rpartition(".")
            net.get_submodule(parent)._modules[last] = self.fed[name]     # also a Sequential's "0"
        for name in self.names:
            net.get_submodule(name).register_forward_hook(self._keep_output(name))
        for name in layout["extra_inputs"] + ([layout["head"]["name"]] if layout.get("head") else []):
            net.get_submodule(name).register_forward_pre_hook(self._keep_input(name))

    def _keep_output(self, name):
        def hook(m, args, out):          # returns None: the module's own output flows on untouched
            self.store.setdefault(name, out.clone())
        return hook

    def _keep_input(self, name):
        def pre_hook(m, args):
            self.inputs.setdefault(name, args[0].clone())
        return pre_hook

    def weights(self) -> list[torch.Tensor]:
        """The trained kernels, in the order of the graph's weight inputs."""
        return [self.fed[n].conv.weight.detach() for n in self.layout["fed"]]

    def forward(self, images, *weights):
        self.store, self.inputs = {}, {}
        xn = to_input(images, self.wrapper.mean, self.wrapper.std)
        for name, w in zip(self.layout["fed"], weights):
            self.fed[name].fed = w
        logits = self.wrapper.net(xn)
        head = [self.inputs[self.layout["head"]["name"]].flatten(1)] if self.layout.get("head") else []
        return (logits, *[self.store[n] for n in self.names], *[self.inputs[n] for n in self.layout["extra_inputs"]],
                *head)


def weight_inputs(layout: dict) -> list[str]:
    return [f"weight:{n}" for n in layout["fed"]]


def onnx_output_names(layout: dict) -> list[str]:
    """The graph's output names: output_names prefixed "t:" (a module called "0" is no valid TorchScript name)."""
    return [n if n == "logits" else f"t:{n}" for n in output_names(layout)]


def output_names(layout: dict) -> list[str]:
    head = [f"{layout['head']['name']}:input"] if layout.get("head") else []
    return ["logits", *[r["name"] for r in layout["layers"]], *[f"{n}:input" for n in layout["extra_inputs"]], *head]


@contextlib.contextmanager
def _quiet():
    """The exporter prints whole graphs on failure (from C++, straight to the file descriptors) and warns about
    itself: none of it is for the user, whose one sentence comes from the exception."""
    saved = []
    try:
        sys.stdout.flush(), sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(null, fd)
        os.close(null)
    except OSError:            # no real descriptors (an embedding host): Python-level silence only
        pass
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _export(module: nn.Module, args: tuple, out, inputs: list[str], outputs: list[str]) -> None:
    with _quiet():
        torch.onnx.export(module, args, out, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, do_constant_folding=True)


def _first_sentence(e: Exception) -> str:
    text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    return text.rstrip(".")


def _culprit(wrapper: nn.Module, model: nn.Module) -> str | None:
    """The first leaf module that the exporter cannot convert on its own, as "'name' (Type): why"."""
    net, seen = wrapper.net, {}
    x = torch.zeros(1, *model.meta["input_shape"])
    def keep(name):
        def hook(m, args, out):
            seen.setdefault(name, (m, args))
        return hook
    hooks = [m.register_forward_hook(keep(n)) for n, m in _leaves(net)]
    try:
        with torch.no_grad():
            wrapper(x)
    except Exception:  # noqa: BLE001 - it fails as a whole: nothing to single out
        return None
    finally:
        for h in hooks:
            h.remove()
    for name, (m, args) in seen.items():
        if not all(isinstance(a, torch.Tensor) for a in args):
            continue
        try:
            _export(m, tuple(args), io.BytesIO(), [f"in{i}" for i in range(len(args))], ["out"])
        except Exception as e:  # noqa: BLE001 - this is the layer the exporter cannot handle
            return f"layer {name!r} ({type(m).__name__}): {_first_sentence(e)}"
    return None


def export_lesson_onnx(model: nn.Module, out: str, layout: dict | None = None) -> dict:
    """Write the lesson's ONNX file to `out`; returns the layout (trace_layout) with "outputs" (the page's keys)
    and "onnx_outputs" (the graph's names, in the same order) added.

    A network the exporter cannot convert raises CNNLibError with one sentence naming the layer."""
    wrapper = lesson_net(model)
    layout = layout or trace_layout(model, wrapper)
    tapped = _Tapped(wrapper, layout)
    weights = [w.clone() for w in tapped.weights()]
    example = torch.rand(1, *model.meta["input_shape"])
    names = onnx_output_names(layout)
    try:
        with torch.no_grad():
            _export(tapped, (example, *weights), out, ["images", *weight_inputs(layout)], names)
    except Exception as e:  # noqa: BLE001 - name the layer in one sentence
        where = _culprit(lesson_net(model), model)
        name = model.meta["model"]["name"] if isinstance(model.meta.get("model"), dict) else type(model).__name__
        raise CNNLibError(f"cannot turn {name} into ONNX for a lesson: "
                          + (where if where else _first_sentence(e))) from None
    return {**layout, "outputs": output_names(layout), "onnx_outputs": names}


def runner(model: nn.Module, layout: dict):
    """x01 -> {output name: numpy array (no batch axis)}: the exported module in torch, built once (an
    analysis copy costs seconds for a large network), for the reference numbers of many images."""
    tapped = _Tapped(lesson_net(model), layout)
    names = output_names(layout)

    @torch.no_grad()
    def run(x01) -> dict:
        outs = tapped(as_image01(x01)[None], *tapped.weights())
        return {n: o[0].numpy() for n, o in zip(names, outs)}
    return run


def torch_outputs(model: nn.Module, x01, layout: dict) -> dict:
    """{output name: numpy array (no batch axis)} from torch for one image: what the ONNX file must give."""
    return runner(model, layout)(x01)
