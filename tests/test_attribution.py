"""cnnlib.explain.attribution: hand-checkable attributions (IG completeness, saliency of a linear model, Grad-CAM by
hand), every method's shapes and ranges, shared scales, seeding, option defaults and thread safety."""
import threading

import numpy as np
import pytest
import torch
from torch import nn
from cnnlib.explain import attribution
from cnnlib.models import anatomy as interpret
from cnnlib.errors import CNNLibError
from modeltools import MEAN, STD, assert_unchanged, images, logits_of, make_model, normalized, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")

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
                    model(normalized(xs, model.meta))
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




def test_option_defaults_are_published_and_used():
    assert attribution.option_defaults("integrated_gradients", [3, 16, 16])["n_steps"] == 50
    occ = attribution.option_defaults("occlusion", [3, 32, 32])
    assert occ["window"] == 4 and occ["stride"] == 2                  # H // 8, window // 2
    assert attribution.option_defaults("saliency", [3, 16, 16]) == {}
    model, x01 = make_model(), images(1)[0].float() / 255
    a = attribution.attribute(model, x01, "integrated_gradients")
    b = attribution.attribute(model, x01, "integrated_gradients", n_steps=50, baseline="black")
    np.testing.assert_array_equal(a["attribution"], b["attribution"])
    c = attribution.attribute(model, x01, "integrated_gradients", n_steps=8)
    assert not np.array_equal(a["attribution"], c["attribution"])
    with pytest.raises(CNNLibError, match="unknown attribution option"):
        attribution.attribute(model, x01, "saliency", n_stesp=8)      # a typo is loud
    with pytest.raises(CNNLibError):
        attribution.option_defaults("lime", [3, 16, 16])


def test_large_images_bound_the_backward_batch_not_the_result(monkeypatch):
    """At 224 px IG's 50 steps and SmoothGrad's 25 copies go through backward a few at a time (memory bounded
    by GRAD_PIXELS); at 32 px all at once; the attribution is the same either way."""
    ig = attribution.option_defaults("integrated_gradients", [3, 224, 224])
    assert ig["internal_batch_size"] == attribution.GRAD_PIXELS // (224 * 224) < ig["n_steps"]
    assert attribution.option_defaults("integrated_gradients", [3, 32, 32])["internal_batch_size"] is None
    assert attribution.option_defaults("smoothgrad", [3, 224, 224])["nt_samples_batch_size"] < 25
    assert attribution.option_defaults("scorecam", [3, 32, 32])["batch_size"] == 64
    assert attribution.option_defaults("scorecam", [3, 224, 224])["batch_size"] == 20
    assert attribution.option_defaults("occlusion", [3, 224, 224])["perturbations_per_eval"] == 20
    model, x01 = make_model(), images(1)[0].float() / 255
    whole = attribution.attribute(model, x01, "integrated_gradients")
    monkeypatch.setattr(attribution, "GRAD_PIXELS", 7 * 16 * 16)                  # 7 steps per pass here
    assert attribution.option_defaults("integrated_gradients", [3, 16, 16])["internal_batch_size"] == 7
    parts = attribution.attribute(model, x01, "integrated_gradients")
    np.testing.assert_allclose(parts["attribution"], whole["attribution"], rtol=1e-4, atol=1e-6)
    sg_whole = attribution.attribute(model, x01, "smoothgrad", nt_samples_batch_size=25)
    sg_parts = attribution.attribute(model, x01, "smoothgrad")
    np.testing.assert_allclose(sg_parts["attribution"], sg_whole["attribution"], rtol=1e-4, atol=1e-6)


# -----------------------------------------------------------------------------
# the CAM family (pytorch_grad_cam)

def hand_cam_model():
    model = HandCAM().eval()
    model.meta = {"classes": ["p", "q"], "input_shape": [1, 4, 4], "normalization": {"mean": [0.5], "std": [1.0]}}
    return model, torch.linspace(0, 1, 16).view(1, 4, 4)


