"""cnnlib.teach.arithmetic and cnnlib.teach.toy: one unit's conv -> BatchNorm -> activation -> pool written out reproduces what forward
hooks see (rtol 1e-5), on simple_cnn, resnet9 and torchvision's resnet18; the head through softmax
reproduces the model's logits and probabilities; conv sizes and the toy convolution match torch."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cnnlib.teach import arithmetic, toy
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model
from modeltools import MEAN, STD, assert_unchanged, logits_of, make_model, snapshot
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-5, 1e-6      # float32 precision: the model sums in float32, the arithmetic in float64


def tv_resnet18(size=64, num_classes=4, seed=0):
    """torchvision's resnet18 (random weights) with non-trivial BatchNorm statistics and a fake meta."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.meta = {"input_shape": [3, size, size], "normalization": {"mean": MEAN, "std": STD},
                  "classes": [f"c{i}" for i in range(num_classes)]}
    return model.eval()


def image(size=32, c=3, seed=0):
    return torch.rand(c, size, size, generator=torch.Generator().manual_seed(seed))


def check_steps(out, kinds):
    assert [s["kind"] for s in out["steps"]] == kinds
    for s in out["steps"]:
        np.testing.assert_allclose(s["result"], s["hook"], rtol=RTOL, atol=ATOL, err_msg=f"{s['kind']} {s['layer']}")
        assert out[s["kind"]] is s
    conv = out["conv"]
    np.testing.assert_allclose(conv["products"], conv["patch"] * conv["kernel"])
    assert conv["sum"] == pytest.approx(conv["products"].sum())
    assert conv["result"] == pytest.approx(conv["sum"] + (conv["bias"] or 0.0))
    assert (conv["patch"][:, conv["padding_mask"]] == 0).all()
    if "batchnorm" in out:
        bn = out["batchnorm"]
        assert bn["input"] == out["conv"]["hook"]
        assert bn["result"] == pytest.approx(bn["gamma"] * (bn["input"] - bn["mean"]) / np.sqrt(bn["var"] + bn["eps"])
                                             + bn["beta"])
    if "pool" in out:
        p = out["pool"]
        assert p["values"][p["unit_at"]] == pytest.approx(out["steps"][-2]["hook"])
        if p["type"] == "MaxPool2d":
            assert p["result"] == np.nanmax(p["values"]) == p["values"][p["argmax"]]
        else:
            assert p["result"] == pytest.approx(np.nansum(p["values"]) / p["divisor"])


@pytest.fixture(scope="module")
def shipped():
    return {n: load_model(os.path.join(ROOT, "checkpoints", f"{n}.pt"), "cpu") for n in ("simple_cnn", "resnet9")}


@pytest.mark.parametrize("layer,unit", [("conv1", (3, 0, 0)), ("conv1", (31, 17, 9)), ("conv2", (5, 15, 15)),
                                        ("conv2", (60, 4, 11))])
