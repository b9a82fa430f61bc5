"""Model registry (torchvision style) and the CNNs CNN Lens ships.

    register_model(name)   decorator adding a builder to the registry
    get_model(name, **kw)  build a fresh, randomly initialised network: a registered name, or
                           `torchvision/<name>` / `timm/<name>` for any torchvision or timm classifier
                           (cnnlib.models.zoo; weights=None, bring your own with `python -m cnnlib import`),
                           or "onnx" with kwargs graph=... (cnnlib.models.onnx_graph: an imported ONNX model's
                           stored graph, converted again by onnx2torch; not trainable, so not in list_models)
    list_models()          sorted names of cnnlib's own models
    default_preprocessing(name)  ImageNet resize / crop / mean / std for torchvision/ and timm/ models,
                                 None for cnnlib's own (the data's own size and statistics)

Every builder takes `num_classes`, `in_channels` and `image_size` so a model
fits any dataset. Rules that keep Captum and hooks working: activations are
never inplace, and each module instance is used exactly once in `forward`
(so a hook on `relu2` means one place in the network). Layers carry names a
learner recognises in a list (conv1, bn1, relu1, pool1, ...).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from torch import nn
from cnnlib.models import zoo
from cnnlib.models.onnx_graph import ONNX_FAMILY, build_onnx
from cnnlib.errors import CNNLibError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None):
    def wrap(fn):
        key = name or fn.__name__
        if key in _MODELS:
            raise CNNLibError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    if zoo.is_foreign(name):
        return zoo.build(name, **kwargs)
    if name == ONNX_FAMILY:
        try:
            return build_onnx(**kwargs)
        except TypeError as e:
            raise CNNLibError(f"cannot build model 'onnx' with {sorted(kwargs)}: {str(e)[:160]}") from None
    if name not in _MODELS:
        raise CNNLibError(f"unknown model {name!r}; known models: {', '.join(list_models())}, "
                          f"plus torchvision/<name> for any torchvision classification model "
                          f"(e.g. torchvision/resnet18) and timm/<name> for any timm model (e.g. timm/resnet10t)")
    try:
        return _MODELS[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # wrong or absurd kwargs for this builder
        raise CNNLibError(f"cannot build model {name!r} with {kwargs}: {str(e)[:160]}") from None


def default_preprocessing(name: str) -> dict | None:
    """{"resize", "crop", "mean", "std"} for torchvision/ and timm/ models; None for cnnlib's own (their
    data's own size and statistics)."""
    if zoo.is_foreign(name):
        return zoo.family_preprocessing(name)
    if name not in _MODELS and name != ONNX_FAMILY:
        get_model(name)   # raises the one "unknown model" sentence
    return None


def conv_bn_relu(cin: int, cout: int, index: str) -> list[tuple[str, nn.Module]]:
    """[conv{i}, bn{i}, relu{i}]: 3x3 conv (no bias, BN follows), BatchNorm, ReLU."""
    return [(f"conv{index}", nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
            (f"bn{index}", nn.BatchNorm2d(cout)),
            (f"relu{index}", nn.ReLU(inplace=False))]


class SimpleCNN(nn.Module):
    """The original tutorial network, for any channels / size / classes.

    x (B, C, H, W) -> conv1 3x3 (32) -> bn1 -> relu1 -> pool1 (B, 32, H/2, W/2)
      -> conv2 3x3 (64) -> bn2 -> relu2 -> pool2 (B, 64, H/4, W/4)
      -> flatten (B, 64*H/4*W/4 = 4096 for 32x32) -> fc1 (128) -> relu3 -> dropout -> fc2 (num_classes)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        side = image_size // 4
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU(inplace=False)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU(inplace=False)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.relu3 = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc2(self.dropout(self.relu3(self.fc1(self.flatten(x)))))


@register_model("simple_cnn")
def simple_cnn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
               dropout: float = 0.5) -> nn.Module:
    if image_size < 4 or image_size % 4:
        raise CNNLibError(f"simple_cnn needs an image size divisible by 4, got {image_size}")
    return SimpleCNN(num_classes, in_channels, image_size, dropout)


class Residual(nn.Module):
    """x + relu(bn(conv(relu(bn(conv(x))))))  — two 3x3 convs, shape preserved."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(OrderedDict(conv_bn_relu(channels, channels, "1")
                                              + conv_bn_relu(channels, channels, "2")))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench "ResNet-9" (Page, 2018) with a configurable base width w.

    x (B, C, H, W)
      prep:   conv-bn-relu (w)                       (B, w,  H,   W)
      layer1: conv-bn-relu (2w) + pool + residual     (B, 2w, H/2, W/2)
      layer2: conv-bn-relu (4w) + pool                (B, 4w, H/4, W/4)
      layer3: conv-bn-relu (8w) + pool + residual     (B, 8w, H/8, W/8)
      pool (global max) -> flatten (B, 8w) -> dropout -> fc (num_classes), scaled by 1/8
    """

    def __init__(self, num_classes=10, in_channels=3, width=64, dropout=0.0):
        super().__init__()
        w = width
        self.prep = nn.Sequential(OrderedDict(conv_bn_relu(in_channels, w, "")))
        self.layer1 = nn.Sequential(OrderedDict(
            conv_bn_relu(w, 2 * w, "") + [("pool", nn.MaxPool2d(2)), ("residual", Residual(2 * w))]))
        self.layer2 = nn.Sequential(OrderedDict(conv_bn_relu(2 * w, 4 * w, "") + [("pool", nn.MaxPool2d(2))]))
        self.layer3 = nn.Sequential(OrderedDict(
            conv_bn_relu(4 * w, 8 * w, "") + [("pool", nn.MaxPool2d(2)), ("residual", Residual(8 * w))]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = 0.125  # logit scale from the original; keeps early logits small

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(self.dropout(self.flatten(self.pool(x)))) * self.scale


@register_model("resnet9")
def resnet9(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 64,
            dropout: float = 0.0) -> nn.Module:
    if image_size < 8:
        raise CNNLibError(f"resnet9 needs images of at least 8x8, got {image_size}")
    return ResNet9(num_classes, in_channels, width, dropout)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the first Conv2d, in registration order."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise CNNLibError(f"{type(model).__name__} has no Conv2d layer")
