"""Read someone else's weights without running their code, and fit them into a cnnlib model.

    sd = read_state_dict("best_model.pth")        {name: tensor}, never executes code
    load_weights_into(model, sd_or_path, "simple_cnn")
    infer_num_classes(sd)                          rows of the classifier

A weights file may be
  * a bare state dict (`torch.save(model.state_dict(), ...)`, the original tutorial's best_model.pth);
  * a dict holding one under `state_dict`, `model`, `model_state_dict` or `net` (also one level deeper),
    as training scripts save it with optimizer state and epoch beside, or a full CNN Lens checkpoint;
  * a `.safetensors` file.
Every torch file goes through `checkpoint.safe_torch_load` (weights_only=True): a pickle that would run
code is refused. A `module.` prefix (DataParallel / DDP) is stripped.

Fitting (`match_state_dict`): the names are tried first; tutorial code names its layers differently
(`features.0.weight` for `conv1.weight`), so when the names differ the tensors are matched by position
(state_dict order of the file against the model's; `num_batches_tracked` skipped on both sides) and
every pair must agree in shape. The first pair that does not is named in the error.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from cnnlib.io.checkpoint import safe_torch_load
from cnnlib.errors import CheckpointError

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
SKIP_SUFFIX = "num_batches_tracked"   # a BatchNorm counter; absent in some files, never needed for inference


def _name(source) -> str:
    return os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else "the weights"


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")" if t.dim() != 1 else f"({t.shape[0]},)"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


# ----------------------------------------------------------------------------- reading

def is_safetensors(path) -> bool:
    """By extension, or by content: 8-byte little-endian header length, then a JSON object."""
    if str(path).endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        n = int.from_bytes(head[:8], "little")
        return len(head) == 9 and head[8:9] == b"{" and 0 < n < os.path.getsize(path)
    except OSError:
        return False


def read_safetensors(path) -> tuple[dict, dict]:
    """(state dict, metadata {str: str}) of a .safetensors file; a broken one is one CheckpointError."""
    from safetensors import safe_open

    name = _name(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean a broken file
        raise CheckpointError(f"{name} is not a readable .safetensors file (truncated or corrupt: "
                              f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    return sd, meta


def find_state_dict(obj, name: str = "the weights") -> dict:
    """The {name: tensor} dict inside whatever a weights file held (see the module docstring)."""
    if is_tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        if "format_version" in obj and is_tensor_dict(obj.get("state_dict")):   # a CNN Lens checkpoint
            return obj["state_dict"]
        inner = [obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)]      # nested one level
        inner += [v for k, v in obj.items() if k not in CONTAINER_KEYS and isinstance(v, dict)]
        for outer in (obj, *inner):
            for key in CONTAINER_KEYS:
                if is_tensor_dict(outer.get(key)):
                    return outer[key]
        keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
        raise CheckpointError(f"{name} holds a dict ({keys or 'empty'}) but no state dict of tensors "
                              f"(looked at the top level and under {', '.join(CONTAINER_KEYS)})")
    raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a state dict of weights")


def clean_state_dict(sd: dict, name: str = "the weights") -> dict:
    """Strip a `module.` prefix (DataParallel / DDP) and refuse NaN or infinite values."""
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for k, v in sd.items():
        # a sum is finite iff every element is (NaN and Inf propagate), barring overflow: then look closer
        if v.is_floating_point() and v.numel() and not (bool(torch.isfinite(v.sum()))
                                                        or bool(torch.isfinite(v).all())):
            raise CheckpointError(f"{name} has NaN or infinite values in {k}; such weights cannot give "
                                  f"meaningful predictions, so they are refused")
    return dict(sd)


def read_state_dict(source, name: str | None = None) -> dict:
    """A path (torch file or .safetensors), bytes, file object, or an already loaded object -> {name: tensor}."""
    name = name or _name(source)
    if isinstance(source, (str, os.PathLike)) and is_safetensors(source):
        sd, _ = read_safetensors(source)
    elif isinstance(source, dict):
        sd = find_state_dict(source, name)
    else:
        sd = find_state_dict(safe_torch_load(source), name)
    return clean_state_dict(sd, name)


def infer_num_classes(sd: dict) -> int:
    """The classifier's outputs: rows of the last 2-D weight, else the length of the last bias."""
    items = list(sd.items())
    for key, t in reversed(items):
        if key.endswith("weight") and t.dim() == 2:
            return int(t.shape[0])
    for key, t in reversed(items):
        if key.endswith("bias") and t.dim() == 1:
            return int(t.shape[0])
    raise CheckpointError("cannot tell the number of classes from the weights (no 2-D weight and no bias); "
                          "pass --num-classes K")


