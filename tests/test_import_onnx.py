"""ONNX models in: `python -m cnnlib import model.onnx --data ...` (cnnlib.io.onnx_model, the model family "onnx").

The reference is onnxruntime run on the very images the import measured: the checkpoint's stored test
probabilities must equal its softmax to 1e-4, after a round trip through the checkpoint file too."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx2torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnlib.data.datasets import load_dataset  # noqa: E402
from cnnlib.errors import CheckpointError, CNNLibError  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402
from cnnlib.io.checkpoint import load_checkpoint  # noqa: E402
from cnnlib.modelops import Normalized  # noqa: E402

from conftest import CLASSES4, write_image_folder  # noqa: E402
from test_import import cli  # noqa: E402


def one_sentence_error(rc, err):
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def export(net, shape, path, dynamic=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.rand(*shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic is None else dynamic)
    return str(path)


def run_ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def images01(folder, size):
    x, _ = load_dataset(folder, image_size=size, resize=0)["test"]
    return x.float().div(255)                                         # what the import fed, (N, C, H, W) in [0, 1]


class NHWCNet(nn.Module):
    """A Keras-shaped classifier: (N, H, W, C) in, softmax probabilities out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x.permute(0, 3, 1, 2)))
        return torch.softmax(self.fc(x.mean((2, 3))), dim=1)


@pytest.fixture(scope="module")
def folder64(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("onnx64") / "data", n_train=8, n_test=12, size=64)


@pytest.fixture(scope="module")
def folder16(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("onnx16") / "data", n_train=8, n_test=16, size=16)


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory, folder64):
    """torchvision resnet18 (random weights, 4 classes) exported at 64 px, and its import via the CLI."""
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4)
    base = tmp_path_factory.mktemp("onnxr18")
    path = export(net, (1, 3, 64, 64), base / "resnet18.onnx")
    out = base / "resnet18.pt"
    rc, stdout, err = cli("import", path, "--data", folder64, "--out", out)
    assert rc == 0, err
    return {"onnx": path, "ckpt": str(out), "stdout": stdout}


