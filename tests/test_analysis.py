"""Evaluation, interpretation and attribution (issue 3): metrics against independent computations,
hand-checkable attributions, hooks/mode/parameters left untouched, and thread safety."""
import inspect
import json
import sys
import threading
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlib
from cnnlib import attribution, evaluate, interpret
from cnnlib.checkpoint import save_checkpoint
from cnnlib.errors import CNNLibError
from cnnlib.inference import normalize
from cnnlib.models import _MODELS, get_model, list_models

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def make_model(num_classes=4, in_channels=3, size=16, seed=0, name="simple_cnn", **kw):
    """A tiny network with non-trivial BatchNorm statistics and a fake checkpoint `meta`."""
    torch.manual_seed(seed)
    model = get_model(name, num_classes=num_classes, in_channels=in_channels, image_size=size, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.meta = {"classes": [f"c{i}" for i in range(num_classes)], "input_shape": [in_channels, size, size],
                  "normalization": {"mean": MEAN[:in_channels], "std": STD[:in_channels]}}
    return model.eval()


def images(n, c=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def logits_of(model, x01):
    """Independent forward: the model on normalized [0, 1] images (B, C, H, W)."""
    with torch.no_grad():
        return model(normalize(x01, model.meta))


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def snapshot(model):
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "params": [id(p) for p in model.parameters()],
            "training": [(n, m.training) for n, m in model.named_modules()],
            "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
            "grad_none": [p.grad is None for p in model.parameters()],
            "hooks": [(n, d, len(getattr(m, d, {}))) for n, m in model.named_modules() for d in HOOK_DICTS],
            "global_hooks": (len(nn.modules.module._global_forward_hooks),
                             len(nn.modules.module._global_backward_hooks))}


def assert_unchanged(model, snap):
    now = snapshot(model)
    for key in ("params", "training", "requires_grad", "grad_none", "hooks", "global_hooks"):
        assert now[key] == snap[key], key
    for k, v in snap["state"].items():
        assert torch.equal(now["state"][k], v), k


# -----------------------------------------------------------------------------
# evaluation: metrics

def test_confusion_matrix_and_per_class_hand_example():
    targets = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    probs = np.eye(3, dtype=np.float32)[preds] * 0.7 + 0.1
    r = evaluate.compute_report(targets, probs, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["accuracy"] == pytest.approx(3 / 5)
    got = {d["class"]: d for d in r["per_class"]}
    assert got["a"]["precision"] == pytest.approx(1 / 2) and got["a"]["recall"] == pytest.approx(1 / 2)
    assert got["b"]["precision"] == pytest.approx(2 / 3) and got["b"]["recall"] == pytest.approx(1.0)
    assert got["b"]["f1"] == pytest.approx(0.8)
    assert got["c"] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["confusion_normalized"][1] == [0.0, 1.0, 0.0]
    assert r["top5_accuracy"] == 1.0  # 3 classes: top-3 always holds the target


def test_report_matches_bruteforce_on_random_predictions():
    rng = np.random.default_rng(0)
    n, k = 400, 7
    logits = rng.normal(size=(n, k)) * 2
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    targets = rng.integers(0, k, n)
    r = evaluate.compute_report(targets, probs, [str(i) for i in range(k)])
    preds = probs.argmax(1)
    cm = [[sum(1 for t, p in zip(targets, preds) if t == i and p == j) for j in range(k)] for i in range(k)]
    assert r["confusion_matrix"] == cm
    for i, d in enumerate(r["per_class"]):
        tp = cm[i][i]
        npred, support = sum(cm[j][i] for j in range(k)), sum(cm[i])
        prec = tp / npred if npred else 0.0
        rec = tp / support if support else 0.0
        assert d["support"] == support
        assert d["precision"] == pytest.approx(prec) and d["recall"] == pytest.approx(rec)
        assert d["f1"] == pytest.approx(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        assert sum(r["confusion_normalized"][i]) == pytest.approx(1.0)
    top5 = np.mean([t in np.argsort(-p)[:5] for t, p in zip(targets, probs)])
    assert r["top5_accuracy"] == pytest.approx(top5)
    assert r["accuracy"] == pytest.approx(np.mean(preds == targets))
    losses = -np.log(probs[np.arange(n), targets])
    assert r["mean_loss"] == pytest.approx(losses.mean(), rel=1e-5)
    assert r["hardest"] == list(np.argsort(-losses, kind="stable")[:20])
    wrong = [i for i in range(n) if preds[i] != targets[i]]
    assert r["most_confident_wrong"] == sorted(wrong, key=lambda i: -probs[i, preds[i]])[:20]
    assert set(r) >= {"accuracy", "top5_accuracy", "classes", "confusion_matrix", "per_class", "ece", "n",
                      "confusion_normalized", "calibration", "most_confident_wrong", "hardest"}
    assert json.loads(json.dumps(r)) == r


def test_ece_on_a_constructed_case():
    # 5 samples at confidence 0.85 with 3 right (gap 0.25), 5 at 0.6 (edge of (0.5, 0.6]) with 4 right (gap 0.2).
    conf = np.array([0.85] * 5 + [0.6] * 5)
    right = np.array([1, 1, 1, 0, 0] + [1, 1, 1, 1, 0], bool)
    probs = np.stack([conf, 1 - conf], 1).astype(np.float64)
    targets = np.where(right, 0, 1)
    r = evaluate.compute_report(targets, probs, ["x", "y"], n_bins=10)
    assert r["ece"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.2, abs=1e-6)
    cal = r["calibration"]
    assert cal["count"] == [0, 0, 0, 0, 0, 5, 0, 0, 5, 0]
    assert cal["accuracy"][5] == pytest.approx(0.8) and cal["confidence"][5] == pytest.approx(0.6)
    assert cal["accuracy"][8] == pytest.approx(0.6) and cal["confidence"][0] is None
    assert r["mce"] == pytest.approx(0.25, abs=1e-6)
    # perfectly calibrated: ECE 0
    perfect = evaluate.calibration(np.full(10, 0.7), np.array([1] * 7 + [0] * 3), n_bins=5)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-12)


def test_compute_report_rejects_bad_input():
    with pytest.raises(CNNLibError):
        evaluate.compute_report([0, 1], np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(CNNLibError):
        evaluate.compute_report([], np.zeros((0, 2)), ["a", "b"])


# -----------------------------------------------------------------------------
# evaluation: predictions

def test_run_split_matches_an_independent_forward():
    model = make_model()
    x, y = images(37), torch.arange(37) % 4
    snap = snapshot(model)
    out = evaluate.run_split(model, x, y, batch_size=10)
    assert_unchanged(model, snap)
    logits = logits_of(model, x.float() / 255)
    assert out["probs"].dtype == np.float32 and out["probs"].shape == (37, 4)
    np.testing.assert_allclose(out["probs"], torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["losses"], F.cross_entropy(logits, y, reduction="none").numpy(), atol=1e-4)
    assert out["preds"].tolist() == logits.argmax(1).tolist() and out["targets"].dtype == np.int64
    np.testing.assert_allclose(evaluate.run_split(model, x.float() / 255, y)["probs"], out["probs"], atol=1e-5)


def test_predictions_for_reuses_stored_predictions_when_they_match():
    model = make_model()
    x, y = images(30), torch.arange(30) % 4
    ran = evaluate.run_split(model, x, y)
    model.meta["test_predictions"] = {"targets": y.to(torch.int16),
                                      "preds": torch.from_numpy(ran["preds"]).to(torch.int16),
                                      "probs": torch.from_numpy(ran["probs"]).to(torch.float16)}
    stored = evaluate.predictions_for(model, "test")
    assert stored["source"] == "stored" and stored["probs"].dtype == np.float32
    np.testing.assert_allclose(stored["losses"], ran["losses"], atol=5e-3)
    assert evaluate.predictions_for(model, "test", x, y)["source"] == "stored"
    y2 = y.flip(0)
    assert evaluate.predictions_for(model, "test", x, y2)["source"] == "computed"
    assert evaluate.predictions_for(model, "test", x, y, recompute=True)["source"] == "computed"
    assert evaluate.predictions_for(model, "val", x, y)["source"] == "computed"
    with pytest.raises(CNNLibError):
        evaluate.predictions_for(model, "val")
    del model.meta["test_predictions"]
    with pytest.raises(CNNLibError):
        evaluate.predictions_for(model, "test")


def test_query_misclassified_and_cells():
    targets = np.array([0, 1, 2, 0, 1, 2, 0])
    probs = np.array([[.9, .05, .05], [.7, .2, .1], [.1, .6, .3], [.2, .5, .3],
                      [.1, .8, .1], [.3, .3, .4], [.4, .35, .25]], np.float32)
    preds = {"targets": targets, "preds": probs.argmax(1), "probs": probs}
    imgs = np.arange(7 * 3 * 2 * 2, dtype=np.uint8).reshape(7, 3, 2, 2)
    q = evaluate.query_misclassified(preds, images=imgs)
    assert q["indices"].tolist() == [1, 2, 3]                      # confidence .7, .6, .5
    assert q["images"].dtype == np.uint8 and np.array_equal(q["images"], imgs[[1, 2, 3]])
    assert q["top3"][0] == [(0, pytest.approx(0.7)), (1, pytest.approx(0.2)), (2, pytest.approx(0.1))]
    by_loss = evaluate.query_misclassified(preds, sort="loss")
    assert by_loss["indices"].tolist() == [1, 3, 2]               # -log .2 (tie, data order), then -log .3
    assert evaluate.query_misclassified(preds, true_class=0)["indices"].tolist() == [3]
    assert evaluate.query_misclassified(preds, pred_class=0, limit=1)["indices"].tolist() == [1]
    assert evaluate.query_misclassified(preds, pred_class=0, limit=1)["count"] == 1
    cell = evaluate.query_cell(preds, 0, 0)
    assert cell["indices"].tolist() == [0, 6] and cell["images"] is None
    empty = evaluate.query_misclassified(preds, true_class=2, pred_class=0, images=imgs)
    assert len(empty["indices"]) == 0 and empty["images"].shape == (0, 3, 2, 2)


# -----------------------------------------------------------------------------
# evaluation: CLI

def _write_checkpoint(tmp_path, model, y, probs):
    path = tmp_path / "m.pt"
    save_checkpoint({"model": {"name": "simple_cnn", "kwargs": {"num_classes": 4, "image_size": 16}},
                     "state_dict": model.state_dict(), **{k: model.meta[k] for k in ("classes", "input_shape",
                                                                                      "normalization")},
                     "data": {"name": "fake"},
                     "test_predictions": {"targets": y.to(torch.int16), "preds": probs.argmax(1).to(torch.int16),
                                          "probs": probs.to(torch.float16)}}, str(path))
    return str(path)


def test_evaluate_main_with_stored_predictions_needs_no_dataset(tmp_path, capsys, monkeypatch):
    model = make_model()
    x, y = images(40), torch.arange(40) % 4
    probs = torch.from_numpy(evaluate.run_split(model, x, y)["probs"])
    path = _write_checkpoint(tmp_path, model, y, probs)

    def no_data(*a, **k):
        raise AssertionError("the dataset must not be loaded")
    fake = types.SimpleNamespace(load_checkpoint_split=no_data)
    monkeypatch.setitem(sys.modules, "cnnlib.data", fake)
    monkeypatch.setattr(cnnlib, "data", fake, raising=False)
    assert evaluate.evaluate_main([path, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 40 and rep["source"] == "stored" and rep["classes"] == ["c0", "c1", "c2", "c3"]
    assert rep["accuracy"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    assert evaluate.evaluate_main([path]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion matrix" in text and "c3" in text

    # --split val loads the data through cnnlib.data and recomputes
    calls = []
    fake.load_checkpoint_split = lambda meta, split, data, root: calls.append((split, data, root)) or (x, y)
    assert evaluate.evaluate_main([path, "--split", "val", "--json", "--data", "d", "--data-root", "r"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert calls == [("val", "d", "r")] and rep["source"] == "computed" and rep["n"] == 40

    # errors: one message on stderr, exit code 2
    assert evaluate.evaluate_main([str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# interpretation: layers, filters, feature maps

def _builder_kwargs(name):
    params = inspect.signature(_MODELS[name]).parameters
    return {"width": 4} if "width" in params else {}


@pytest.mark.parametrize("name", list_models())
def test_list_layers_for_every_registered_model(name):
    model = make_model(3, 1, 16, name=name, **_builder_kwargs(name))
    snap = snapshot(model)
    rows = interpret.list_layers(model)
    assert_unchanged(model, snap)
    assert rows and all(set(r) == {"name", "type", "output_shape", "params", "rf_size", "rf_stride"} for r in rows)
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: shapes.setdefault(n, list(o.shape[1:])) and None)
             for n, m in model.named_modules() if n]
    logits_of(model, torch.zeros(1, 1, 16, 16))
    for h in hooks:
        h.remove()
    for r in rows:
        assert r["output_shape"] == shapes[r["name"]] and len(r["output_shape"]) == 3
        assert r["params"] == sum(p.numel() for p in model.get_submodule(r["name"]).parameters())
    assert [r["rf_size"] for r in rows] == sorted(r["rf_size"] for r in rows)  # fields only grow
    assert interpret.default_gradcam_layer(model) in [r["name"] for r in rows]


def test_receptive_fields_by_hand():
    rows = {r["name"]: (r["rf_size"], r["rf_stride"]) for r in interpret.list_layers(make_model(size=32))}
    # conv 3x3 -> 3; pool 2/2 -> 3+1=4, stride 2; conv -> 4+2*2=8; pool -> 8+1*2=10, stride 4
    assert rows == {"conv1": (3, 1), "bn1": (3, 1), "relu1": (3, 1), "pool1": (4, 2),
                    "conv2": (8, 2), "bn2": (8, 2), "relu2": (8, 2), "pool2": (10, 4)}
    res = {r["name"]: (r["rf_size"], r["rf_stride"])
           for r in interpret.list_layers(make_model(name="resnet9", size=32, width=4))}
    assert res["layer1.pool"] == (6, 2) and res["layer1.residual"] == (14, 2)   # block = its longest path
    assert res["layer2.conv"] == (18, 2) and res["layer3.residual"] == (64, 8)
    assert res["pool"] == (88, 32)                                             # global pool over a 4x4 map


def test_first_layer_filters_and_kernels():
    model = make_model()
    w = model.conv1.weight.detach()
    tiles = interpret.first_layer_filters(model)
    assert tiles.shape == (32, 3, 3, 3) and tiles.dtype == np.float32
    assert np.allclose(tiles.min(axis=(1, 2, 3)), 0) and np.allclose(tiles.max(axis=(1, 2, 3)), 1)
    shared = interpret.first_layer_filters(w.half(), scale="shared")             # a history snapshot
    ref = ((w - w.min()) / (w.max() - w.min())).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(shared, ref, atol=2e-3)
    gray = interpret.first_layer_filters(make_model(in_channels=1))
    assert gray.shape == (32, 3, 3, 1)
    k = interpret.layer_kernels(model, "conv2", scale="kernel")
    assert k.shape == (64, 32, 3, 3) and np.allclose(k.min(axis=(2, 3)), 0) and np.allclose(k.max(axis=(2, 3)), 1)
    with pytest.raises(CNNLibError):
        interpret.layer_kernels(model, "bn1")
    with pytest.raises(CNNLibError):
        interpret.layer_kernels(model, "nope")
    g = interpret.grid(tiles, ncols=8, pad=1)
    assert g.shape == (4 * 4 - 1, 8 * 4 - 1, 3)


def test_feature_maps_match_a_manual_forward():
    model = make_model()
    x01 = images(1)[0].float() / 255
    snap = snapshot(model)
    fm = interpret.feature_maps(model, x01, ["relu1", "pool2"])
    assert_unchanged(model, snap)
    with torch.no_grad():
        ref = model.relu1(model.bn1(model.conv1(normalize(x01[None], model.meta))))[0].numpy()
    np.testing.assert_allclose(fm["relu1"]["raw"], ref, atol=1e-5)
    assert fm["relu1"]["maps"].shape == (32, 16, 16) and fm["pool2"]["maps"].shape == (64, 4, 4)
    np.testing.assert_allclose(fm["relu1"]["max"], ref.max(axis=(1, 2)), atol=1e-5)
    maps = fm["relu1"]["maps"]
    assert maps.min() >= 0 and maps.max() <= 1
    shared = interpret.feature_maps(model, x01, "relu1", scale="shared")["relu1"]["maps"]
    np.testing.assert_allclose(shared, (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-5)
    everything = interpret.feature_maps(model, images(1)[0])        # uint8 accepted; None = every layer
    assert list(everything) == [r["name"] for r in interpret.list_layers(model)]


def test_hooks_are_removed_after_success_and_after_errors():
    model = make_model()
    snap = snapshot(model)
    with interpret.capture(model, ["relu1", "fc1"]) as store:
        logits_of(model, torch.rand(1, 3, 16, 16))
    assert store["relu1"].shape == (1, 32, 16, 16)
    assert_unchanged(model, snap)
    with pytest.raises(RuntimeError):
        with interpret.capture(model, ["relu1", "conv2"]):
            model(torch.rand(1, 5, 16, 16))                                  # wrong channels: forward raises
    assert_unchanged(model, snap)
    with pytest.raises(CNNLibError):
        with interpret.capture(model, ["relu1", "no_such_layer"]):           # fails half-way through registering
            pass
    assert_unchanged(model, snap)
    for bad in (lambda: interpret.feature_maps(model, torch.rand(3, 16, 16), ["relu1", "missing"]),
                lambda: attribution.attribute(model, torch.rand(3, 16, 16), "gradcam", layer="missing"),
                lambda: attribution.attribute(model, torch.rand(3, 16, 16), "saliency", target=9)):
        with pytest.raises(CNNLibError):
            bad()
        assert_unchanged(model, snap)


def test_every_function_leaves_the_model_exactly_as_found():
    model = make_model()
    model.train()                          # a model someone is training: mode and BN statistics must survive
    model.fc1.weight.requires_grad_(False)
    model.fc2.register_forward_hook(lambda m, a, o: None)        # a caller's own hook stays, alone
    snap = snapshot(model)
    x, y = images(12), torch.arange(12) % 4
    x01 = x[0].float() / 255
    interpret.list_layers(model)
    interpret.first_layer_filters(model)
    interpret.layer_kernels(model, "conv2")
    interpret.feature_maps(model, x01)
    interpret.embed(model, x, y)
    evaluate.run_split(model, x, y)
    assert_unchanged(model, snap)
    for method in attribution.METHODS:
        r = attribution.attribute(model, x01, method, n_steps=8, nt_samples=4)
        assert_unchanged(model, snap)
        # computed in eval mode even though the shared model is in train mode
        if method == "saliency":
            ev = attribution.attribute(make_model(), x01, method)
            np.testing.assert_allclose(r["attribution"], ev["attribution"], atol=1e-6)


# -----------------------------------------------------------------------------
# attributions

def test_integrated_gradients_completeness():
    model = make_model()
    x01 = images(1, seed=5)[0].float() / 255
    mean_image = torch.tensor(MEAN).view(3, 1, 1).expand(3, 16, 16)
    for baseline, b01 in (("black", torch.zeros(3, 16, 16)), ("mean", mean_image)):
        r = attribution.attribute(model, x01, "integrated_gradients", target=2, baseline=baseline)
        f_x, f_b = logits_of(model, x01[None])[0, 2].item(), logits_of(model, b01[None])[0, 2].item()
        # tolerance: 1% of |f(x) - f(baseline)| + 1e-3 (50 Gauss-Legendre steps on a ReLU network)
        assert abs(r["raw"].sum() - (f_x - f_b)) <= 0.01 * abs(f_x - f_b) + 1e-3
        assert abs(r["delta"]) <= 0.01 * abs(f_x - f_b) + 1e-3
        assert r["attribution"].sum() == pytest.approx(r["raw"].sum(), abs=1e-4)


def test_saliency_of_a_linear_model_equals_its_weights():
    torch.manual_seed(0)
    lin = nn.Linear(3 * 4 * 5, 6)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    model.meta = {"classes": list("abcdef"), "input_shape": [3, 4, 5], "normalization": {"mean": MEAN, "std": STD}}
    x01 = torch.rand(3, 4, 5)
    for target in (None, 4):
        r = attribution.attribute(model, x01, "saliency", target=target)
        t = int(logits_of(model, x01[None]).argmax()) if target is None else target
        expected = lin.weight[t].detach().view(3, 4, 5) / torch.tensor(STD).view(3, 1, 1)   # d/dx01 of (x01 - m) / s
        assert r["target"] == t
        np.testing.assert_allclose(r["attribution"], expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["raw"], expected.sum(0).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["heatmap"], expected.abs().sum(0).numpy() / expected.abs().sum(0).max().item(),
                                   atol=1e-6)
    ixg = attribution.attribute(model, x01, "input_x_gradient", target=1)
    np.testing.assert_allclose(ixg["attribution"], (x01 * lin.weight[1].detach().view(3, 4, 5)
                                                    / torch.tensor(STD).view(3, 1, 1)).numpy(), rtol=1e-5, atol=1e-6)


class HandCAM(nn.Module):
    """conv 1x1 (1 -> 2 channels, weights +1 / -1) -> relu -> global average -> linear (2 -> 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.feat = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.feat(self.conv(x)))))


def test_gradcam_matches_a_hand_computation():
    model = HandCAM().eval()
    model.meta = {"classes": ["p", "q"], "input_shape": [1, 4, 4], "normalization": {"mean": [0.5], "std": [1.0]}}
    x01 = torch.linspace(0, 1, 16).view(1, 4, 4)
    a = np.stack([np.maximum(x01[0].numpy() - 0.5, 0), np.maximum(0.5 - x01[0].numpy(), 0)])   # A_c (2, 4, 4)
    W = np.array([[2.0, 1.0], [-1.0, 3.0]])
    for t in (0, 1):
        alpha = W[t] / 16                           # mean over the 4x4 map of d y_t / d A_c = W[t, c] / 16
        cam = np.maximum((alpha[:, None, None] * a).sum(0), 0)
        r = attribution.attribute(model, x01, "gradcam", target=t, layer="feat")
        np.testing.assert_allclose(r["cam"], cam, atol=1e-6)
        np.testing.assert_allclose(r["raw"], cam, atol=1e-6)        # same resolution: upsampling is the identity
        np.testing.assert_allclose(r["heatmap"], cam / cam.max(), atol=1e-5)
        assert r["layer"] == "feat"


def test_every_method_shapes_ranges_and_grad_contexts():
    model = make_model()
    x01 = images(1, seed=3)[0].float() / 255
    assert interpret.default_gradcam_layer(model) == "pool2"
    for method in attribution.METHODS:
        with torch.no_grad():
            r = attribution.attribute(model, x01, method, n_steps=16, nt_samples=5)
        h = r["heatmap"]
        assert h.shape == (16, 16) and h.dtype == np.float32 and h.min() >= 0 and h.max() == pytest.approx(1.0)
        assert r["raw"].shape == (16, 16) and r["overlay"].shape == (16, 16, 3) and r["overlay"].dtype == np.uint8
        assert r["probs"].shape == (4,) and r["probs"].sum() == pytest.approx(1.0, abs=1e-5)
        assert r["target"] == int(r["probs"].argmax())
    with torch.inference_mode():
        inf = attribution.attribute(model, x01, "gradcam")
    assert inf["cam"].shape == (4, 4) and inf["layer"] == "pool2"
    gg = attribution.attribute(model, x01, "guided_gradcam", layer="relu2", target=1)
    assert gg["attribution"].shape == (3, 16, 16) and gg["target"] == 1
    with pytest.raises(CNNLibError):
        attribution.attribute(model, x01, "lime")


def test_attribute_many_shared_scale():
    model = make_model()
    xs = images(3, seed=4)
    own = attribution.attribute_many(model, xs, "saliency", scale="image")
    shared = attribution.attribute_many(model, xs, "saliency", targets=[r["target"] for r in own], scale="shared")
    top = max(r["scale"] for r in own)
    assert all(r["scale"] == pytest.approx(top) for r in shared)
    assert max(r["heatmap"].max() for r in shared) == pytest.approx(1.0)
    for a, b in zip(own, shared):
        np.testing.assert_allclose(a["heatmap"] * a["scale"], b["heatmap"] * top, atol=1e-5 * top)


def test_smoothgrad_is_seeded_and_leaves_the_global_rng_alone():
    model = make_model()
    x01 = images(1)[0].float() / 255
    state = torch.get_rng_state()
    a = attribution.attribute(model, x01, "smoothgrad", nt_samples=6, seed=1)
    b = attribution.attribute(model, x01, "smoothgrad", nt_samples=6, seed=1)
    c = attribution.attribute(model, x01, "smoothgrad", nt_samples=6, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a["attribution"], b["attribution"])
    assert not np.allclose(a["attribution"], c["attribution"])


def test_threads_give_the_same_results_as_one_at_a_time():
    model = make_model()
    xs = images(2, seed=7).float() / 255
    methods = ("integrated_gradients", "gradcam", "guided_backprop", "guided_gradcam")
    expected = {(i, m): attribution.attribute(model, xs[i], m, n_steps=20)["attribution"]
                for i in range(2) for m in methods}
    snap = snapshot(model)
    results, errors, barrier = {}, [], threading.Barrier(3)

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                for m in methods:
                    r = attribution.attribute(model, xs[i], m, n_steps=20)
                    results.setdefault((i, m), []).append(r["attribution"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def infer():   # plain inference on the shared model meanwhile: would trip over hooks left on it
        try:
            barrier.wait()
            for _ in range(30):
                with torch.inference_mode():
                    model(normalize(xs, model.meta))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)] + [threading.Thread(target=infer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for key, runs in results.items():
        for got in runs:
            np.testing.assert_allclose(got, expected[key], rtol=1e-5, atol=1e-6)
    assert_unchanged(model, snap)


def test_overlay_and_colormap():
    img = np.zeros((3, 4, 4), np.float32)
    heat = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    jet = attribution.colormap(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(jet, [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]], atol=1e-6)
    assert np.array_equal(attribution.overlay(img, heat, alpha=0.0), np.zeros((4, 4, 3), np.uint8))
    full = attribution.overlay(img, heat, alpha=1.0)
    assert np.array_equal(full, np.rint(attribution.colormap(heat) * 255).astype(np.uint8))
    gray = attribution.overlay(torch.ones(1, 4, 4), np.zeros((4, 4)), alpha=0.5, weighted=True)
    assert gray.shape == (4, 4, 3) and (gray == 255).all()
    with pytest.raises(CNNLibError):
        attribution.overlay(img, np.zeros((3, 3)))
    assert interpret.attribute is attribution.attribute and interpret.METHODS == attribution.METHODS


# -----------------------------------------------------------------------------
# embeddings

def test_embed_matches_an_independent_pca():
    model = make_model()
    x, y = images(60), torch.arange(60) % 4
    e = interpret.embed(model, x, y, batch_size=25)
    with torch.no_grad():
        h = normalize(x.float() / 255, model.meta)
        h = model.pool2(model.relu2(model.bn2(model.conv2(model.pool1(model.relu1(model.bn1(model.conv1(h))))))))
        feats = model.relu3(model.fc1(model.flatten(h))).double().numpy()         # input of fc2 (dropout: eval)
        logits = model.fc2(torch.from_numpy(feats).float())
    f = feats - feats.mean(0)
    evals, evecs = np.linalg.eigh(f.T @ f)
    evecs = evecs[:, ::-1][:, :2]
    ref = f @ evecs
    assert e["xy"].shape == (60, 2) and e["xy"].dtype == np.float32 and e["dim"] == 128 and e["layer"] == "fc2"
    for k in range(2):   # same axes up to sign
        np.testing.assert_allclose(np.abs(e["xy"][:, k]), np.abs(ref[:, k]), rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_allclose(e["explained_variance"], evals[::-1][:2] / evals.sum(), rtol=1e-4)
    assert e["preds"].tolist() == logits.argmax(1).tolist()
    assert np.array_equal(e["correct"], e["preds"] == y.numpy()) and e["labels"].dtype == np.int64
    with pytest.raises(CNNLibError):
        interpret.embed(model, x, y, method="tsne")


def test_inconsistent_stored_predictions_raise_cnnlib_error():
    from cnnlib.evaluate import stored_predictions
    meta = {"classes": ["a", "b", "c"], "test_predictions": {
        "targets": torch.tensor([0, 1, 2], dtype=torch.int16), "preds": torch.tensor([0, 1, 1], dtype=torch.int16),
        "probs": torch.full((3, 2), 0.5, dtype=torch.float16)}}     # 2 columns for 3 classes
    with pytest.raises(CNNLibError, match="inconsistent"):
        stored_predictions(meta)
    meta["test_predictions"]["probs"] = torch.full((3, 3), 1 / 3, dtype=torch.float16)
    assert stored_predictions(meta)["probs"].shape == (3, 3)