# ----------------------------------------------------------------------------- fitting

def _misfit(i: int, key: str, t: torch.Tensor, model_name: str, mkey: str, mt: torch.Tensor) -> CheckpointError:
    return CheckpointError(f"the weights' {ordinal(i + 1)} tensor {key} {_shape(t)} does not fit "
                           f"{model_name}'s {mkey} {_shape(mt)}")


def match_state_dict(model: nn.Module, sd: dict, model_name: str, ordered: bool = True) -> tuple[dict, str]:
    """(state dict with the model's names, "names" | "order") or a CheckpointError naming the first misfit.

    ordered=False (a .safetensors file keeps no tensor order): only name matching is possible.
    """
    target = model.state_dict()
    own = {k: v for k, v in target.items() if not k.endswith(SKIP_SUFFIX)}
    theirs = {k: v for k, v in sd.items() if not k.endswith(SKIP_SUFFIX)}
    out = {k: v for k, v in target.items() if k.endswith(SKIP_SUFFIX)}   # the model's own counters
    out.update({k: v for k, v in sd.items() if k.endswith(SKIP_SUFFIX) and k in target})
    if set(theirs) == set(own):                       # same names: shapes must agree one by one
        for i, k in enumerate(own):
            if theirs[k].shape != own[k].shape:
                raise _misfit(i, k, theirs[k], model_name, k, own[k])
        return {**out, **theirs}, "names"
    first = {k.split(".", 1)[0] for k in theirs}   # one wrapper prefix (`model.`, `backbone.`, `net.`)
    if len(first) == 1 and "." in next(iter(theirs)):
        stripped = {k.split(".", 1)[1]: v for k, v in sd.items()}
        if {k for k in stripped if not k.endswith(SKIP_SUFFIX)} == set(own):
            return match_state_dict(model, stripped, model_name, ordered)
    if not ordered:
        missing = next(k for k in own if k not in theirs) if set(own) - set(theirs) else next(iter(set(theirs) - set(own)))
        raise CheckpointError(f"the tensor names in the weights differ from {model_name}'s (e.g. {missing!r}), "
                              f"and a .safetensors file keeps no tensor order to match them by position; "
                              f"save them with torch.save(model.state_dict(), 'weights.pth') instead")
    pairs = list(zip(theirs.items(), own.items()))
    for i, ((k, t), (mk, mt)) in enumerate(pairs):
        if t.shape != mt.shape:
            raise _misfit(i, k, t, model_name, mk, mt)
    if len(theirs) != len(own):
        n = len(pairs)
        if len(theirs) > len(own):
            k, t = list(theirs.items())[n]
            raise CheckpointError(f"the weights hold {len(theirs)} tensors but {model_name} has {len(own)}: "
                                  f"the {ordinal(n + 1)} tensor {k} {_shape(t)} has no place in {model_name}")
        mk, mt = list(own.items())[n]
        raise CheckpointError(f"the weights hold {len(theirs)} tensors but {model_name} has {len(own)}: "
                              f"nothing fits {model_name}'s {mk} {_shape(mt)} ({ordinal(n + 1)} tensor)")
    out.update({mk: t for (_, t), (mk, _) in pairs})
    return out, "order"


def load_weights_into(model: nn.Module, weights_or_path, name_for_errors: str) -> None:
    """Fill `model` with the weights of a file (any form above) or a loaded dict; strict, shapes checked."""
    ordered = not (isinstance(weights_or_path, (str, os.PathLike)) and is_safetensors(weights_or_path))
    sd = read_state_dict(weights_or_path)
    matched, _ = match_state_dict(model, sd, name_for_errors, ordered)
    try:
        model.load_state_dict(matched, strict=True)
    except RuntimeError as e:   # dtype or other surprises; shapes were checked above
        raise CheckpointError(f"the weights do not fit {name_for_errors}: {str(e).splitlines()[0][:200]}") from None
