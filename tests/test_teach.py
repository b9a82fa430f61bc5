"""cnnlib.teach.strip: the image through every layer (layer_strip) and what the training loop sees
(training_batch_steps, built from cnnlib.data.datasets.augment_batch itself)."""
import numpy as np
import pytest
import torch
from cnnlib.teach import batch, strip
from cnnlib.config import TrainConfig
from cnnlib.data.datasets import augment_batch
from cnnlib.errors import CNNLibError
from cnnlib.models.anatomy import feature_maps, list_layers
from modeltools import assert_unchanged, images, logits_of, make_model, normalized, snapshot
from test_teach_arithmetic import tv_resnet18


# -----------------------------------------------------------------------------
# layer strip

@pytest.mark.parametrize("which", ["simple_cnn", "resnet9", "resnet18"])
def test_layer_strip(which):
    model = tv_resnet18(size=32) if which == "resnet18" else make_model(size=16, name=which,
                                                                       **({"width": 4} if which == "resnet9" else {}))
    size = model.meta["input_shape"][1]
    x01 = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    snap = snapshot(model)
    out = strip.layer_strip(model, x01, per_layer=3)
    assert_unchanged(model, snap)
    order = [r["name"] for r in list_layers(model)]
    names = [layer["layer"] for layer in out["layers"]]
    assert names == sorted(names, key=order.index) and 1 <= len(names) <= 16        # execution order
    if which == "simple_cnn":
        assert names == ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2"]
    else:                       # long networks: no pre-activation maps, spread over the whole depth
        assert not any(n.endswith(("conv", "conv1", "conv2", "bn", "bn1", "bn2")) for n in names)
        assert names[-1] == [r["name"] for r in list_layers(model) if r["spatial"]
                             and r["output_shape"][1] * r["output_shape"][2] > 1][-1]
    ref = feature_maps(model, x01, names)
    for layer in out["layers"]:
        raw = ref[layer["layer"]]["raw"]
        means = raw.mean(axis=(1, 2))
        assert layer["shape"] == list(raw.shape) and len(layer["channels"]) == 3
        assert np.allclose(layer["means"], np.sort(means)[::-1][:3], rtol=1e-5, atol=1e-6)   # the most active
        assert layer["maps"].shape == (3, *raw.shape[1:]) and layer["maps"].dtype == np.float32
        assert layer["maps"].min() >= 0 and layer["maps"].max() <= 1
        np.testing.assert_allclose(layer["maps"], ref[layer["layer"]]["maps"][layer["channels"]], atol=1e-5)
    logits = logits_of(model, x01[None])[0].numpy()
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["probs"].sum(), 1.0, rtol=1e-6)
    assert out["predicted"] == int(logits.argmax()) and out["classes"] == model.meta["classes"]
    with pytest.raises(CNNLibError):
        strip.layer_strip(model, x01, per_layer=0)


def test_layer_strip_on_a_shipped_checkpoint():
    from cnnlib.inference import load_model
    model = load_model("checkpoints/resnet9.pt", "cpu")
    out = strip.layer_strip(model, torch.rand(3, 32, 32), per_layer=4, max_layers=6)
    assert len(out["layers"]) == 6 and out["layers"][0]["layer"] == "prep.relu"
    assert out["layers"][-1]["layer"] == "layer3.residual"


# -----------------------------------------------------------------------------
# training batch

def meta_with(config):
    return {"normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}, "config": config}


@pytest.mark.parametrize("config", [{"augment": True, "crop_padding": 4, "flip": True}, {"crop_padding": 3},
                                    {}, {"augment": True, "crop_padding": 2, "flip": False}])
def test_training_batch_steps_are_augment_batch(config):
    x = images(8, size=16, seed=2)
    out = batch.training_batch_steps(meta_with(config), x, seed=7)
    cfg = TrainConfig()
    padding = config.get("crop_padding", cfg.crop_padding)
    flip = config.get("flip", cfg.flip)
    assert out["padding"] == padding and out["flip_enabled"] == flip and out["augment"]
    # what training feeds on for this seed: data.augment_batch's own output
    expect = augment_batch(x, padding, flip, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(out["flipped"], expect.numpy())
    np.testing.assert_array_equal(out["original"], x.numpy())
    # cropped: a window of the zero-padded original, at the offset reported
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    np.testing.assert_array_equal(out["padded"], xp)
    for i, (dy, dx) in enumerate(out["offsets"]):
        assert 0 <= dy <= 2 * padding and 0 <= dx <= 2 * padding
        np.testing.assert_array_equal(out["cropped"][i], xp[i, :, dy:dy + 16, dx:dx + 16])
        mirrored = out["cropped"][i][..., ::-1]
        assert np.array_equal(out["flipped"][i], mirrored if out["flip"][i] else out["cropped"][i])
    if not flip:
        assert not out["flip"].any()
    else:
        assert out["flip"].any() and not out["flip"].all()          # 8 images: some of each, for this seed
    assert len({tuple(o) for o in out["offsets"]}) > 1
    ref = normalized(torch.from_numpy(out["flipped"]).float() / 255, meta_with(config)).numpy()
    np.testing.assert_allclose(out["normalized"], ref, rtol=1e-6, atol=1e-6)
    assert out["normalized"].dtype == np.float32
    np.testing.assert_allclose(out["mean"], [0.5, 0.4, 0.3])
    np.testing.assert_allclose(out["std"], [0.25, 0.2, 0.3])
    again = batch.training_batch_steps(meta_with(config), x.numpy(), seed=7)      # numpy in, same answer
    np.testing.assert_array_equal(again["flipped"], out["flipped"])
    other = batch.training_batch_steps(meta_with(config), x, seed=8)
    assert not np.array_equal(other["flipped"], out["flipped"])


def test_training_batch_without_augmentation():
    x = images(4, size=8)
    out = batch.training_batch_steps(meta_with({"augment": False, "crop_padding": 4}), x, seed=0)
    assert out["padding"] == 0 and not out["augment"] and not out["flip"].any()
    np.testing.assert_array_equal(out["cropped"], x.numpy())
    np.testing.assert_array_equal(out["flipped"], x.numpy())
    assert (out["offsets"] == 0).all()
    with pytest.raises(CNNLibError):
        batch.training_batch_steps(meta_with({}), x.float(), seed=0)
    with pytest.raises(CNNLibError):
        batch.training_batch_steps({"config": {}}, x, seed=0)        # no normalization statistics
