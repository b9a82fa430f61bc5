"""Bring your own model: a weights file + a model name + a dataset -> an ordinary CNN Lens checkpoint.

    python -m cnnlib import best_model.pth --model simple_cnn --data cifar10 --out checkpoints/tutorial.pt
    python -m cnnlib import resnet.safetensors --model torchvision/resnet18 --data photos/ --out checkpoints/photos.pt
    python -m cnnlib import model.onnx --data photos/ --classes classes.txt --out checkpoints/model.pt

    ckpt = import_weights("best_model.pth", "simple_cnn", "cifar10", out="checkpoints/tutorial.pt")

The weights are read without running code (cnnlib.models.weights) and fitted by name, else by position and
shape. An .onnx file brings its own architecture (no --model): it is converted with onnx2torch and kept as
the model family "onnx" (cnnlib.io.onnx_model); its input size and class count come from the graph, its
normalization is none (mean 0, std 1) unless --mean / --std say otherwise, and its stored test probabilities
are float32. Everything else a checkpoint holds is derived, in this order of preference:

    classes        --classes FILE (one per line, the model's output order), else the data's class folders
    image size     --image-size, else the family's crop (224 for torchvision/ and timm/), else for
                   simple_cnn the size its classifier was built for, else the data's own size
    normalization  --mean / --std, else the family's (ImageNet), else the training split's statistics
    preprocessing  ImageFolder data: {"resize": --resize or the family's (256), "crop": image size}, as
                   the data loader applied it (resize 0: shorter side to the crop); named datasets: none
    test metrics   the model run on the data's test split (cnnlib.diagnose.evaluate.run_split), stored with its
                   predictions so the dashboard's pages work as for a trained checkpoint
"""
from __future__ import annotations

import datetime
import math
import os
import shlex

import torch

from cnnlib.io.checkpoint import safe_torch_load, save_checkpoint
from cnnlib.errors import CheckpointError, CNNLibError, DatasetError
from cnnlib.io.onnx_model import is_onnx
from cnnlib.models.onnx_graph import ONNX_FAMILY
from cnnlib.models.registry import default_preprocessing, get_model
from cnnlib.models.weights import (find_state_dict, infer_num_classes, is_safetensors, match_state_dict, read_safetensors,
                      read_state_dict)


