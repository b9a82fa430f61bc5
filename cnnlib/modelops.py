"""Everything that runs a network, in one place: the one path from image to logits.

    x uint8 (B, C, H, W) or float in [0, 1]  --to_input-->  normalized float (B, C, H, W)  --net-->  logits (B, K)

    working_copy(model)          new module objects sharing the weights: own hooks, own train/eval flag
    analysis_copy(model)         working copy converted for hooks and Captum (non-inplace activations,
                                 one module instance per use); outputs equal the original's
    inference_copy(model)        BatchNorm folded into convs, channels_last (fast batched inference)
    capture(model, names)        forward hooks as a context manager; always removed
    Normalized(net, meta)        net((x01 - mean) / std): a module taking raw [0, 1] images (Captum)
    forward_batches(net, x, ...) one batched forward loop (training's validation, evaluation, embeddings)
    probabilities(model, x01)    softmax of one or more [0, 1] images

Thread safety: the dashboard shares one cached model between sessions, so nothing here puts a hook on
it or changes its mode; callers work on copies.
"""
from __future__ import annotations

import contextlib
import copy
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError


# -----------------------------------------------------------------------------
# copies

def working_copy(model: nn.Module) -> nn.Module:
    """Structural copy in eval() that shares parameters and buffers (and `meta`) with `model`.

    New module objects (own hooks, own train/eval flag) around the original's tensors, so a copy costs
    microseconds, not a weight copy, and the shared model is left exactly as found.
    """
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    if hasattr(model, "meta"):
        memo[id(model.meta)] = model.meta
    return copy.deepcopy(model, memo).eval()


_INPLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Hardswish,
                        nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.RReLU, nn.Threshold, nn.Dropout, nn.Dropout2d)


class PerCall(nn.Module):
    """A parameter-free module that the forward pass calls n times, as n private copies `call1..calln`
    used in turn (the count restarts with every forward pass of the whole network). A hook on
    `layer1.0.relu.call2` then means exactly one place in the network, as Captum's Guided Backprop and
    cnnlib's feature maps need; a hook on `layer1.0.relu` itself still sees every call."""

    def __init__(self, module: nn.Module, n: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"call{i + 1}", copy.deepcopy(module))
        self.n, self.count = n, 0

    def forward(self, *args, **kwargs):
        module = getattr(self, f"call{min(self.count, self.n - 1) + 1}")
        self.count += 1
        return module(*args, **kwargs)


def analysis_copy(model: nn.Module, shape=None) -> nn.Module:
    """A working copy that hooks and Captum can trust, for any architecture.

    * every activation (and dropout) with `inplace=True` becomes non-inplace: an in-place ReLU overwrites
      the tensor a forward hook captured and breaks backward hooks;
    * a parameter-free module object called more than once per forward pass (torchvision's ResNet blocks
      call `self.relu` twice) becomes a `PerCall` with one private copy per call. The calls are counted
      in one forward pass of a zero image of `shape` (default: the checkpoint's input_shape; unknown
      shape: no split).

    The copy shares parameters and buffers with `model`; its outputs equal the original's.
    """
    net = working_copy(model)
    for m in net.modules():
        if isinstance(m, _INPLACE_ACTIVATIONS) and getattr(m, "inplace", False):
            m.inplace = False
    shape = shape or (getattr(model, "meta", None) or {}).get("input_shape")
    if shape is not None:
        _split_reused_modules(net, [int(s) for s in shape])
    return net


def _split_reused_modules(net: nn.Module, shape: list[int]) -> None:
    calls: dict[str, int] = {}
    handles = [m.register_forward_pre_hook(lambda m, a, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
               for name, m in net.named_modules() if name and next(m.children(), None) is None]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *shape, device=model_device(net)))
    except Exception:  # noqa: BLE001 - a model that cannot run on this shape keeps its shared modules
        return
    finally:
        for h in handles:
            h.remove()
    wrappers = []
    for name, n in calls.items():
        m = net.get_submodule(name)
        if n > 1 and next(m.parameters(), None) is None and next(m.buffers(), None) is None:
            parent_name, _, leaf = name.rpartition(".")
            wrapper = PerCall(m, n)
            setattr(net.get_submodule(parent_name) if parent_name else net, leaf, wrapper)
            wrappers.append(wrapper)
    if wrappers:
        def restart(module, args):
            for w in wrappers:
                w.count = 0
        net.register_forward_pre_hook(restart)


