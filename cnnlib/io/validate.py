"""What makes a file a CNN Lens checkpoint, and the one true sentence when it is not — shared by the torch
reader (cnnlib.io.checkpoint) and the torch-free metadata reader (cnnlib.io.metadata). Imports no torch.

    describe(source)               the name sentences use: the path, or "the uploaded file"
    pickle_globals(data)           the module.name globals a pickle stream references (None: not a pickle)
    refusal(name, found)           the "holds Python objects that loading would run" sentence, or None
    not_zip_sentence(data, name)   why a file that is not torch.save's zip archive cannot be read
    validate(ckpt, name, is_tensor) the checks every checkpoint dict must pass
    summary(ckpt)                  flat facts for a summary card (model, data, parameters, accuracy, ...)
"""
from __future__ import annotations

import os
import pickletools
from cnnlib.errors import CheckpointError

FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "model", "state_dict", "classes", "input_shape", "normalization")
MAX_SIDE, MAX_CHANNELS = 4096, 16     # input shapes beyond these are refused (a forward pass would not fit memory)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of torch.save's legacy (pre-zip) format
# Globals a weights-only file may name: torch's own (tensor rebuilders, storages, dtypes) and plain containers.
# Anything else in a pickle (os.system, builtins.eval, a user's class) is code that a full unpickler would
# import and run. Exact names, so that builtins.setattr does not pass for builtins.set.
PLAIN_NAMES = frozenset({"collections.OrderedDict", "collections.defaultdict", "_codecs.encode",
                         "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice",
                         "builtins.complex", "builtins.int", "builtins.float", "builtins.bool", "builtins.str",
                         "builtins.bytes", "builtins.list", "builtins.dict", "builtins.tuple", "builtins.range"})


def is_plain(name: str) -> bool:
    return name.startswith("torch.") or name in PLAIN_NAMES


def describe(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "the uploaded file"


def read_path(path, what: str, limit: int = -1) -> bytes:
    """The first `limit` bytes (-1: all) of a checkpoint or weights file, or the one sentence why not."""
    name = describe(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {name} does not exist")
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError as e:
        raise CheckpointError(f"{what} {name} cannot be read ({e.strerror or type(e).__name__})") from None


def pickle_globals(data: bytes) -> list[str] | None:
    """The module.name globals a pickle stream references, or None when it is not a readable pickle."""
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - not a pickle, or a damaged one
        return None
    return found


def refusal(name: str, found: list[str]) -> str | None:
    code = sorted({g for g in found if not is_plain(g)})
    if code:
        return (f"{name} was refused: it holds Python objects ({', '.join(code[:3])}) that loading would import "
                "and run, and CNN Lens only loads tensors and plain data")
    return None


def has_legacy_magic(data: bytes) -> bool:
    """Does the pickle start with the magic number of torch.save's legacy (pre-zip) format?"""
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, int) and op.name.startswith(("LONG", "BININT", "INT")):
                return arg == LEGACY_MAGIC
    except Exception:  # noqa: BLE001
        return False
    return False


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in (9, 10, 13) for c in head)


def not_zip_sentence(data: bytes, name: str) -> str | None:
    """Why a file that is not torch.save's zip archive cannot be read; None for a legacy torch.save pickle
    (only torch.load reads that format, and it holds nothing but plain data)."""
    if data[:1] == b"\x80":                                  # a bare pickle (legacy torch.save, or pickle.dump)
        found = pickle_globals(data)
        if found is None:
            return f"{name} is truncated or corrupt: its pickle stream is damaged"
        refused = refusal(name, found)
        if refused:
            return refused
        return None if has_legacy_magic(data) else f"{name} is a plain Python pickle, not a file written by torch.save"
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:4] == b"GIF8":
        return f"{name} is an image, not a PyTorch checkpoint or weights file"
    if _is_text(data[:4096]):
        return f"{name} is a text file, not a PyTorch checkpoint or weights file"
    return f"{name} is not a PyTorch file (it is neither a torch.save zip archive nor a pickle)"


def validate(ckpt, name: str, is_tensor) -> dict:
    """The checks every checkpoint dict must pass, each failure one sentence; `is_tensor(v)` tells tensors
    (torch.Tensor, or ckptmeta's stand-in) for the bare-weights hint."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name} holds a {type(ckpt).__name__}, not a CNN Lens checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        if ckpt and (all(is_tensor(v) for v in ckpt.values())
                     or any(k in ckpt for k in ("state_dict", "model_state_dict", "model", "net"))):
            raise CheckpointError(f"{name} holds bare weights, not a CNN Lens checkpoint: turn it into one with "
                                  f"`python -m cnnlib import {name if name != 'the uploaded file' else 'WEIGHTS'} "
                                  "--model NAME --data PATH --out checkpoints/NAME.pt`")
        raise CheckpointError(f"{name} is not a CNN Lens checkpoint: missing {', '.join(missing)}")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(f"{name} has format_version {version!r}; this cnnlib reads versions 1..{FORMAT_VERSION}")
    model = ckpt["model"]
    if not (isinstance(model, dict) and isinstance(model.get("name"), str)
            and isinstance(model.get("kwargs", {}), dict)):
        raise CheckpointError(f"{name}: 'model' must be {{'name': str, 'kwargs': dict}}")
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{name}: 'state_dict' is not a dict of tensors")
    classes, shape, norm = ckpt["classes"], ckpt["input_shape"], ckpt["normalization"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{name}: 'classes' must be a non-empty list of names")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise CheckpointError(f"{name}: 'input_shape' must be [C, H, W]")
    if shape[0] > MAX_CHANNELS or max(shape[1:]) > MAX_SIDE:
        raise CheckpointError(f"{name}: the input shape {list(shape)} is beyond what CNN Lens opens "
                              f"(at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side)")
    pre = ckpt.get("preprocessing")
    if pre is not None and not (isinstance(pre, dict) and all(isinstance(pre.get(k, 0), int) and pre.get(k, 0) >= 0
                                                             for k in ("resize", "crop"))):
        raise CheckpointError(f"{name}: 'preprocessing' must be {{'resize': int, 'crop': int}}")
    try:
        norm_ok = (isinstance(norm, dict) and len(norm.get("mean", [])) == shape[0] == len(norm.get("std", []))
                   and all(float(s) > 0 for s in norm["std"]))
    except (TypeError, ValueError):
        norm_ok = False
    if not norm_ok:
        raise CheckpointError(f"{name}: 'normalization' must hold one mean and one positive std per channel")
    return ckpt


def parameter_count(ckpt: dict) -> int:
    """Parameters of a checkpoint dict (BatchNorm statistics left out); tensors or anything with .numel()."""
    return sum(t.numel() for k, t in ckpt["state_dict"].items()
               if hasattr(t, "numel") and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def summary(ckpt: dict) -> dict:
    """Flat facts for a summary card, from a checkpoint dict (torch's, or ckptmeta.read_meta's)."""
    metrics, data, hist = ckpt.get("metrics", {}), ckpt.get("data", {}), ckpt.get("history", [])
    return {
        "model": ckpt["model"]["name"],
        "dataset": data.get("name", "?"),
        "classes": len(ckpt["classes"]),
        "input_shape": list(ckpt["input_shape"]),
        "parameters": parameter_count(ckpt),
        "epochs": len(hist),
        "best_epoch": ckpt.get("best_epoch"),
        "best_val_acc": metrics.get("val_acc"),
        "test_acc": metrics.get("test_acc"),
        "train_seconds": metrics.get("train_seconds"),
        "device": ckpt.get("device", "?"),
        "recipe": ckpt.get("config", {}).get("recipe", "?"),
    }