def test_simple_cnn_both_convs(shipped, layer, unit):
    model = shipped["simple_cnn"]
    snap = snapshot(model)
    out = arithmetic.unit_arithmetic(model, image(), layer, *unit)
    assert_unchanged(model, snap)
    first = ["normalize"] if layer == "conv1" else []
    check_steps(out, first + ["conv", "batchnorm", "activation", "pool"])
    conv = out["conv"]
    assert out["layer"] == layer and conv["kernel"].shape == ((3 if layer == "conv1" else 32), 3, 3)
    assert conv["stride"] == (1, 1) and conv["padding"] == (1, 1) and conv["bias"] is not None
    assert [s["layer"] for s in out["steps"][len(first):]] == [layer, "bn" + layer[-1], "relu" + layer[-1],
                                                               "pool" + layer[-1]]
    if unit[1:] == (0, 0):                  # the corner: the top row and left column are zero padding
        assert conv["rows"][0] == -1 and conv["padding_mask"][0].all() and conv["padding_mask"][:, 0].all()
        assert not conv["padding_mask"][1:, 1:].any()
        np.testing.assert_allclose(out["normalize"]["raw"][:, 1:, 1:], image()[:, :2, :2].double().numpy())
    pool = out["pool"]
    assert pool["window"] == (unit[1] // 2, unit[2] // 2) and pool["values"].shape == (2, 2)
    assert act_formula(out) == "max(0, x)"


def act_formula(out):
    return out["activation"]["formula"]


@pytest.mark.parametrize("layer,conv", [("layer1.residual", "layer1.residual.body.conv1"),
                                        ("layer3.residual.body.conv2", "layer3.residual.body.conv2"),
                                        ("layer2", "layer2.conv")])
def test_resnet9_conv_inside_residual_block(shipped, layer, conv):
    model = shipped["resnet9"]
    snap = snapshot(model)
    out = arithmetic.unit_arithmetic(model, image(seed=1), layer, 7, 2, 3)
    assert_unchanged(model, snap)
    assert out["layer"] == conv and out["requested"] == layer
    # inside the residual body nothing pools after the ReLU (the sum with the shortcut comes next)
    check_steps(out, ["conv", "batchnorm", "activation"] + (["pool"] if conv == "layer2.conv" else []))
    assert out["conv"]["bias"] is None


@pytest.mark.parametrize("unit", [(3, 0, 0), (11, 5, 7), (63, 31, 30)])
def test_torchvision_resnet18_stem(unit):
    model = tv_resnet18()
    snap = snapshot(model)
    out = arithmetic.unit_arithmetic(model, image(64, seed=2), "conv1", *unit)
    assert_unchanged(model, snap)
    check_steps(out, ["normalize", "conv", "batchnorm", "activation", "pool"])
    conv, pool = out["conv"], out["pool"]
    assert conv["stride"] == (2, 2) and conv["padding"] == (3, 3) and conv["kernel"].shape == (3, 7, 7)
    y, x = unit[1:]
    assert conv["rows"] == [2 * y - 3 + i for i in range(7)] and conv["cols"] == [2 * x - 3 + j for j in range(7)]
    assert [s["layer"] for s in out["steps"][1:]] == ["conv1", "bn1", "relu", "maxpool"]
    # maxpool 3x3, stride 2, padding 1: overlapping windows; the first one holding the unit is written out
    assert pool["kernel_size"] == (3, 3) and pool["stride"] == (2, 2) and pool["padding"] == (1, 1)
    py = pool["window"][0]
    assert pool["rows"] == [2 * py - 1 + i for i in range(3)] and y in pool["rows"] and x in pool["cols"]
    assert np.isnan(pool["values"][pool["padding_mask"]]).all()
    assert len(pool["windows"]) >= 1 and pool["window"] == min(pool["windows"])


def test_torchvision_block_stops_at_the_shortcut_sum():
    """layer1.0.conv2 -> bn2, then `out += identity` changes bn2's output in place before the ReLU: the chain
    stops at bn2 (the ReLU reads the sum, not the BatchNorm's output)."""
    model = tv_resnet18()
    out = arithmetic.unit_arithmetic(model, image(64, seed=3), "layer1.0.conv2", 5, 3, 4)
    check_steps(out, ["conv", "batchnorm"])
    out = arithmetic.unit_arithmetic(model, image(64, seed=3), "layer2.0", 9, 1, 2)    # starts with layer2.0.conv1
    assert out["layer"] == "layer2.0.conv1" and out["conv"]["stride"] == (2, 2)
    check_steps(out, ["conv", "batchnorm", "activation"])
    assert out["activation"]["layer"] == "layer2.0.relu.call1"


class Odd(nn.Module):
    """Stride, dilation, groups (depthwise), 'same' padding, a biased conv without BatchNorm, LeakyReLU, AvgPool."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = nn.LeakyReLU(0.1)
        self.dw = nn.Conv2d(6, 6, 3, padding="same", groups=6)             # depthwise
        self.act2 = nn.SiLU()
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.grouped = nn.Conv2d(6, 4, (3, 1), stride=(1, 2), groups=2, bias=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        x = self.pool(self.act2(self.dw(self.act1(self.bn1(self.conv1(x))))))
        return self.head(self.grouped(x))


def odd_model():
    torch.manual_seed(0)
    m = Odd().eval()
    m.bn1.running_mean.uniform_(-0.2, 0.2)
    m.bn1.running_var.uniform_(0.5, 1.5)
    m.meta = {"input_shape": [3, 15, 15], "normalization": {"mean": MEAN, "std": STD}, "classes": ["a", "b", "c"]}
    return m


@pytest.mark.parametrize("layer,unit,kinds", [("conv1", (2, 0, 7), ["normalize", "conv", "batchnorm", "activation"]),
                                              ("dw", (4, 3, 0), ["conv", "activation", "pool"]),
                                              ("grouped", (3, 1, 1), ["conv"])])
def test_stride_dilation_groups_same_padding(layer, unit, kinds):
    model = odd_model()
    out = arithmetic.unit_arithmetic(model, image(15, seed=4), layer, *unit)
    check_steps(out, kinds)
    conv = out["conv"]
    if layer == "dw":
        assert conv["groups"] == 6 and conv["input_channels"] == [4] and conv["kernel"].shape == (1, 3, 3)
        assert out["pool"]["type"] == "AvgPool2d"
    if layer == "grouped":
        assert conv["input_channels"] == [3, 4, 5] and conv["kernel"].shape == (3, 3, 1)
    if layer == "conv1":
        assert conv["rows"] == [-2, 0, 2] and conv["cols"] == [12, 14, 16]
        assert out["activation"]["formula"].startswith("x if x > 0")


def test_unit_arithmetic_errors():
    model = make_model()
    x = image(16)
    with pytest.raises(CNNLibError, match="runs no Conv2d"):
        arithmetic.unit_arithmetic(model, x, "relu1", 0, 0, 0)
    with pytest.raises(CNNLibError, match="outside"):
        arithmetic.unit_arithmetic(model, x, "conv2", 64, 0, 0)
    with pytest.raises(CNNLibError, match="no layer"):
        arithmetic.unit_arithmetic(model, x, "conv9", 0, 0, 0)
    with pytest.raises(CNNLibError, match="channels"):
        arithmetic.unit_arithmetic(model, image(16, c=1), "conv1", 0, 0, 0)


@pytest.mark.parametrize("which", ["simple_cnn", "resnet9", "resnet18", "odd"])
def test_head_arithmetic_reproduces_logits_and_probs(shipped, which):
    model = {"resnet18": tv_resnet18, "odd": odd_model}.get(which, lambda: shipped.get(which))()
    size = model.meta["input_shape"][1]
    x = image(size, seed=5)
    snap = snapshot(model)
    out = arithmetic.head_arithmetic(model, x, top=5)
    assert_unchanged(model, snap)
    ref = logits_of(model, x[None])[0].double().numpy()
    np.testing.assert_allclose(out["logits"], ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["model_logits"], ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["probs"], torch.softmax(torch.from_numpy(ref), 0).numpy(), rtol=RTOL, atol=1e-7)
    assert out["target"] == int(ref.argmax()) and len(out["top"]) == min(5, len(out["input"]))
    sm = out["softmax"]
    np.testing.assert_allclose(sm["exp"], np.exp(out["logits"] - sm["max"]))
    assert sm["sum"] == pytest.approx(sm["exp"].sum()) and sm["probs"].sum() == pytest.approx(1.0)
    # the written-out sum: top terms + the rest + bias, times the model's logit scale, is the logit
    total = sum(r["contribution"] for r in out["top"]) + out["rest"] + (out["bias"] or 0.0)
    assert total * out["scale"] == pytest.approx(out["logit"], rel=1e-9, abs=1e-9)
    mags = [abs(r["contribution"]) for r in out["top"]]
    assert mags == sorted(mags, reverse=True) and mags[0] == pytest.approx(np.abs(out["contributions"]).max())
    expect = {"simple_cnn": ("fc2", "relu3", 1.0), "resnet9": ("fc", "pool", 0.125),
              "resnet18": ("fc", "avgpool", 1.0), "odd": ("head.2", "head.0", 1.0)}[which]
    assert (out["layer"], out["features_from"], out["scale"]) == expect
    assert out["top"][0]["unit"].startswith(expect[1] + "[")
    other = arithmetic.head_arithmetic(model, x, target=(out["target"] + 1) % len(ref))
    assert other["logit"] == pytest.approx(ref[(out["target"] + 1) % len(ref)], rel=1e-5, abs=1e-6)
    with pytest.raises(CNNLibError, match="out of range"):
        arithmetic.head_arithmetic(model, x, target=len(ref))


def test_head_unit_names_for_a_spatial_flatten():
    model = make_model(size=16)
    model.fc2 = model.relu3 = nn.Identity()   # the last Linear is now fc1, reading pool2 (64, 4, 4) flattened
    model.meta["classes"] = [str(i) for i in range(128)]
    out = arithmetic.head_arithmetic(model, image(16), top=3)
    assert out["layer"] == "fc1" and out["features_from"] == "pool2" and out["features_shape"] == [64, 4, 4]
    j = out["top"][0]["index"]
    c, y, x = np.unravel_index(j, (64, 4, 4))
    assert out["top"][0]["unit"] == f"pool2[c={c}, y={y}, x={x}]"


@pytest.mark.parametrize("size,k,s,p,d", [(32, 3, 1, 1, 1), (224, 7, 2, 3, 1), (15, 3, 2, 2, 2), (5, 5, 1, 0, 1),
                                          (112, 3, 2, 1, 1)])
def test_conv_output_size_matches_torch(size, k, s, p, d):
    out = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert toy.conv_output_size(size, k, s, p, d) == out.shape[-1]
    with pytest.raises(CNNLibError):
        toy.conv_output_size(2, 5, 1, 0)
    with pytest.raises(CNNLibError):
        toy.conv_output_size(8, 3, 0, 1)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_toy_convolution_matches_conv2d(stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    a, k = torch.randn(6, 7, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    out = toy.toy_convolution(a.numpy(), k.numpy(), stride, padding, dilation)
    ref = F.conv2d(a[None, None], k[None, None], stride=stride, padding=padding, dilation=dilation)[0, 0]
    np.testing.assert_allclose(out["output"], ref.numpy(), rtol=1e-12)
    assert out["padded"].shape == (6 + 2 * padding, 7 + 2 * padding)
    assert len(out["cells"]) == ref.numel()
    for cell in out["cells"]:
        vals = np.array([out["padded"][r, c] for r, c in cell["indices"]])
        assert cell["value"] == pytest.approx(float((vals * k.numpy().ravel()).sum()))
        assert cell["value"] == pytest.approx(float(ref[cell["out"]]))
        assert all(ok == (padding <= r < padding + 6 and padding <= c < padding + 7)
                   for ok, (r, c) in zip(cell["in_image"], cell["indices"]))
    with pytest.raises(CNNLibError):
        toy.toy_convolution(np.zeros((2, 2)), np.zeros((3, 3)))
