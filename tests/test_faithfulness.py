"""cnnlib.explain.faithfulness: a map that points at the pixels that decide the class deletes faster than a random one."""
import numpy as np
import pytest
import torch
from modeltools import assert_unchanged, images, make_model, snapshot
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.explain.faithfulness import baseline_image, deletion_insertion, faithfulness_table

PATCH = (slice(2, 5), slice(2, 5))      # rows 2..4, columns 2..4 of an 8x8 image: the only evidence


def patch_model():
    """Class 1 iff the 3x3 patch is bright: logit_1 = 10 * (mean of the patch's 27 values - 0.5), logit_0 = 0."""
    lin = nn.Linear(3 * 8 * 8, 2)
    with torch.no_grad():
        w = torch.zeros(2, 3, 8, 8)
        w[1, :, PATCH[0], PATCH[1]] = 10 / 27
        lin.weight.copy_(w.view(2, -1))
        lin.bias.copy_(torch.tensor([0.0, -5.0]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    model.meta = {"classes": ["dark", "bright"], "input_shape": [3, 8, 8],
                  "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}
    return model


def patch_images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.6
    x[:, :, PATCH[0], PATCH[1]] = 0.9 + 0.1 * torch.rand(n, 3, 3, 3, generator=g)
    return x


def test_informative_map_deletes_faster_than_a_random_map():
    model = patch_model()
    x = patch_images(1)[0]
    good = np.zeros((8, 8))
    good[PATCH] = 1.0
    rand = np.random.default_rng(0).random((8, 8))
    for baseline in ("black", "blur"):
        g = deletion_insertion(model, x, good, target=1, steps=16, baseline=baseline)
        r = deletion_insertion(model, x, rand, target=1, steps=16, baseline=baseline)
        assert g["fractions"].shape == g["deletion"].shape == g["insertion"].shape == (17,)
        assert g["fractions"][0] == 0 and g["fractions"][-1] == 1 and (np.diff(g["fractions"]) > 0).all()
        # the ends: the image itself and the baseline
        p_x = torch.sigmoid(torch.tensor(10 * (x[:, PATCH[0], PATCH[1]].mean().item() - 0.5))).item()
        assert g["deletion"][0] == pytest.approx(p_x, abs=1e-5) and g["insertion"][-1] == pytest.approx(p_x, abs=1e-5)
        assert g["deletion"][-1] == pytest.approx(r["deletion"][-1]) and g["insertion"][0] == pytest.approx(r["insertion"][0])
        if baseline == "black":
            assert g["deletion_auc"] < r["deletion_auc"] - 0.3, (g["deletion_auc"], r["deletion_auc"])
            assert g["insertion_auc"] > r["insertion_auc"] + 0.3
        else:     # a blurred bright patch stays fairly bright: less room between the curves, same order
            assert g["deletion_auc"] < r["deletion_auc"] - 0.05 and g["insertion_auc"] > r["insertion_auc"]
    # a hand check: with steps = 64 (one pixel per step) the 9 patch pixels are gone after step 9, so the
    # logit has fallen by exactly the patch's mean contribution and the probability is sigmoid(-5)
    g = deletion_insertion(model, x, good, target=1, steps=64, baseline="black")
    assert g["deletion"][9] == pytest.approx(torch.sigmoid(torch.tensor(-5.0)).item(), abs=1e-6)
    assert g["deletion_auc"] == pytest.approx(float(((g["deletion"][1:] + g["deletion"][:-1]) / 2).sum() / 64))


def test_faithfulness_table_ranks_a_gradient_map_above_random():
    model = patch_model()
    xs = patch_images(6)
    rows = faithfulness_table(model, xs, ["saliency", "input_x_gradient"], steps=16)
    by = {r["method"]: r for r in rows}
    assert list(by) == ["saliency", "input_x_gradient", "random"] and by["random"]["label"] == "Random map"
    for m in ("saliency", "input_x_gradient"):
        assert by[m]["n"] == 6 and by[m]["deletion"].shape == (17,) and by[m]["seconds_curves"] > 0
        assert by[m]["deletion_auc"] < by["random"]["deletion_auc"] - 0.2
        assert by[m]["score"] > by["random"]["score"]
        assert by[m]["deletion_auc_sem"] >= 0


def test_on_a_cnn_with_the_cam_family_the_model_is_left_as_found():
    model = make_model()
    snap = snapshot(model)
    rows = faithfulness_table(model, images(2, seed=3), ["gradcam", "layercam", "scorecam"], steps=8,
                              baseline="blur")
    assert [r["method"] for r in rows] == ["gradcam", "layercam", "scorecam", "random"]
    for r in rows:
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1 and r["insertion"].shape == (9,)
    assert_unchanged(model, snap)


def test_baselines_and_errors():
    model = patch_model()
    flat = torch.full((3, 8, 8), 0.3)
    torch.testing.assert_close(baseline_image(flat, "blur"), flat)            # a blur keeps a flat image
    assert baseline_image(flat, "black").sum() == 0 and baseline_image(flat, 0.5).mean() == pytest.approx(0.5)
    torch.testing.assert_close(baseline_image(flat, "mean", model.meta), torch.zeros(3, 8, 8))
    x = patch_images(1)[0]
    with pytest.raises(CNNLibError):
        deletion_insertion(model, x, np.zeros((4, 4)))
    with pytest.raises(CNNLibError):
        deletion_insertion(model, x, np.zeros((8, 8)), baseline="grey")
    with pytest.raises(CNNLibError):
        deletion_insertion(model, x, np.zeros((8, 8)), target=5)
    with pytest.raises(CNNLibError):
        faithfulness_table(model, patch_images(2), ["lime"])
    # a flat map: ties are broken in a seeded random order, so two seeds give different curves
    a = deletion_insertion(model, x, np.zeros((8, 8)), steps=64, seed=0)
    b = deletion_insertion(model, x, np.zeros((8, 8)), steps=64, seed=1)
    assert a["target"] == 1 and not np.allclose(a["deletion"], b["deletion"])