def test_resnet18_onnx_import_reproduces_onnxruntime(resnet_onnx, folder64):
    ckpt = load_checkpoint(resnet_onnx["ckpt"])                        # weights_only, validated
    x = images01(folder64, 64)
    expected = torch.softmax(torch.from_numpy(run_ort(resnet_onnx["onnx"], x.numpy())), dim=1)
    stored = ckpt["test_predictions"]["probs"]
    assert stored.dtype == torch.float32 and stored.shape == expected.shape == (12, 4)
    assert float((stored - expected).abs().max()) < 1e-4
    assert torch.equal(ckpt["test_predictions"]["preds"].long(), expected.argmax(1))
    assert ckpt["model"]["name"] == "onnx" and ckpt["classes"] == sorted(CLASSES4)
    assert ckpt["input_shape"] == [3, 64, 64]
    assert ckpt["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert "onnx2torch" in resnet_onnx["stdout"]


def test_checkpoint_holds_the_graph_as_data_and_the_weights_once(resnet_onnx, folder64):
    ckpt = load_checkpoint(resnet_onnx["ckpt"])
    graph = ckpt["model"]["kwargs"]["graph"]
    assert isinstance(graph, str)
    weight_bytes = sum(t.numel() * t.element_size() for t in ckpt["state_dict"].values())
    assert len(graph) < weight_bytes / 100                              # the weights are not stored twice
    model = load_model(resnet_onnx["ckpt"])                             # converted again from the stored graph
    with torch.inference_mode():
        probs = torch.softmax(Normalized(model, model.meta)(images01(folder64, 64)), dim=1)
    assert float((probs - ckpt["test_predictions"]["probs"]).abs().max()) < 1e-5
    from cnnlib.io.metadata import read_meta                            # the torch-free reader takes it too
    assert read_meta(resnet_onnx["ckpt"])["model"]["kwargs"]["graph"] == graph


def test_views_work_on_the_converted_network(resnet_onnx, folder64):
    from cnnlib.explain.attribution import attribute
    from cnnlib.models.anatomy import default_gradcam_layer, feature_maps, list_layers
    model = load_model(resnet_onnx["ckpt"])
    layers = list_layers(model)
    assert any(r["type"] == "Conv2d" for r in layers) and layers[-1]["output_shape"] == [4]
    layer = default_gradcam_layer(model)
    assert layer in [r["name"] for r in layers]
    x01 = images01(folder64, 64)[0]
    maps = feature_maps(model, x01, [layers[0]["name"], layer])
    assert maps[layers[0]["name"]]["maps"].shape[0] == layers[0]["output_shape"][0]
    sal = attribute(model, x01, "saliency")
    assert sal["heatmap"].shape == (64, 64) and np.isfinite(sal["raw"]).all() and sal["heatmap"].max() > 0
    cam = attribute(model, x01, "gradcam", layer=layer)
    assert cam["heatmap"].shape == (64, 64) and np.isfinite(cam["heatmap"]).all()


def test_export_back_out_to_onnx_matches(resnet_onnx, folder64, tmp_path):
    from cnnlib.io.export import export_checkpoint
    files = export_checkpoint(resnet_onnx["ckpt"], "onnx", str(tmp_path / "again.onnx"))
    x = images01(folder64, 64)
    again = torch.softmax(torch.from_numpy(run_ort(files[0], x.numpy())), dim=1)
    stored = load_checkpoint(resnet_onnx["ckpt"])["test_predictions"]["probs"]
    assert float((again - stored).abs().max()) < 1e-4


def test_nhwc_softmax_model_gets_a_transpose_and_keeps_its_probabilities(tmp_path, folder16):
    torch.manual_seed(1)
    path = export(NHWCNet(), (1, 16, 16, 3), tmp_path / "keras_like.onnx")
    rc, stdout, err = cli("import", path, "--data", folder16, "--out", tmp_path / "k.pt")
    assert rc == 0, err
    assert "NHWC" in stdout and "Softmax dropped" in stdout
    ckpt = load_checkpoint(str(tmp_path / "k.pt"))
    assert ckpt["input_shape"] == [3, 16, 16]
    x = images01(folder16, 16)
    expected = torch.from_numpy(run_ort(path, x.permute(0, 2, 3, 1).numpy()))   # the file's own softmax
    assert float((ckpt["test_predictions"]["probs"] - expected).abs().max()) < 1e-4
    model = load_model(str(tmp_path / "k.pt"))
    with torch.inference_mode():
        logits = Normalized(model, model.meta)(x)
    assert not torch.allclose(logits.sum(1), torch.ones(len(x)))      # the views see logits, not probabilities
    assert float((torch.softmax(logits, 1) - expected).abs().max()) < 1e-4


def test_any_size_graph_needs_image_size_and_mean_std_are_used(tmp_path, folder16):
    dynamic = {"x": {0: "batch", 1: "height", 2: "width"}, "y": {0: "batch"}}
    path = export(NHWCNet(), (1, 16, 16, 3), tmp_path / "any.onnx", dynamic)
    line = one_sentence_error(*cli("import", path, "--data", folder16, "--out", tmp_path / "a.pt")[::2])
    assert "--image-size" in line
    rc, _, err = cli("import", path, "--data", folder16, "--out", tmp_path / "a.pt", "--image-size", 16,
                     "--mean", 0.5, 0.5, 0.5, "--std", 0.25, 0.25, 0.25)
    assert rc == 0, err
    ckpt = load_checkpoint(str(tmp_path / "a.pt"))
    x = (images01(folder16, 16) - 0.5) / 0.25
    expected = torch.from_numpy(run_ort(path, x.permute(0, 2, 3, 1).numpy()))
    assert float((ckpt["test_predictions"]["probs"] - expected).abs().max()) < 1e-4


def det_graph(path):
    """(N, 3, 8, 8) -> Det -> (N, 3): valid ONNX (onnxruntime runs it) with an operator onnx2torch lacks."""
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def test_unsupported_operator_is_one_sentence_naming_it(tmp_path, folder16):
    path = det_graph(tmp_path / "det.onnx")
    assert run_ort(path, np.random.rand(2, 3, 8, 8)).shape == (2, 3)     # a real, runnable ONNX model
    line = one_sentence_error(*cli("import", path, "--data", folder16, "--out", tmp_path / "d.pt")[::2])
    assert "Det (opset 17)" in line and "onnx2torch" in line
    assert not os.path.exists(tmp_path / "d.pt")


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", b"PK\x03\x04 a zip, not onnx", "half"])
def test_not_onnx_or_corrupt_is_one_sentence(tmp_path, folder16, resnet_onnx, content):
    path = tmp_path / "bad.onnx"
    if content == "half":
        data = open(resnet_onnx["onnx"], "rb").read()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    line = one_sentence_error(*cli("import", path, "--data", folder16, "--out", tmp_path / "b.pt")[::2])
    assert "bad.onnx" in line and ("empty" in line or "ONNX" in line)
    assert not os.path.exists(tmp_path / "b.pt")


def test_model_flag_rules(tmp_path, folder16, resnet_onnx):
    line = one_sentence_error(*cli("import", resnet_onnx["onnx"], "--model", "simple_cnn", "--data", folder16,
                                   "--out", tmp_path / "m.pt")[::2])
    assert "leave --model out" in line
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pth")
    line = one_sentence_error(*cli("import", tmp_path / "w.pth", "--data", folder16)[::2])
    assert "--model" in line


def test_a_damaged_or_hostile_stored_graph_is_refused(resnet_onnx, tmp_path):
    from cnnlib.models.onnx_graph import decode_graph, encode_graph
    ckpt = torch.load(resnet_onnx["ckpt"], weights_only=True)
    ckpt["model"]["kwargs"]["graph"] = "this is not base64 of a graph!"
    torch.save(ckpt, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="stored ONNX graph is damaged"):
        load_model(str(tmp_path / "damaged.pt"))
    # a graph whose weights name a file: the checkpoint must never make onnx read from the disk
    proto = onnx.load(resnet_onnx["onnx"])
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(CNNLibError, match="external data"):
        decode_graph(encode_graph(proto, strip=False))
    # a few bytes of graph must not make the loader allocate gigabytes of zeros
    proto = onnx.load(resnet_onnx["onnx"])
    del proto.graph.initializer[0].dims[:]
    proto.graph.initializer[0].dims.extend([2 ** 20, 2 ** 11])      # 8 GiB of float32
    with pytest.raises(CNNLibError, match="more than 4 GiB"):
        decode_graph(encode_graph(proto, strip=True))


class BatchOfOne(nn.Module):
    """A graph that hard-codes the batch size: reshape(1, -1) before the classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 7 * 7, 4)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(1, -1))


def test_a_batch_of_one_graph_is_one_sentence(tmp_path, folder16):
    path = export(BatchOfOne(), (1, 3, 16, 16), tmp_path / "one.onnx", dynamic={})
    line = one_sentence_error(*cli("import", path, "--data", folder16, "--out", tmp_path / "o.pt")[::2])
    assert "one image at a time" in line and "batch" in line


def test_using_an_onnx_file_as_a_checkpoint_gives_the_import_command(resnet_onnx, folder64):
    image = next(os.path.join(d, f) for d, _, fs in os.walk(folder64) for f in fs if f.endswith(".png"))
    line = one_sentence_error(*cli("predict", resnet_onnx["onnx"], image)[::2])
    assert "is an ONNX model" in line and "python -m cnnlib import" in line


class SmallCNN(nn.Module):
    """A small CNN with BatchNorm (folded by the exporter) and two ReLUs: quick enough for every page."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")
