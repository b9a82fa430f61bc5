"""cnnlib.explain.featurevis: the optimised image excites its channel more than the noise it started from and more
than the mean test image; same seed, same image; top_activating agrees with a brute-force ranking."""
import numpy as np
import pytest
import torch
from cnnlib.explain import featurevis
from cnnlib.data.spec import load_checkpoint_split
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model
from cnnlib.models.anatomy import feature_maps
from modeltools import assert_unchanged, images, make_model, snapshot
from test_teach_arithmetic import tv_resnet18


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    model = load_model(tiny_ckpt, "cpu")
    x, _ = load_checkpoint_split(model.meta, "test")
    return model, x


def activation(model, x01, layer, channel):
    return float(feature_maps(model, x01, [layer])[layer]["raw"][channel].mean())


@pytest.mark.parametrize("layer,channel", [("conv2", 3), ("relu2", 5), ("pool1", 1), ("fc1", 7)])
def test_visualization_beats_noise_and_the_mean_image(tiny, layer, channel):
    model, x = tiny
    snap = snapshot(model)
    calls = []
    out = featurevis.visualize_channel(model, layer, channel, steps=48, seed=0,
                                       progress=lambda i, n, v: calls.append((i, n, v)))
    assert_unchanged(model, snap)
    c, h, w = model.meta["input_shape"]
    img = out["image"]
    assert img.shape == (c, h, w) and img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    assert len(out["objective_history"]) == 48 and [i for i, _, _ in calls] == list(range(1, 49))
    mean_image = torch.from_numpy(np.array(x)).float().mean(0) / 255                        # (C, H, W)
    got = activation(model, img, layer, channel)
    assert got == pytest.approx(out["final_objective"], rel=1e-4, abs=1e-5)
    assert activation(model, out["start"], layer, channel) == pytest.approx(out["start_objective"], rel=1e-4, abs=1e-5)
    assert got > out["start_objective"] + 0.1
    assert got > activation(model, mean_image, layer, channel)


def test_class_logit_visualization_is_deterministic(tiny):
    model, _ = tiny
    a = featurevis.visualize_channel(model, target_class=2, steps=16, seed=3)
    b = featurevis.visualize_channel(model, target_class=2, steps=16, seed=3)
    c = featurevis.visualize_channel(model, target_class=2, steps=16, seed=4)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["objective_history"] == b["objective_history"]
    assert not np.array_equal(a["image"], c["image"])
    assert a["final_objective"] > a["start_objective"] and a["layer"] is None


@pytest.mark.parametrize("options", [dict(fft=False), dict(decorrelate=False, blur=1.0), dict(batch=1, jitter=0)])
def test_visualization_options(tiny, options):
    model, _ = tiny
    out = featurevis.visualize_channel(model, "conv1", 2, steps=16, **options)
    assert out["final_objective"] > out["start_objective"]


def test_visualization_on_resnets_and_inside_inference_mode():
    model = make_model(size=16, name="resnet9", width=4)
    with torch.inference_mode():
        out = featurevis.visualize_channel(model, "layer1.residual", 3, steps=8)
    assert out["image"].shape == (3, 16, 16) and np.isfinite(out["objective_history"]).all()
    tv = tv_resnet18(size=32)
    snap = snapshot(tv)
    out = featurevis.visualize_channel(tv, "layer1.0.relu.call2", 4, steps=4, size=40)
    assert_unchanged(tv, snap)
    assert out["image"].shape == (3, 40, 40)


def test_visualization_errors(tiny):
    model, _ = tiny
    with pytest.raises(CNNLibError, match="layer and a channel"):
        featurevis.visualize_channel(model, "conv1")
    with pytest.raises(CNNLibError, match="out of range"):
        featurevis.visualize_channel(model, "conv1", 99, steps=1)
    with pytest.raises(CNNLibError, match="out of range"):
        featurevis.visualize_channel(model, target_class=99, steps=1)
    with pytest.raises(CNNLibError, match="no layer"):
        featurevis.visualize_channel(model, "nope", 0, steps=1)


def test_top_activating_matches_brute_force(tiny, tmp_path):
    model, x = tiny
    x = np.array(x)                                                        # a private, writable copy
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")                                     # a memmap streams in batches
    snap = snapshot(model)
    idx = featurevis.top_activating(model, mm, "relu2", 5, k=9, batch_size=7)
    assert_unchanged(model, snap)
    brute = np.array([activation(model, xi, "relu2", 5) for xi in x])
    assert idx.dtype == np.int64 and len(idx) == 9
    np.testing.assert_allclose(brute[idx], np.sort(brute)[::-1][:9], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(featurevis.channel_scores(model, x, "relu2", 5), brute, rtol=1e-5, atol=1e-6)
    assert len(featurevis.top_activating(model, x[:4], "conv1", 0, k=9)) == 4
    with pytest.raises(CNNLibError):
        featurevis.top_activating(model, x[0], "conv1", 0)
    with pytest.raises(CNNLibError, match="out of range"):
        featurevis.top_activating(model, images(3, size=16), "conv1", 64)