def inference_copy(model: nn.Module) -> tuple[nn.Module, bool]:
    """(network, channels_last) for fast batched inference: a private copy (own weights) in eval(), with each
    BatchNorm folded into the conv whose output it normalises, in channels_last memory format.

    The conv -> BatchNorm pairs are found with hooks on one forward pass of random input (a BatchNorm2d whose
    input is exactly a Conv2d's output, each called once), folded with torch's fuse_conv_bn_eval, and the
    folded copy must give the original's outputs on that input, else nothing is folded. Not torch.fx: its
    tracer patches nn.Module.__call__ for every thread while it runs, and another dashboard session's
    forward pass then failed inside it (bench/loadtest.py). Layer names are kept (a folded BatchNorm becomes
    nn.Identity), so hooks by name still work on the copy."""
    net = copy.deepcopy(model).eval()
    try:
        shape = input_shape(model)
    except CNNLibError:
        return net, False
    _fold_batchnorms(net, shape)
    return net.to(memory_format=torch.channels_last), True


def _fold_batchnorms(net: nn.Module, shape: list[int]) -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    modules = dict(net.named_modules())
    made, calls, pairs, keep = {}, {}, [], []       # id(conv output) -> conv name; name -> calls; (conv, bn)

    def after_conv(name):
        def hook(m, args, out):
            calls[name] = calls.get(name, 0) + 1
            made[id(out)] = name
            keep.append(out)                             # keeps ids unique during the pass
        return hook

    def before_bn(name):
        def hook(m, args):
            calls[name] = calls.get(name, 0) + 1
            if id(args[0]) in made:
                pairs.append((made[id(args[0])], name))
        return hook

    handles = []
    try:
        for name, m in modules.items():
            if type(m) is nn.Conv2d:
                handles.append(m.register_forward_hook(after_conv(name)))
            elif type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None:
                handles.append(m.register_forward_pre_hook(before_bn(name)))
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)).to(model_device(net))
        with torch.inference_mode():
            reference = net(x)
    except Exception:  # noqa: BLE001 - a model that cannot run on random input is left unfolded
        return
    finally:
        for h in handles:
            h.remove()
    pairs = [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]
    if not pairs or not isinstance(reference, torch.Tensor):
        return
    originals = {}
    for conv, bn in pairs:
        originals[conv], originals[bn] = modules[conv], modules[bn]
        net.set_submodule(conv, fuse_conv_bn_eval(modules[conv], modules[bn]))
        net.set_submodule(bn, nn.Identity())
    with torch.inference_mode():
        folded = net(x)
    if not torch.allclose(folded, reference, rtol=1e-3, atol=1e-4 * float(reference.abs().max()) + 1e-5):
        for name, m in originals.items():            # something else read a conv's output: fold nothing
            net.set_submodule(name, m)


# -----------------------------------------------------------------------------
# layers and hooks

def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CNNLibError(f"{type(model).__name__} has no layer {name!r}") from None


@contextmanager
def capture(model: nn.Module, names, inputs: bool = False):
    """Forward hooks on the named layers, yielding {name: output (or first input) tensor}.

    The first call of each layer wins (clear the dict between batches). The hooks are removed when the
    block ends, also when it raises.
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


def input_shape(model: nn.Module, shape=None) -> list[int]:
    """[C, H, W] the model takes: `shape`, else the checkpoint's (model.meta)."""
    shape = shape or (getattr(model, "meta", None) or {}).get("input_shape")
    if shape is None:
        raise CNNLibError("the input shape is unknown: load the model with load_model() or pass input_shape=[C, H, W]")
    return [int(s) for s in shape]