def read_classes(path: str) -> list[str]:
    """Class names, one per line (blank lines and surrounding spaces ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise CNNLibError(f"cannot read the class list {path}: {type(e).__name__}: {e}") from None
    if not names or len(set(names)) != len(names):
        raise CNNLibError(f"the class list {path} must hold distinct names, one per line (it has {len(names)} "
                          f"lines, {len(set(names))} distinct)")
    return names


def simple_cnn_shape(sd: dict) -> tuple[int, int] | None:
    """(in_channels, image_size) a simple_cnn state dict was built for: conv1 (32, C, 3, 3), and fc1's
    in_features = 64 * (S/4)^2. None when the tensors do not look like simple_cnn's."""
    convs = [t for t in sd.values() if t.dim() == 4]
    fcs = [t for t in sd.values() if t.dim() == 2]
    if not convs or not fcs:
        return None
    side = math.isqrt(int(fcs[0].shape[1]) // 64)
    if 64 * side * side != int(fcs[0].shape[1]) or side < 1:
        return None
    return int(convs[0].shape[1]), 4 * side


def _stats(values, c: int, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != c and len(values) == 3 and c == 1:   # ImageNet statistics for a grayscale input
        values = [sum(values) / 3]
    if len(values) != c:
        raise CNNLibError(f"--{what} needs {c} value(s), one per image channel, got {len(values)}")
    if what == "std" and any(not v > 0 for v in values):
        raise CNNLibError(f"--std values must be positive, got {values}")
    return values


def fitted_model(model: str, sd: dict, k: int, c: int, size: int, ordered: bool = True):
    """(network in eval() holding the weights, its get_model kwargs, "names" | "order"), or the misfit error."""
    kwargs = {"num_classes": k, "in_channels": c, "image_size": size}
    convs = [t for t in sd.values() if t.dim() == 4]
    if model == "resnet9" and convs:
        kwargs["width"] = int(convs[0].shape[0])                  # the prep conv's channels are the base width
    net = get_model(model, **kwargs)
    try:
        matched, how = match_state_dict(net, sd, model, ordered)
    except CheckpointError as e:
        built_for = simple_cnn_shape(sd) if model == "simple_cnn" else None
        if built_for and built_for[1] != size:
            raise CheckpointError(f"{e} (these weights were built for {built_for[1]} x {built_for[1]} images: "
                                  f"pass --image-size {built_for[1]})") from None
        raise
    net.load_state_dict(matched, strict=True)
    return net.eval(), kwargs, how


def import_weights(weights: str, model: str, data: str, out: str | None = None, image_size: int | None = None,
                   resize: int | None = None, mean=None, std=None, classes: str | list | None = None,
                   num_classes: int | None = None, data_root: str | None = None, batch_size: int | None = None,
                   download: bool = True, log=print) -> dict:
    """Build the checkpoint dict (see the module docstring); write it to `out` when given."""
    from cnnlib.data.datasets import channel_stats

    source = os.path.basename(str(weights))
    if out and os.path.exists(weights) and os.path.abspath(out) == os.path.abspath(weights):
        raise CNNLibError(f"--out {out} would overwrite the weights file itself; pick another path")
    if is_onnx(weights):
        return _import_onnx(weights, model, data, out, image_size, resize, mean, std, classes, num_classes,
                            data_root, batch_size, download, log)
    if not model:
        raise CNNLibError(f"{source} holds weights only: name its architecture with --model (simple_cnn, "
                          "resnet9, torchvision/<name> or timm/<name>)")
    sd = read_state_dict(weights)                                  # hostile / broken files stop here
    family = default_preprocessing(model)                          # unknown model names stop here
    ordered = not (isinstance(weights, (str, os.PathLike)) and is_safetensors(weights))
    if not ordered:   # .safetensors keeps no order: take the model's (names do not depend on the sizes)
        ref = get_model(model, num_classes=2, image_size=int(image_size or (family or {}).get("crop") or 32))
        sd = {**{key: sd[key] for key in ref.state_dict() if key in sd}, **sd}
    convs = [t for t in sd.values() if t.dim() == 4]
    if num_classes is not None and int(num_classes) < 1:
        raise CNNLibError(f"--num-classes must be at least 1, got {num_classes}")
    k = int(num_classes) if num_classes else infer_num_classes(sd)

    # sizes: flags, else the family's crop, else (simple_cnn) the size its classifier was built for
    if image_size is None and family:
        image_size = family["crop"]
    if image_size is None and model == "simple_cnn" and simple_cnn_shape(sd):
        image_size = simple_cnn_shape(sd)[1]
    image_size = int(image_size or 0)
    resize = int(resize if resize is not None else (family["resize"] if family else 0))
    if image_size < 0 or resize < 0:
        raise CNNLibError("--image-size and --resize must be >= 0")
    # fit the weights before decoding any data: a wrong file fails in a second, not after a long decode
    guess = (int(convs[0].shape[1]) if convs else 3, image_size or 32)
    early = fitted_model(model, sd, k, *guess, ordered)
    splits, x, y, names = _data(data, data_root, image_size, resize, download, classes, k)
    c, h, w = (int(s) for s in x.shape[1:])

    # the network, with the file's weights (at the data's real channels and size)
    net, kwargs, how = early if (c, h) == guess else fitted_model(model, sd, k, c, h, ordered)

    # normalization and preprocessing
    if mean is None and family:
        mean = family["mean"]
    if std is None and family:
        std = family["std"]
    if mean is None or std is None:
        xs = splits["train"][0] if len(splits["train"][0]) else x
        m0, s0 = channel_stats(xs)
        mean, std = (m0 if mean is None else mean), (s0 if std is None else std)
    norm = {"mean": _stats(mean, c, "mean"), "std": _stats(std, c, "std")}
    log(f"{source}: {len(sd)} tensors fitted {model} by {how}; {c}x{h}x{w} input, {k} classes, "
        f"normalization mean {[round(v, 3) for v in norm['mean']]} std {[round(v, 3) for v in norm['std']]}")
    return _measure(net, model, kwargs, how, splits, x, y, names, norm, data, data_root, image_size, resize,
                    source, out, batch_size, log)


def _data(data, data_root, image_size, resize, download, classes, k):
    """(splits, test x, test y in the model's class order, class names) or the one sentence why not."""
    from cnnlib.data.datasets import load_dataset

    splits = load_dataset(data, data_root, image_size=image_size, resize=resize, download=download)
    x, y = splits["test"]
    if x is None or len(x) == 0:
        raise DatasetError(f"{data} has no test images to measure the imported model on")
    # classes: the file's order is the model's output order; the data's labels follow it by name
    data_classes = list(splits["classes"])
    names = (read_classes(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)) if classes else data_classes
    if len(names) != k:
        where = f"the class list {classes}" if classes else f"{splits['name']} ({len(names)} class folders)"
        raise CNNLibError(f"the weights have {k} outputs but {where} names {len(names)} classes "
                          f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); pass --classes FILE "
                          f"with {k} names, one per line, in the order the model was trained with")
    if names != data_classes:
        unknown = [n for n in data_classes if n not in names]
        if unknown:
            raise CNNLibError(f"the data's classes {', '.join(unknown[:5])} are not in the class list {classes}")
        y = torch.tensor([names.index(n) for n in data_classes], dtype=torch.int64)[y]
    return splits, x, y, names


def _measure(net, model, kwargs, how, splits, x, y, names, norm, data, data_root, image_size, resize, source,
             out, batch_size, log, probs_dtype=torch.float16) -> dict:
    """The checkpoint of a fitted network: test split run, metrics, predictions; written to `out` when given."""
    from cnnlib.data.datasets import NAMED
    from cnnlib.diagnose.evaluate import run_split

    c, h, w = (int(s) for s in x.shape[1:])
    # what the data loader did to ImageFolder images (torchvision's Resize + CenterCrop); named datasets
    # keep their own size, and an upload is resized straight to input_shape
    folder = str(data).lower() not in NAMED
    pre = ({"resize": resize or image_size, "crop": image_size or resize} if folder else {"resize": 0, "crop": 0})

    meta = {"model": {"name": model, "kwargs": kwargs}, "classes": names, "input_shape": [c, h, w],
            "normalization": norm, "preprocessing": pre}
    net.meta = meta
    res = run_split(net, x, y, batch_size=batch_size)
    acc = float((res["preds"] == res["targets"]).mean())
    ckpt = {
        **meta,
        "state_dict": {k_: v.detach().clone() for k_, v in net.state_dict().items()},
        "data": {"name": splits["name"], "path": splits["path"], "split_seed": splits["split_seed"],
                 "sizes": splits["sizes"]},
        "config": {"recipe": "imported", "model": model, "data": data, "data_root": data_root or "",
                   "image_size": image_size, "resize": resize, "weights": source, "split_seed": splits["split_seed"]},
        "history": [],
        "best_epoch": None,
        "metrics": {"val_acc": None, "test_acc": acc, "test_loss": float(res["losses"].mean()), "train_seconds": None},
        "test_predictions": {"targets": torch.from_numpy(res["targets"]).to(torch.int16),
                             "preds": torch.from_numpy(res["preds"]).to(torch.int16),
                             "probs": torch.from_numpy(res["probs"]).to(probs_dtype)},
        "device": "cpu (imported)",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "source": {"weights": source, "imported": True, "matched_by": how},
    }
    log(f"test accuracy {acc:.2%} on {len(y)} {splits['name']} test images")
    if out:
        save_checkpoint(ckpt, out)
        log(f"wrote {out}")
    return ckpt


def _import_onnx(weights, model, data, out, image_size, resize, mean, std, classes, num_classes, data_root,
                 batch_size, download, log) -> dict:
    """import_weights for an .onnx file (cnnlib.io.onnx_model): the graph brings its architecture, its input
    size and its class count; normalization defaults to none (mean 0, std 1): ONNX files from Keras and
    TensorFlow usually take their own preprocessed input. Probabilities are stored in float32."""
    from cnnlib.io.onnx_model import onnx_network

    source = os.path.basename(str(weights))
    if model not in (None, "", ONNX_FAMILY):
        raise CNNLibError(f"{source} is an ONNX model: it brings its own architecture, so leave --model out "
                          f"(it was {model!r})")
    net, kwargs, facts = onnx_network(weights, image_size)       # hostile / broken files stop here
    k, size, c = kwargs["num_classes"], kwargs["image_size"], kwargs["in_channels"]
    if num_classes is not None and int(num_classes) != k:
        raise CNNLibError(f"{source} has {k} outputs, not --num-classes {num_classes}")
    resize = int(resize or 0)
    if resize < 0:
        raise CNNLibError("--image-size and --resize must be >= 0")
    splits, x, y, names = _data(data, data_root, size, resize, download, classes, k)
    if int(x.shape[1]) != c or int(x.shape[2]) != size or int(x.shape[3]) != size:
        raise CNNLibError(f"{source} takes {c} x {size} x {size} images but the {splits['name']} images are "
                          f"{' x '.join(str(int(s)) for s in x.shape[1:])}; use data of that shape (an ImageFolder "
                          f"is resized and cropped to {size} px) or a model exported for it")
    norm = {"mean": _stats([0.0] * c if mean is None else mean, c, "mean"),
            "std": _stats([1.0] * c if std is None else std, c, "std")}
    steps = [f"opset {facts['opset_from']}"
             + (f" converted to {facts['opset']}" if facts["opset"] != facts["opset_from"] else "")]
    if facts["layout"] == "NHWC":
        steps.append("NHWC input given a Transpose to NCHW")
    if facts["softmax_dropped"]:
        steps.append("final Softmax dropped (the views need logits; the probabilities are unchanged)")
    log(f"{source}: converted by onnx2torch ({'; '.join(steps)}); {c}x{size}x{size} input, {k} classes, "
        f"normalization mean {[round(v, 3) for v in norm['mean']]} std {[round(v, 3) for v in norm['std']]}")
    return _measure(net, ONNX_FAMILY, kwargs, "onnx2torch", splits, x, y, names, norm, data, data_root, size,
                    resize, source, out, batch_size, log, probs_dtype=torch.float32)


def import_hint(path) -> str | None:
    """One sentence with the `python -m cnnlib import` command, when `path` is a weights file and not a
    CNN Lens checkpoint; None otherwise (then the original error stands)."""
    if is_onnx(path) and os.path.isfile(path):
        return (f"{os.path.basename(str(path))} is an ONNX model, not a CNN Lens checkpoint; turn it into one with: "
                f"python -m cnnlib import {shlex.quote(str(path))} --data PATH/TO/IMAGE_FOLDER --out "
                f"{shlex.quote(os.path.join('checkpoints', os.path.splitext(os.path.basename(str(path)))[0] + '.pt'))}")
    try:
        if is_safetensors(path):
            sd, _ = read_safetensors(path)
        else:
            obj = safe_torch_load(path)
            if isinstance(obj, dict) and "format_version" in obj:
                return None
            sd = find_state_dict(obj)
    except CheckpointError:
        return None
    model, data = "torchvision/NAME", "PATH/TO/IMAGE_FOLDER"
    shape = simple_cnn_shape(sd)
    try:
        k = infer_num_classes(sd)
        if shape:
            net = get_model("simple_cnn", num_classes=k, in_channels=shape[0], image_size=shape[1])
            match_state_dict(net, dict(sd), "simple_cnn")
            model = "simple_cnn"
            if (k, shape) == (10, (3, 32)):
                data = "cifar10"
    except CNNLibError:
        pass
    stem = os.path.splitext(os.path.basename(str(path)))[0]
    cmd = (f"python -m cnnlib import {shlex.quote(str(path))} --model {model} --data {data} "
           f"--out {shlex.quote(os.path.join('checkpoints', stem + '.pt'))}")
    name = os.path.basename(str(path))
    return (f"{name} is a bare weights file ({len(sd)} tensors), not a CNN Lens checkpoint; "
            f"turn it into one with: {cmd}"
            + ("" if model == "simple_cnn" else " (NAME: the torchvision/ or timm/ architecture it was trained as)"))
