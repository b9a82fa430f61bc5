"""The checkpoint: one `.pt` file, a plain dict, safe to load.

It is the contract between training and everything that reads a model (the
CLI, the analysis functions, the dashboard). `torch.load(path,
weights_only=True)` reads it: only tensors, numbers, strings, lists, dicts.
Keys (format_version 2; the README documents each; version 1 files, without `preprocessing`, still load):

    format_version  int
    model           {"name": str, "kwargs": dict}         -> models.get_model(name, **kwargs); name is cnnlib's
                                                             own (simple_cnn, resnet9), torchvision/<name>, timm/<name>
                                                             or "onnx" (kwargs hold the graph without its weights:
                                                             cnnlib.models.onnx_graph converts it again at load)
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
    initial_first_layer  tensor (C_out, C_in, k, k) float16 (optional, v2): the first conv before training
    source          {"weights": file name, "imported": True, "matched_by": "names" | "order"} (imported models)
    device          str, where it was trained (free text)
    created         str, ISO time
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile

import torch
from torch import nn

from cnnlib.io.validate import (FORMAT_VERSION, REQUIRED_KEYS, describe, not_zip_sentence, pickle_globals, read_path, refusal,
                        summary, validate)
from cnnlib.errors import CheckpointError, CNNLibError
from cnnlib.io.files import atomic_write
from cnnlib.models.registry import get_model



def atomic_torch_save(obj, path: str) -> None:
    """torch.save through files.atomic_write: the old file or the new one, never half; a full disk or a
    read-only folder raises files.WriteError (one sentence) and leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(ckpt: dict, path: str) -> None:
    ckpt = {"format_version": FORMAT_VERSION, **ckpt}
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"refusing to save a checkpoint without {', '.join(missing)}")
    atomic_torch_save(ckpt, path)


def _diagnose(data: bytes, name: str, error: Exception) -> str:
    """One true sentence on why torch.load(weights_only=True) refused `data`."""
    if data[:4] == b"PK\x03\x04":                            # the zip format torch.save writes
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                pkls = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not pkls:
                    return f"{name} is a zip archive but not a PyTorch file (it has no data.pkl)"
                data_pkl = z.read(pkls[0])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError):
            return f"{name} is truncated or corrupt: its zip archive is incomplete (was the download or copy cut short?)"
        found = pickle_globals(data_pkl)
        if found is None:
            return f"{name} is corrupt: the PyTorch file's object index cannot be read"
        sentence = refusal(name, found)
    else:
        sentence = not_zip_sentence(data, name)
    if sentence:
        return sentence
    if isinstance(error, (EOFError, pickle.UnpicklingError)) and "truncated" in str(error).lower():
        return f"{name} is truncated: it ends before its data does"
    return f"{name} is corrupt: PyTorch cannot read it ({type(error).__name__})"


def safe_torch_load(source, what: str = "checkpoint"):
    """torch.load with weights_only=True; every failure becomes a CheckpointError with one true sentence
    (empty, truncated, corrupt, not a PyTorch file, holds code). Never suggests turning the safety off.

    `source` is a path, bytes, or a binary file object.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        data = read_path(source, what)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    if not data:
        raise CheckpointError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # torch's warnings are not for our users
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch raises, the user gets one sentence
        raise CheckpointError(_diagnose(data, name, e)) from None


def load_checkpoint(source) -> dict:
    """Read and validate a checkpoint (path, bytes or file object) without running any code."""
    return validate(safe_torch_load(source), describe(source), lambda v: isinstance(v, torch.Tensor))


def _shape(t) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")" if isinstance(t, torch.Tensor) else type(t).__name__


def check_weights_fit(model: nn.Module, state_dict: dict, label: str) -> None:
    """Raise CheckpointError naming the first tensor that is missing, extra, of the wrong shape, or
    not finite (NaN/Inf), before load_state_dict would fail with a page of text."""
    own = model.state_dict()
    for key, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"the weights' entry {key!r} is a {type(t).__name__}, not a tensor")
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    if missing or extra:
        what = (f"lack {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")) if missing \
            else f"hold {extra[0]}, which {label} does not have" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        raise CheckpointError(f"the weights are for another architecture: they {what}")
    for key, t in own.items():
        if tuple(state_dict[key].shape) != tuple(t.shape):
            raise CheckpointError(f"the weights are for another architecture: {key} is {_shape(state_dict[key])} "
                                  f"in the file but {_shape(t)} in {label}")
    for key, t in state_dict.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"the weights hold NaN or infinite values (first in {key}), so every "
                                  "prediction would be meaningless")


def build_model(ckpt: dict) -> nn.Module:
    """The network described by a validated checkpoint, weights loaded, on CPU, in eval mode.

    Refuses weights that do not fit the architecture, hold NaN/Inf, or give a number of outputs other
    than the number of class names."""
    spec = ckpt["model"]
    try:
        with torch.device("meta"):        # shapes only, no memory: absurd kwargs cannot allocate gigabytes
            skeleton = get_model(spec["name"], **spec.get("kwargs", {}))
    except CNNLibError as e:
        raise CheckpointError(f"the checkpoint names a model this cnnlib cannot build: {e}") from None
    except Exception:  # noqa: BLE001 - a builder that cannot run on the meta device: check after building
        skeleton = None
    if skeleton is not None:
        check_weights_fit(skeleton, ckpt["state_dict"], spec["name"])
    try:
        model = get_model(spec["name"], **spec.get("kwargs", {}))
    except CNNLibError as e:
        raise CheckpointError(f"the checkpoint names a model this cnnlib cannot build: {e}") from None
    check_weights_fit(model, ckpt["state_dict"], spec["name"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CheckpointError(f"the weights do not fit a {spec['name']}: {(lines or ['?'])[0][:200]}") from None
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.zeros(1, *ckpt["input_shape"]))
            k = logits.shape[-1]
    except Exception as e:  # noqa: BLE001 - a shape the network cannot take
        raise CheckpointError(f"the {spec['name']} cannot run on its recorded input shape "
                              f"{list(ckpt['input_shape'])} ({type(e).__name__})") from None
    if not bool(torch.isfinite(logits).all()):
        raise CheckpointError("the network's output is not a number even for a blank image (its weights "
                              "overflow): the checkpoint is damaged")
    if k != len(ckpt["classes"]):
        raise CheckpointError(f"the checkpoint lists {len(ckpt['classes'])} class names but the network has {k} "
                              "outputs; the class list must name every output")
    return model


def checkpoint_summary(ckpt: dict) -> dict:
    """Flat facts for a summary card (everything optional beyond the required keys): ckptcheck.summary."""
    return summary(ckpt)
