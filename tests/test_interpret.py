"""cnnlib.models.anatomy: layer table, receptive fields, filters (and their history), feature maps,
hooks always removed, the model left as found, embeddings against an independent PCA."""
import inspect

import numpy as np
import pytest
import torch
from cnnlib import viz
from cnnlib.explain import attribution
from cnnlib.diagnose import evaluate
from cnnlib.models import anatomy as interpret
from cnnlib.errors import CNNLibError
from cnnlib.models.registry import _MODELS, list_models
from modeltools import assert_unchanged, images, logits_of, make_model, normalized, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")

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
    keys = {"name", "type", "output_shape", "spatial", "params", "rf_size", "rf_stride"}
    assert rows and all(set(r) == keys for r in rows)
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: shapes.setdefault(n, list(o.shape[1:])) and None)
             for n, m in model.named_modules() if n]
    logits_of(model, torch.zeros(1, 1, 16, 16))
    for h in hooks:
        h.remove()
    for r in rows:
        assert r["output_shape"] == shapes[r["name"]] and r["spatial"] == (len(r["output_shape"]) == 3)
        assert r["params"] == sum(p.numel() for p in model.get_submodule(r["name"]).parameters(recurse=False))
    # every layer is listed, the classifier head included: the parameter column sums to the model's total
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert rows[-1]["output_shape"] == [3] and not rows[-1]["spatial"]
    fields = [r["rf_size"] for r in rows if r["spatial"]]
    assert fields == sorted(fields) and all(r["rf_size"] is None for r in rows if not r["spatial"])
    assert interpret.default_gradcam_layer(model) in [r["name"] for r in rows if r["spatial"]]


def test_receptive_fields_by_hand():
    rows = {r["name"]: (r["rf_size"], r["rf_stride"]) for r in interpret.list_layers(make_model(size=32))}
    # conv 3x3 -> 3; pool 2/2 -> 3+1=4, stride 2; conv -> 4+2*2=8; pool -> 8+1*2=10, stride 4
    assert rows == {"conv1": (3, 1), "bn1": (3, 1), "relu1": (3, 1), "pool1": (4, 2),
                    "conv2": (8, 2), "bn2": (8, 2), "relu2": (8, 2), "pool2": (10, 4),
                    "flatten": (None, None), "fc1": (None, None), "relu3": (None, None), "dropout": (None, None),
                    "fc2": (None, None)}
    res = {r["name"]: (r["rf_size"], r["rf_stride"])
           for r in interpret.list_layers(make_model(name="resnet9", size=32, width=4))}
    assert res["layer1.pool"] == (6, 2) and res["layer1.residual"] == (14, 2)   # a sum: the longest path
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
    g = viz.grid(tiles, ncols=8, pad=1)
    assert g.shape == (4 * 4 - 1, 8 * 4 - 1, 3)


def test_feature_maps_match_a_manual_forward():
    model = make_model()
    x01 = images(1)[0].float() / 255
    snap = snapshot(model)
    fm = interpret.feature_maps(model, x01, ["relu1", "pool2"])
    assert_unchanged(model, snap)
    with torch.no_grad():
        ref = model.relu1(model.bn1(model.conv1(normalized(x01[None], model.meta))))[0].numpy()
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
# embeddings

def test_embed_matches_an_independent_pca():
    model = make_model()
    x, y = images(60), torch.arange(60) % 4
    e = interpret.embed(model, x, y, batch_size=25)
    with torch.no_grad():
        h = normalized(x.float() / 255, model.meta)
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


