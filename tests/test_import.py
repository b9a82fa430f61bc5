"""Bring your own model: `python -m cnnlib import` on tutorial, torchvision and timm weights, and hostile files."""
from __future__ import annotations

import glob
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from cnnlib.__main__ import main
from cnnlib.io.checkpoint import load_checkpoint
from cnnlib.data.datasets import load_dataset
from cnnlib.inference import load_model, predict
from cnnlib.models.registry import get_model
from cnnlib.models.zoo import IMAGENET_MEAN, IMAGENET_STD

from conftest import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TutorialCNN(nn.Module):
    """The network as the original tutorial writes it: nn.Sequential blocks, so its parameter names
    (features.0.weight, classifier.1.weight, ...) differ from cnnlib's simple_cnn (conv1.weight, fc1.weight)."""

    def __init__(self, num_classes=10, conv2_kernel=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, conv2_kernel, padding=conv2_kernel // 2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so a mix-up of BN tensors changes predictions."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(1 + 0.3 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def cli(*args) -> tuple[int, str, str]:
    """The CLI in-process (main() is what `python -m cnnlib` runs): (exit code, stdout, stderr)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:    # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def folder32(tmp_path_factory):
    """4 classes of 32x32 RGB (the tutorial's input size), train/ and test/."""
    return write_image_folder(tmp_path_factory.mktemp("byom32") / "data", n_train=24, n_test=32, size=32)


@pytest.fixture(scope="module")
def folder64(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("byom64") / "data", n_train=8, n_test=12, size=64)


# ----------------------------------------------------------------------------- the tutorial's best_model.pth

def test_tutorial_state_dict_imports_with_the_same_predictions(tmp_path, folder32):
    torch.manual_seed(0)
    net = randomize_bn(TutorialCNN(num_classes=4))
    weights = tmp_path / "best_model.pth"
    torch.save(net.state_dict(), weights)                          # the tutorial's way: a bare state dict
    # the model's output order differs from the folders' sorted order: the class list says which is which
    order = ["red", "green", "blue", "gray"]
    (tmp_path / "classes.txt").write_text("\n".join(order) + "\n")
    out = tmp_path / "tutorial.pt"
    rc, stdout, err = cli("import", weights, "--model", "simple_cnn", "--data", folder32, "--out", out,
                          "--mean", 0.5, 0.5, 0.5, "--std", 0.5, 0.5, 0.5, "--classes", tmp_path / "classes.txt",
                          "--data-root", tmp_path / "root")
    assert rc == 0, err
    assert "by order" in stdout
    ckpt = load_checkpoint(str(out))
    assert ckpt["format_version"] == 2 and ckpt["model"]["name"] == "simple_cnn"
    assert ckpt["classes"] == order and ckpt["input_shape"] == [3, 32, 32]
    assert ckpt["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert ckpt["source"] == {"weights": "best_model.pth", "imported": True, "matched_by": "order"}
    assert ckpt["config"]["recipe"] == "imported" and ckpt["history"] == [] and ckpt["best_epoch"] is None
    assert ckpt["metrics"]["val_acc"] is None and ckpt["metrics"]["train_seconds"] is None
    tp = ckpt["test_predictions"]
    assert tp["targets"].dtype == torch.int16 and tp["probs"].dtype == torch.float16

    # the original network on the same test images, labels mapped to the class list's order by name
    splits = load_dataset(folder32, str(tmp_path / "root"))
    x, y = splits["test"]
    y = torch.tensor([order.index(c) for c in splits["classes"]])[y]
    with torch.no_grad():
        logits = net((x.float() / 255 - 0.5) / 0.5)
    preds = logits.argmax(1)
    assert torch.equal(tp["targets"].long(), y)
    assert torch.equal(tp["preds"].long(), preds)
    assert ckpt["metrics"]["test_acc"] == pytest.approx(float((preds == y).float().mean()), abs=1e-12)

    # the weights are the tutorial's, tensor by tensor; load_model + predict work on the result
    model = load_model(str(out))
    theirs = [v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    ours = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours)) and len(theirs) == len(ours)
    image = sorted(glob.glob(os.path.join(folder32, "test", "*", "*.png")))[0]
    top = predict(model, image, k=2)
    assert len(top) == 2 and top[0]["class"] in order


def test_structurally_different_weights_are_refused_naming_the_first_misfit(tmp_path, folder32):
    weights = tmp_path / "five_by_five.pth"
    torch.save(TutorialCNN(num_classes=4, conv2_kernel=5).state_dict(), weights)
    rc, _, err = cli("import", weights, "--model", "simple_cnn", "--data", folder32, "--out", tmp_path / "x.pt",
                     "--data-root", tmp_path / "root")
    assert rc == 2 and not (tmp_path / "x.pt").exists()
    assert err.strip() == ("error: the weights' 7th tensor features.4.weight (64, 32, 5, 5) does not fit "
                           "simple_cnn's conv2.weight (64, 32, 3, 3)")
    # ten outputs, four class folders: one sentence that says what to do
    torch.save(TutorialCNN(num_classes=10).state_dict(), weights)
    rc, _, err = cli("import", weights, "--model", "simple_cnn", "--data", folder32, "--data-root", tmp_path / "root",
                     "--out", tmp_path / "x.pt")
    assert rc == 2 and "the weights have 10 outputs" in err and "--classes FILE" in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- torchvision and timm

@pytest.mark.parametrize("name,form", [("torchvision/resnet18", "nested"),
                                       ("torchvision/mobilenet_v3_small", "safetensors"),
                                       ("timm/resnet10t", "bare")])
def test_foreign_models_import_and_predict(tmp_path, folder64, name, form):
    torch.manual_seed(0)
    net = randomize_bn(get_model(name, num_classes=4))
    sd = net.state_dict()
    if form == "nested":       # a training script's checkpoint, saved from a DataParallel model
        weights = tmp_path / "finetuned.pth"
        torch.save({"epoch": 7, "model_state_dict": {"module." + k: v for k, v in sd.items()},
                    "optimizer_state_dict": {"state": {}, "param_groups": []}}, weights)
    elif form == "safetensors":
        from safetensors.torch import save_file
        weights = tmp_path / "finetuned.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(weights))
    else:
        weights = tmp_path / "finetuned.pth"
        torch.save(sd, weights)
    out = tmp_path / "imported.pt"
    # photos sorted into class folders and nothing else (no train/, test/): all of them are the test split
    data = os.path.join(folder64, "test") if form == "bare" else folder64
    rc, stdout, err = cli("import", weights, "--model", name, "--data", data, "--out", out,
                          "--image-size", 64, "--resize", 72, "--data-root", tmp_path / "root")
    assert rc == 0, err
    assert "by names" in stdout
    ckpt = load_checkpoint(str(out))
    assert ckpt["model"] == {"name": name, "kwargs": {"num_classes": 4, "in_channels": 3, "image_size": 64}}
    assert ckpt["input_shape"] == [3, 64, 64] and ckpt["preprocessing"] == {"resize": 72, "crop": 64}
    assert ckpt["normalization"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert ckpt["normalization"]["std"] == pytest.approx(IMAGENET_STD)
    assert ckpt["classes"] == ["blue", "gray", "green", "red"] and ckpt["data"]["sizes"]["test"] == 12
    tp = ckpt["test_predictions"]
    assert ckpt["metrics"]["test_acc"] == pytest.approx(float((tp["preds"] == tp["targets"]).float().mean()))
    model = load_model(str(out))
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k
    image = sorted(glob.glob(os.path.join(folder64, "test", "*", "*.png")))[0]
    top = predict(model, image, k=4)
    assert [t["class"] for t in top] and sum(t["prob"] for t in top) == pytest.approx(1, abs=1e-4)


# ----------------------------------------------------------------------------- hostile and broken files

class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cnnlib-byom-pwned-{os.getpid()}")


def _hostile(kind: str, path):
    if kind == "code":
        with open(path, "wb") as f:
            pickle.dump({"conv1.weight": RunsCode()}, f)
    elif kind == "code-zip":
        torch.save({"conv1.weight": RunsCode()}, path)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        torch.save(TutorialCNN(num_classes=4).state_dict(), path)
        path.write_bytes(path.read_bytes()[:20000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other-arch":
        torch.save(get_model("torchvision/resnet18", num_classes=4).state_dict(), path)
    elif kind == "nan":
        sd = TutorialCNN(num_classes=4).state_dict()
        sd["classifier.1.weight"][3, 5] = float("nan")
        torch.save(sd, path)
    elif kind == "safetensors":
        path.write_bytes((1000).to_bytes(8, "little") + b'{"a": garbage')
    elif kind == "no-weights":
        torch.save({"epoch": 3, "lr": 0.1}, path)


@pytest.mark.parametrize("kind,pattern", [
    ("code", "refused"), ("code-zip", "refused"), ("random", ""), ("truncated", ""), ("empty", "empty"),
    ("other-arch", r"1st tensor conv1.weight \(64, 3, 7, 7\) does not fit simple_cnn's conv1.weight \(32, 3, 3, 3\)"),
    ("nan", "NaN"), ("safetensors", "not a readable .safetensors file"), ("no-weights", "no state dict"),
])
def test_hostile_weights_get_one_sentence(tmp_path, folder32, kind, pattern):
    path = tmp_path / ("weights.safetensors" if kind == "safetensors" else "weights.pth")
    _hostile(kind, path)
    rc, stdout, err = cli("import", path, "--model", "simple_cnn", "--data", folder32, "--out", tmp_path / "o.pt",
                          "--data-root", tmp_path / "root")
    assert rc == 2, (stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0], re.IGNORECASE), lines
    assert "Traceback" not in err and "weights_only" not in err
    assert not os.path.exists(MARKER) and not (tmp_path / "o.pt").exists()


def test_predict_on_a_weights_file_gives_the_import_command(tmp_path):
    weights = tmp_path / "best_model.pth"
    torch.save(TutorialCNN(num_classes=10).state_dict(), weights)       # the CIFAR-10 tutorial's file
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", str(weights), str(image)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: best_model.pth is a bare weights file (18 tensors), not a CNN Lens checkpoint; turn it into one with: "
        f"python -m cnnlib import {weights} --model simple_cnn --data cifar10 --out checkpoints/best_model.pt"]
    # a torchvision network's weights: the command names the family to fill in
    torch.save(get_model("torchvision/resnet18", num_classes=3).state_dict(), weights)
    rc, _, err = cli("predict", weights, image)
    assert rc == 2 and "python -m cnnlib import" in err and "--model torchvision/NAME" in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- cnnlib.models.weights directly

def test_weights_forms_and_matching(tmp_path):
    from cnnlib import CheckpointError
    from cnnlib.models.weights import infer_num_classes, load_weights_into, read_state_dict

    net = randomize_bn(TutorialCNN(num_classes=4))
    sd = net.state_dict()
    forms = [sd, {"net": sd}, {"model": {"state_dict": sd}}, {"checkpoint": {"model_state_dict": sd}, "epoch": 3},
             {"state_dict": {"module." + k: v for k, v in sd.items()}}]
    for form in forms:
        torch.save(form, tmp_path / "w.pth")
        back = read_state_dict(str(tmp_path / "w.pth"))
        assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert infer_num_classes(sd) == 4
    assert infer_num_classes(get_model("torchvision/squeezenet1_1", num_classes=7).state_dict()) == 7  # 1x1 conv head
    # matched by position: cnnlib's simple_cnn gets the tutorial's tensors; the BN counters are optional
    model = get_model("simple_cnn", num_classes=4)
    load_weights_into(model, {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, "simple_cnn")
    assert torch.equal(model.bn2.running_var, net.features[5].running_var)
    assert torch.equal(model.fc2.weight, net.classifier[4].weight)
    # a .safetensors file keeps no order: different names cannot be matched by position
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="keeps no tensor order"):
        load_weights_into(get_model("simple_cnn", num_classes=4), str(tmp_path / "w.safetensors"), "simple_cnn")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "own.safetensors"))
    load_weights_into(get_model("simple_cnn", num_classes=4), str(tmp_path / "own.safetensors"), "simple_cnn")
    with pytest.raises(CheckpointError, match=r"^the weights' 13th tensor classifier.1.weight \(128, 4096\) does not "
                                              r"fit simple_cnn's fc1.weight \(128, 1024\)$"):
        load_weights_into(get_model("simple_cnn", num_classes=4, image_size=16), sd, "simple_cnn")