def test_every_dashboard_page_opens_on_an_onnx_checkpoint(tmp_path, folder16, monkeypatch):
    from test_dashboard_support import app, block, chart, go, images_in, ok
    torch.manual_seed(2)
    path = export(SmallCNN(), (1, 3, 16, 16), tmp_path / "small.onnx")
    (tmp_path / "ckpts").mkdir()
    rc, _, err = cli("import", path, "--data", folder16, "--out", tmp_path / "ckpts" / "small.pt")
    assert rc == 0, err
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(tmp_path / "ckpts"))
    monkeypatch.setenv("CNNLENS_PREFETCH", "0")
    at = app()
    for page, key in (("Evaluation", "eval_cm"), ("Embeddings", "emb_chart")):
        go(at, page)
        assert chart(at, key)["data"], page
    go(at, "Feature maps")
    assert images_in(block(at, "fm_grid"))
    go(at, "Saliency")
    assert images_in(block(at, "sal_result"))
    views = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "dashboard" / "views").glob("[a-z]*.py"))
    assert len(views) > 10
    for view in views:                                      # every other page: no exception, no error box
        at.switch_page(f"views/{view}").run()
        ok(at)


def test_node_names_cannot_inject_code_into_the_converted_network(tmp_path, monkeypatch):
    """torch.fx writes module names into generated Python source (getattr(self, "<name>")): a node name with a
    quote in it must not become code, whether it comes from an .onnx file or from a checkpoint's stored graph."""
    from onnx import TensorProto, helper, numpy_helper

    from cnnlib.models.onnx_graph import build_onnx, encode_graph
    monkeypatch.chdir(tmp_path)
    payload = 'gap"); getattr(__import__("os"), "system")("touch pwned"); ("'
    weight = numpy_helper.from_array(np.random.rand(4, 3, 3, 3).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=payload, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    net = build_onnx(encode_graph(proto, strip=False))               # the checkpoint path
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    onnx.save(proto, str(tmp_path / "names.onnx"))
    rc, _, err = cli("import", tmp_path / "names.onnx", "--data", write_image_folder(tmp_path / "d", 4, 4, size=8),
                     "--out", tmp_path / "n.pt")                       # the import path
    assert rc == 0, err
    load_model(str(tmp_path / "n.pt"))(torch.rand(1, 3, 8, 8))
    assert not os.path.exists(tmp_path / "pwned")
    assert all('"' not in name for name, _ in net.named_modules())
