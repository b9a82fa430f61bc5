"""`python -m cnnlib export`: ONNX (checked in onnxruntime), TorchScript and safetensors, each with a model card."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from cnnlib.inference import load_model
from cnnlib.modelops import Normalized
from cnnlib.models.registry import get_model

from conftest import write_image_folder
from test_import import cli, randomize_bn


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An imported simple_cnn (random weights, non-trivial BatchNorm statistics) on 16x16 RGB, 4 classes."""
    base = tmp_path_factory.mktemp("export")
    folder = write_image_folder(base / "data", n_train=16, n_test=16, size=16)
    torch.manual_seed(0)
    torch.save(randomize_bn(get_model("simple_cnn", num_classes=4, image_size=16)).state_dict(), base / "w.pth")
    out = base / "model.pt"
    rc, _, err = cli("import", base / "w.pth", "--model", "simple_cnn", "--data", folder, "--out", out,
                     "--data-root", base / "root")
    assert rc == 0, err
    return str(out)


@pytest.fixture(scope="module")
def batch_and_reference(ckpt):
    """Five raw [0, 1] images (a batch size the export never saw) and the checkpoint's own logits for them."""
    model = load_model(ckpt)
    x = torch.rand(5, *model.meta["input_shape"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, Normalized(model, model.meta)(x), model


def read_card(path) -> dict:
    import yaml
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert "# simple_cnn on data" in text
    return header


def check_card(path, model, fmt):
    card = read_card(path)
    assert card["classes"] == model.meta["classes"] and card["dataset"] == "data" and card["recipe"] == "imported"
    assert card["library_name"] and "image-classification" in card["tags"] and fmt in card["tags"]
    assert card["metrics"] == ["accuracy"]
    acc = card["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert acc == pytest.approx(model.meta["metrics"]["test_acc"])
    assert card["preprocessing"]["mean"] == pytest.approx(model.meta["normalization"]["mean"])
    assert card["preprocessing"]["crop"] == model.meta["preprocessing"]["crop"]


def test_onnx_matches_torch_in_onnxruntime(tmp_path, ckpt, batch_and_reference):
    import onnx
    import onnxruntime as ort

    x, ref, model = batch_and_reference
    out = tmp_path / "model.onnx"
    rc, stdout, err = cli("export", ckpt, "--format", "onnx", "--out", out)
    assert rc == 0, err
    assert f"wrote {out}" in stdout and f"wrote {out}.md" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and not isinstance(inp.shape[0], int)          # a free batch axis
    logits = session.run(None, {"images": x.numpy()})[0]                         # (5, 4)
    assert logits.shape == (5, 4)
    assert np.array_equal(logits.argmax(1), ref.argmax(1).numpy())
    assert np.abs(logits - ref.numpy()).max() < 1e-4
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["cnnlens.classes"]) == model.meta["classes"]
    assert json.loads(props["cnnlens.normalization"]) == model.meta["normalization"]
    assert json.loads(props["cnnlens.preprocessing"]) == model.meta["preprocessing"]
    check_card(f"{out}.md", model, "onnx")


@pytest.mark.filterwarnings("ignore:.*torch.jit.load. is deprecated:FutureWarning")
def test_torchscript_matches_torch(tmp_path, ckpt, batch_and_reference):
    x, ref, model = batch_and_reference
    out = tmp_path / "model.torchscript.pt"
    rc, _, err = cli("export", ckpt, "--format", "torchscript", "--out", out)
    assert rc == 0, err
    extra = {"cnnlens.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        logits = scripted(x)
    assert torch.equal(logits.argmax(1), ref.argmax(1)) and (logits - ref).abs().max() < 1e-4
    assert json.loads(json.loads(extra["cnnlens.json"])["cnnlens.classes"]) == model.meta["classes"]
    check_card(f"{out}.md", model, "torchscript")


def test_safetensors_round_trips_into_the_same_network(tmp_path, ckpt, batch_and_reference):
    from cnnlib.models.weights import load_weights_into, read_safetensors

    x, ref, model = batch_and_reference
    out = tmp_path / "model.safetensors"
    rc, _, err = cli("export", ckpt, "--format", "safetensors", "--out", out)
    assert rc == 0, err
    sd, meta = read_safetensors(out)
    assert json.loads(meta["cnnlens.classes"]) == model.meta["classes"]
    rebuilt = get_model(meta["cnnlens.model"], **json.loads(meta["cnnlens.kwargs"]))
    rebuilt.load_state_dict(sd, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    again = get_model("simple_cnn", num_classes=4, image_size=16)
    load_weights_into(again, str(out), "simple_cnn")             # the file is also a weights file to import
    with torch.no_grad():
        assert torch.allclose(Normalized(again.eval(), model.meta)(x), ref, atol=1e-6)
    check_card(f"{out}.md", model, "safetensors")


def test_export_errors_are_one_sentence(tmp_path, ckpt):
    rc, _, err = cli("export", tmp_path / "missing.pt", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, _, err = cli("export", ckpt, "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert rc == 2 and "invalid choice" in err


def test_onnx_exports_a_torchvision_model(tmp_path, tmp_path_factory):
    """A foreign architecture (depthwise convs, hardswish, squeeze-excite) exports as exactly."""
    import onnxruntime as ort

    base = tmp_path_factory.mktemp("export-tv")
    folder = write_image_folder(base / "data", n_train=4, n_test=4, size=32)
    torch.manual_seed(0)
    net: nn.Module = randomize_bn(get_model("torchvision/mobilenet_v3_small", num_classes=4))
    torch.save(net.state_dict(), base / "w.pth")
    rc, _, err = cli("import", base / "w.pth", "--model", "torchvision/mobilenet_v3_small", "--data", folder,
                     "--out", base / "m.pt", "--image-size", 32, "--resize", 36, "--data-root", base / "root")
    assert rc == 0, err
    rc, _, err = cli("export", base / "m.pt", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert rc == 0, err
    model = load_model(str(base / "m.pt"))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = Normalized(model, model.meta)(x).numpy()
    logits = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert np.array_equal(logits.argmax(1), ref.argmax(1)) and np.abs(logits - ref).max() < 1e-4
