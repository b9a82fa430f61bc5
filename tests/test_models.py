"""Model names: cnnlib's registry, torchvision/<name> and timm/<name>, and each family's preprocessing."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from cnnlib import CNNLibError
from cnnlib.models.registry import default_preprocessing, get_model, list_models
from cnnlib.models.zoo import IMAGENET_MEAN, IMAGENET_STD


def test_registry_lists_and_fails_loudly():
    assert {"simple_cnn", "resnet9"} <= set(list_models())
    with pytest.raises(CNNLibError, match="known models: .*simple_cnn"):
        get_model("no_such_net")


@pytest.mark.parametrize("name,shape,classes", [("simple_cnn", (3, 32, 32), 10), ("simple_cnn", (1, 28, 28), 7),
                                                ("resnet9", (3, 32, 32), 10), ("resnet9", (1, 28, 28), 3)])
def test_models_fit_any_input(name, shape, classes):
    model = get_model(name, num_classes=classes, in_channels=shape[0], image_size=shape[1]).eval()
    assert model(torch.rand(2, *shape)).shape == (2, classes)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    calls = {}  # every module instance runs exactly once per forward (hooks and Captum rely on it)
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n, m in model.named_modules() if not list(m.children())]
    model(torch.rand(1, *shape))
    for h in handles:
        h.remove()
    assert calls and max(calls.values()) == 1


def test_simple_cnn_is_the_original_architecture():
    m = get_model("simple_cnn")
    assert [type(x).__name__ for x in m.children()] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
        "Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv2.out_channels) == (3, 32, 64)
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (4096, 128, 10)


# ----------------------------------------------------------------------------- foreign families

@pytest.mark.parametrize("name", ["torchvision/resnet18", "torchvision/mobilenet_v3_small", "timm/resnet10t"])
def test_foreign_models_take_cnnlibs_arguments(name):
    # the kwargs cnnlib's training passes every builder; dropout and width are accepted and ignored
    kwargs = {"num_classes": 5, "image_size": 48, "dropout": 0.3, "width": 16}
    model = get_model(name, in_channels=3, **kwargs).eval()
    assert model(torch.rand(2, 3, 48, 48)).shape == (2, 5)
    gray = get_model(name, in_channels=1, **kwargs).eval()            # the first conv takes one channel
    assert gray(torch.rand(2, 1, 48, 48)).shape == (2, 5)
    assert not any("/" in n for n in list_models())                   # list_models stays cnnlib's own


@pytest.mark.parametrize("name,pattern", [
    ("torchvision/resnet1800", r"torchvision has no classification model 'resnet1800'; close names: resnet18"),
    ("torchvision/fasterrcnn_resnet50_fpn", "torchvision has no classification model"),
    ("timm/no_such_timm_net", "timm has no model 'no_such_timm_net'"),
    ("timm/", "names no architecture"),
    ("keras/resnet50", r"torchvision/<name> .* timm/<name>"),
])
def test_unknown_names_say_how_to_name_models(name, pattern):
    with pytest.raises(CNNLibError, match=pattern):
        get_model(name, num_classes=3)


def test_unexpected_arguments_fail_loudly():
    with pytest.raises(CNNLibError, match="unexpected argument.*depth"):
        get_model("torchvision/resnet18", num_classes=3, depth=50)


def test_default_preprocessing_per_family():
    imagenet = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    assert default_preprocessing("torchvision/resnet18") == imagenet
    assert default_preprocessing("torchvision/mobilenet_v3_small") == imagenet
    assert default_preprocessing("torchvision/inception_v3")["crop"] == 299      # trained at 299 px
    timm_pre = default_preprocessing("timm/resnet10t")                          # from its pretrained_cfg
    assert timm_pre["crop"] == 176 and timm_pre["resize"] == int(176 / 0.875)
    assert timm_pre["mean"] == pytest.approx(IMAGENET_MEAN) and timm_pre["std"] == pytest.approx(IMAGENET_STD)
    vit = default_preprocessing("timm/vit_tiny_patch16_224")
    assert vit["crop"] == 224 and vit["mean"] == pytest.approx([0.5, 0.5, 0.5])
    assert default_preprocessing("simple_cnn") is None and default_preprocessing("resnet9") is None
    with pytest.raises(CNNLibError, match="unknown model"):
        default_preprocessing("no_such_net")