# -----------------------------------------------------------------------------
# image -> input

def as_image01(x) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) uint8 / float in [0, 1] (tensor or array) -> float32 (C, H, W)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        raise CNNLibError(f"expected one image (C, H, W), got shape {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def norm_stats(meta: dict | None, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's per-channel (mean, std), each (1, C, 1, 1), in [0, 1] pixel units."""
    if not meta or "normalization" not in meta:
        raise CNNLibError("the model has no normalization statistics: load it with load_model()")
    norm = meta["normalization"]
    mean = torch.tensor(norm["mean"], dtype=dtype, device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], dtype=dtype, device=device).view(1, -1, 1, 1)
    return mean, std


def to_input(x, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Images (B, C, H, W), uint8 or float in [0, 1] (tensor, array or memmap) -> normalized float32 on
    mean's device. The only place where pixels become the network's input."""
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))   # a private, writable batch
    x = x.to(mean.device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Normalized(nn.Module):
    """x01 (B, C, H, W) in [0, 1] -> net(to_input(x01)): the network on raw images, so attributions and
    feature visualisations are taken on (and drawn over) the image a person sees."""

    def __init__(self, net: nn.Module, meta: dict):
        super().__init__()
        self.net = net
        mean, std = norm_stats(meta, model_device(net))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return self.net(to_input(x, self.mean, self.std))


# -----------------------------------------------------------------------------
# the batched forward loop

def autocast(device: torch.device, dtype):
    """torch.autocast for `dtype` on the device's type, or nothing (dtype None: fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def batch_size_for(shape, largest: int = 256) -> int:
    """Images per forward pass for inference at input `shape` [C, H, W]: 256 at 32 px, fewer for large
    images so activations stay near a fixed budget (about 2**20 pixels a batch: 20 at 224 px)."""
    h, w = int(shape[-2]), int(shape[-1])
    return int(max(8, min(largest, 2**20 // max(h * w, 1))))


def forward_batches(net: nn.Module, x, mean: torch.Tensor, std: torch.Tensor, batch_size: int | None = None,
                    dtype=None, channels_last: bool = False, progress: str | None = None
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, logits float32 (B, K)) for consecutive batches of x (N, C, H, W).

    x: uint8 or [0, 1] float, a tensor, a numpy array or a memory-mapped file; only one batch at a time
    is copied and moved to the device, and a read-only memmap's rows leave resident memory once used
    (datacache.release_rows), so memory does not grow with N (batch_size None: batch_size_for the
    image size). Runs under inference_mode, with
    autocast when `dtype` is given; `progress` is a tqdm label (None: no bar). The caller puts `net`
    in eval() (or passes a working copy).
    """
    from cnnlib.data.cache import release_rows
    n = len(x)
    if n == 0:
        return
    batch_size = batch_size or batch_size_for(np.shape(x)[1:])
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc=progress, unit="img", leave=False, dynamic_ncols=True)
    try:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                xb = to_input(x[i:i + batch_size], mean, std, channels_last)
                with autocast(mean.device, dtype):
                    logits = net(xb)
                yield i, logits.float()
                release_rows(x, i, i + len(xb))          # a read-only memmap's used pages leave resident memory
                if bar is not None:
                    bar.update(len(xb))
    finally:
        if bar is not None:
            bar.close()


def probabilities(model: nn.Module, x01) -> np.ndarray:
    """Softmax class probabilities float32 (B, K) of images (B, C, H, W) or one (C, H, W) in [0, 1]
    (uint8 accepted). No hooks and no mode change, so it is safe on a shared eval() model."""
    x = x01[None] if len(np.shape(x01)) == 3 else x01          # one image -> a batch of one
    mean, std = norm_stats(getattr(model, "meta", None), model_device(model))
    if model.training:
        raise CNNLibError("the model must be in eval() mode (load_model returns it so)")
    out = [torch.softmax(logits, 1).cpu() for _, logits in forward_batches(model, x, mean, std)]
    return torch.cat(out).numpy().astype(np.float32)

