"""The checkpoint: one `.pt` file, a plain dict, safe to load.

It is the contract between training and everything that reads a model (the
CLI, the analysis functions, the dashboard). `torch.load(path,
weights_only=True)` reads it: only tensors, numbers, strings, lists, dicts.
Keys (format_version 2; the README documents each; version 1 files, without `preprocessing`, still load):

    format_version  int
    model           {"name": str, "kwargs": dict}         -> models.get_model(name, **kwargs)
    state_dict      {param name: tensor}
    classes         [str]                                  class names, index = label
    input_shape     [C, H, W]
    normalization   {"mean": [C floats], "std": [C floats]} in [0, 1] pixel units (training split, or given)
    preprocessing   {"resize": int, "crop": int} (optional, v2): shorter side to `resize`, centre crop
                    `crop` (torchvision's Resize + CenterCrop; 0 = skip); then any size left over is
                    resized to input_shape. Absent: images are resized straight to input_shape.
    data            {"name", "path", "split_seed", "sizes": {"train", "val", "test"}}
    config          TrainConfig as a dict
    history         [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                      "first_layer": tensor (C_out, C_in, k, k) float16 (optional)}]
    best_epoch      int (1-based)
    metrics         {"val_acc", "test_acc", "test_loss", "train_seconds"}
    test_predictions {"targets": int16 (N,), "preds": int16 (N,), "probs": float16 (N, K)}
    device          str, where it was trained (free text)
    created         str, ISO time
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile

import torch
from torch import nn

from .errors import CheckpointError, CNNLibError
from .models import get_model

FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "model", "state_dict", "classes", "input_shape", "normalization")


def atomic_torch_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    Killing the process at any moment leaves either the old file or the new one, never half.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(ckpt: dict, path: str) -> None:
    ckpt = {"format_version": FORMAT_VERSION, **ckpt}
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"refusing to save a checkpoint without {', '.join(missing)}")
    atomic_torch_save(ckpt, path)


def _describe(source) -> str:
    return source if isinstance(source, (str, os.PathLike)) else "the uploaded file"


def safe_torch_load(source):
    """torch.load with weights_only=True; every failure becomes a CheckpointError.

    `source` is a path, bytes, or a binary file object.
    """
    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise CheckpointError(f"checkpoint {name} does not exist")
        if os.path.getsize(source) == 0:
            raise CheckpointError(f"checkpoint {name} is empty (0 bytes)")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(f"{name} was refused: it holds objects other than tensors and plain data "
                              f"(loading it could run code). Detail: {first[:200]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError, IndexError) as e:
        raise CheckpointError(f"{name} is not a readable PyTorch checkpoint (truncated, corrupt or "
                              f"another format): {type(e).__name__}: {str(e)[:200]}") from None


def load_checkpoint(source) -> dict:
    """Read and validate a checkpoint (path, bytes or file object) without running any code."""
    ckpt = safe_torch_load(source)
    name = _describe(source)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name} holds a {type(ckpt).__name__}, not a CNN Lens checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        hint = (" It looks like a bare state_dict; CNN Lens needs the full checkpoint that "
                "`python -m cnnlib train` writes." if ckpt and all(isinstance(v, torch.Tensor)
                                                                   for v in ckpt.values()) else "")
        raise CheckpointError(f"{name} is not a CNN Lens checkpoint: missing {', '.join(missing)}.{hint}")
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
    if not (isinstance(norm, dict) and len(norm.get("mean", [])) == shape[0] == len(norm.get("std", []))
            and all(float(s) > 0 for s in norm["std"])):
        raise CheckpointError(f"{name}: 'normalization' must hold one mean and one positive std per channel")
    return ckpt


def build_model(ckpt: dict) -> nn.Module:
    """The network described by a validated checkpoint, weights loaded, on CPU, in eval mode."""
    spec = ckpt["model"]
    try:
        model = get_model(spec["name"], **spec.get("kwargs", {}))
    except CNNLibError as e:
        raise CheckpointError(f"the checkpoint names a model this cnnlib cannot build: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CheckpointError(f"the weights do not fit a {spec['name']} with {spec.get('kwargs', {})}: "
                              f"{' '.join(lines)[:300]}") from None
    return model.eval()


def checkpoint_summary(ckpt: dict) -> dict:
    """Flat facts for a summary card (everything optional beyond the required keys)."""
    metrics, data, hist = ckpt.get("metrics", {}), ckpt.get("data", {}), ckpt.get("history", [])
    n_params = sum(t.numel() for k, t in ckpt["state_dict"].items()
                   if isinstance(t, torch.Tensor) and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return {
        "model": ckpt["model"]["name"],
        "dataset": data.get("name", "?"),
        "classes": len(ckpt["classes"]),
        "input_shape": list(ckpt["input_shape"]),
        "parameters": n_params,
        "epochs": len(hist),
        "best_epoch": ckpt.get("best_epoch"),
        "best_val_acc": metrics.get("val_acc"),
        "test_acc": metrics.get("test_acc"),
        "train_seconds": metrics.get("train_seconds"),
        "device": ckpt.get("device", "?"),
        "recipe": ckpt.get("config", {}).get("recipe", "?"),
    }