def test_layercam_and_gradcam_pp_match_hand_computations():
    model, x01 = hand_cam_model()
    a = np.stack([np.maximum(x01[0].numpy() - 0.5, 0), np.maximum(0.5 - x01[0].numpy(), 0)])   # A_c (2, 4, 4)
    W = np.array([[2.0, 1.0], [-1.0, 3.0]])
    for t in (0, 1):
        g = np.broadcast_to((W[t] / 16)[:, None, None], a.shape)      # d y_t / d A_c(i, j): the same everywhere
        # LayerCAM: sum_c relu(g_c(i, j)) A_c(i, j)
        r = attribution.attribute(model, x01, "layercam", target=t, layer="feat")
        layer_cam = np.maximum((np.maximum(g, 0) * a).sum(0), 0)
        np.testing.assert_allclose(r["cam"], layer_cam, atol=1e-6)
        np.testing.assert_allclose(r["raw"], layer_cam, atol=1e-6)     # same resolution: no resampling
        assert r["layer"] == "feat" and r["target"] == t
        # Grad-CAM++ (Chattopadhay et al., eq. 19): alpha = g^2 / (2 g^2 + sum_ij A * g^3), w_c = sum alpha relu(g)
        alpha = g ** 2 / (2 * g ** 2 + a.sum((1, 2), keepdims=True) * g ** 3 + 1e-6)
        w = (alpha * np.maximum(g, 0)).sum((1, 2))
        pp = attribution.attribute(model, x01, "gradcam_pp", target=t, layer="feat")
        np.testing.assert_allclose(pp["cam"], np.maximum((w[:, None, None] * a).sum(0), 0), rtol=1e-5, atol=1e-6)


def test_finercam_without_comparison_is_gradcam_and_eigencam_ignores_the_target():
    model = make_model()
    x01 = images(1, seed=3)[0].float() / 255
    differs = []
    for t in range(4):
        plain = attribution.attribute(model, x01, "gradcam", target=t)
        finer0 = attribution.attribute(model, x01, "finercam", target=t, comparison_weight=0.0)
        np.testing.assert_allclose(finer0["cam"], plain["cam"], rtol=1e-4, atol=1e-6)
        finer = attribution.attribute(model, x01, "finercam", target=t)
        differs.append(not np.allclose(finer["cam"], plain["cam"]))
    assert any(differs)                   # comparing against the nearest classes changes the map
    e0 = attribution.attribute(model, x01, "eigencam", target=0)
    e1 = attribution.attribute(model, x01, "eigencam", target=1)
    np.testing.assert_array_equal(e0["cam"], e1["cam"])
    assert e0["cam"].max() > 0


def test_cam_family_contract_and_the_shared_model_is_left_as_found():
    for train_mode in (False, True):
        model = make_model()
        model.train(train_mode)                     # the shared model's mode must not matter, nor change
        snap = snapshot(model)
        xs = images(2, seed=3)
        keys = set(attribution.attribute(model, xs[0], "gradcam"))
        for method in attribution.CAM_METHODS:
            assert method in attribution.METHODS and method in attribution.LAYER_METHODS
            assert method in attribution.METHOD_LABELS
            with torch.inference_mode():
                rs = attribution.attribute_many(model, xs, method, targets=[1, None], scale="shared")
            for r in rs:
                assert set(r) == keys
                h = r["heatmap"]
                assert h.shape == (16, 16) and h.dtype == np.float32 and h.min() >= 0 and h.max() <= 1
                assert r["raw"].shape == (16, 16) and r["attribution"].shape == (1, 16, 16)
                assert r["cam"].shape == (4, 4) and r["layer"] == "pool2" and r["overlay"].shape == (16, 16, 3)
            assert rs[0]["target"] == 1 and rs[1]["target"] == int(rs[1]["probs"].argmax())
            assert max(r["heatmap"].max() for r in rs) == pytest.approx(1.0)
            assert_unchanged(model, snap)
            assert all(p.grad is None for p in model.parameters())
        with pytest.raises(CNNLibError, match="spatial output"):
            attribution.attribute(model, xs[0], "scorecam", layer="fc1")
        assert_unchanged(model, snap)
    assert attribution.option_defaults("scorecam", [3, 16, 16]) == {"batch_size": 64}
    assert attribution.option_defaults("finercam", [3, 16, 16]) == {"comparisons": 3, "comparison_weight": 1.0}
    a = attribution.attribute(model, xs[0], "scorecam", batch_size=7)
    b = attribution.attribute(model, xs[0], "scorecam")
    np.testing.assert_allclose(a["cam"], b["cam"], rtol=1e-5, atol=1e-6)   # batching does not change the map
    with pytest.raises(CNNLibError, match="unknown attribution option"):
        attribution.attribute(model, xs[0], "finercam", comparisons_=2)


def test_cam_family_in_threads_gives_the_same_results():
    model = make_model()
    xs = images(2, seed=7).float() / 255
    methods = ("gradcam_pp", "scorecam", "layercam", "finercam")
    expected = {(i, m): attribution.attribute(model, xs[i], m)["cam"] for i in range(2) for m in methods}
    snap = snapshot(model)
    results, errors, barrier = {}, [], threading.Barrier(3)

    def work(i):
        try:
            barrier.wait()
            for _ in range(2):
                for m in methods:
                    results.setdefault((i, m), []).append(attribution.attribute(model, xs[i], m)["cam"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def infer():
        try:
            barrier.wait()
            for _ in range(30):
                with torch.inference_mode():
                    model(normalized(xs, model.meta))
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
