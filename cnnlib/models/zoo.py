"""Foreign architectures by name: `torchvision/<name>` and `timm/<name>`, always randomly initialised.

    build("torchvision/resnet18", num_classes=4)        torchvision.models.get_model(weights=None, num_classes=4)
    build("timm/resnet10t", num_classes=4, in_channels=1)  timm.create_model(pretrained=False, in_chans=1, ...)
    family_preprocessing("torchvision/resnet18")        {"resize": 256, "crop": 224, "mean": [..], "std": [..]}

No weights are ever downloaded here: bring your own with `python -m cnnlib import` (cnnlib.io.importer).
cnnlib passes every builder the same keyword arguments (num_classes, in_channels, image_size, dropout,
width); the foreign builders use what they can and ignore the rest:

    num_classes  the classifier's outputs
    in_channels  torchvision: the first Conv2d is rebuilt for C channels; timm: in_chans=C
    image_size   only where the architecture's shape depends on it (torchvision vit_*, timm models with
                 a fixed input size); everything else pools globally and takes any size
    dropout      ignored (it is inert in eval mode, which is all an imported model runs in)
    width        ignored (the name fixes the architecture)

torchvision and timm are imported on first use only (timm takes seconds to import).
"""
from __future__ import annotations

import difflib

from torch import nn
from cnnlib.errors import CNNLibError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FAMILIES = ("torchvision", "timm")


def is_foreign(name: str) -> bool:
    return isinstance(name, str) and name.split("/", 1)[0] in FAMILIES and "/" in name


def _close(name: str, choices) -> str:
    near = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; close names: {', '.join(near)}" if near else ""


# ----------------------------------------------------------------------------- torchvision

def torchvision_names() -> list[str]:
    """The classification models of torchvision.models (detection, video, ... excluded)."""
    import torchvision.models as tvm
    return tvm.list_models(module=tvm)


def _torchvision_check(arch: str) -> None:
    names = torchvision_names()
    if arch not in names:
        raise CNNLibError(f"torchvision has no classification model {arch!r}{_close(arch, names)} "
                          f"(all {len(names)}: torchvision.models.list_models(module=torchvision.models))")


def _rebuild_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d (in registration order) by one taking `in_channels` (same geometry)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels == in_channels:
                return
            if m.groups != 1:
                break
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                            bias=m.bias is not None, padding_mode=m.padding_mode)
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, new)
            return
    raise CNNLibError(f"cannot adapt {type(model).__name__} to {in_channels} input channels")


def build_torchvision(arch: str, num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None,
                      **ignored) -> nn.Module:
    import torchvision.models as tvm

    _torchvision_check(arch)
    extra = {"image_size": int(image_size)} if image_size and arch.startswith("vit_") else {}
    try:
        model = tvm.get_model(arch, weights=None, num_classes=int(num_classes), **extra)
    except (TypeError, ValueError, AssertionError) as e:
        raise CNNLibError(f"cannot build torchvision/{arch} with num_classes={num_classes} {extra}: {e}") from None
    if int(in_channels) != 3:
        _rebuild_first_conv(model, int(in_channels))
    return model


def _torchvision_preprocessing(arch: str) -> dict:
    """256 / 224 (the classic ImageNet recipe); models trained at another crop (inception_v3 299,
    efficientnet_b1+ ...) take torchvision's own resize / crop from the weights' metadata (no download)."""
    import torchvision.models as tvm

    _torchvision_check(arch)
    resize, crop, mean, std = 256, 224, IMAGENET_MEAN, IMAGENET_STD
    try:
        t = tvm.get_model_weights(arch).DEFAULT.transforms()
        if int(t.crop_size[0]) != 224:
            resize, crop = int(t.resize_size[0]), int(t.crop_size[0])
        mean, std = [float(v) for v in t.mean], [float(v) for v in t.std]
    except Exception:  # noqa: BLE001 - a model without registered weights: the classic recipe
        pass
    return {"resize": resize, "crop": crop, "mean": mean, "std": std}


# ----------------------------------------------------------------------------- timm

def _timm():
    try:
        import timm
    except ImportError:
        raise CNNLibError("timm/ models need the timm package: pip install timm") from None
    return timm


def _timm_check(arch: str):
    timm = _timm()
    if not timm.is_model(arch):
        raise CNNLibError(f"timm has no model {arch!r}{_close(arch, timm.list_models())} (see timm.list_models())")
    return timm


def _timm_cfg(arch: str) -> dict:
    cfg = _timm_check(arch).models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def build_timm(arch: str, num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None,
               **ignored) -> nn.Module:
    timm = _timm_check(arch)
    extra = {}
    if image_size and _timm_cfg(arch).get("fixed_input_size"):   # ViT-style: position embeddings fix the size
        extra["img_size"] = int(image_size)
    try:
        return timm.create_model(arch, pretrained=False, num_classes=int(num_classes), in_chans=int(in_channels),
                                 **extra)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise CNNLibError(f"cannot build timm/{arch} with num_classes={num_classes}, "
                          f"in_chans={in_channels} {extra}: {e}") from None


def _timm_preprocessing(arch: str) -> dict:
    """timm's eval transform from the pretrained config: crop = input_size, resize = crop / crop_pct."""
    cfg = _timm_cfg(arch)
    crop = int((cfg.get("input_size") or (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return {"resize": int(crop / crop_pct), "crop": crop,   # timm: scale_size = floor(img_size / crop_pct)
            "mean": [float(v) for v in cfg.get("mean") or IMAGENET_MEAN],
            "std": [float(v) for v in cfg.get("std") or IMAGENET_STD]}


# ----------------------------------------------------------------------------- one entry point

def build(name: str, **kwargs) -> nn.Module:
    """`torchvision/<arch>` or `timm/<arch>` -> randomly initialised network (see the module docstring)."""
    family, _, arch = name.partition("/")
    if not arch:
        raise CNNLibError(f"{name!r} names no architecture: write {family}/<name>, e.g. {family}/resnet18")
    unknown = set(kwargs) - {"num_classes", "in_channels", "image_size", "dropout", "width"}
    if unknown:
        raise CNNLibError(f"cannot build {name}: unexpected argument(s) {', '.join(sorted(unknown))}")
    try:
        return (build_torchvision if family == "torchvision" else build_timm)(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:   # absurd kwargs (negative sizes, ...)
        raise CNNLibError(f"cannot build {name} with {kwargs}: {str(e)[:160]}") from None


def family_preprocessing(name: str) -> dict:
    """How a torchvision/ or timm/ model's images are prepared: {"resize", "crop", "mean", "std"} (ImageNet
    style, from the family's own metadata)."""
    if not is_foreign(name):
        raise CNNLibError(f"{name!r} is not a torchvision/ or timm/ model name")
    family, _, arch = name.partition("/")
    return _torchvision_preprocessing(arch) if family == "torchvision" else _timm_preprocessing(arch)
