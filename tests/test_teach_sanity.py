"""cnnlib.explain.sanity: the cascading model-randomisation test (Adebayo et al. 2018). On a trained tiny model the
gradient methods' maps lose their structure once the weights are random (Spearman well below the trained
map's 1.0); the given model is never touched; the rank statistics match scipy's."""
import numpy as np
import pytest
import torch
from cnnlib.explain import sanity
from cnnlib.data.spec import load_checkpoint_split
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model
from modeltools import assert_unchanged, make_model, snapshot
from test_teach_arithmetic import tv_resnet18

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")

# Measured on the tiny trained checkpoint (4 classes, 16x16; first 6 test images): the fully randomised
# model's map has Spearman 0.16 (saliency) and 0.32 (integrated gradients) with the trained one on average,
# at most 0.23 and 0.39. The bound leaves room for other seeds and CPUs.
BOUND = 0.5


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    model = load_model(tiny_ckpt, "cpu")
    x, _ = load_checkpoint_split(model.meta, "test")
    return model, np.array(x[:3])


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_randomised_gradient_maps_lose_the_trained_structure(tiny, method):
    model, x = tiny
    snap = snapshot(model)
    finals = []
    for i in range(len(x)):
        steps = sanity.sanity_check(model, x[i], method, seed=0)
        assert_unchanged(model, snap)
        assert [s["step"] for s in steps] == ["trained", "fc2", "fc1", "conv2", "conv1"]
        assert steps[3]["randomized"] == ["fc2", "fc1", "conv2", "bn2"]
        assert steps[-1]["randomized"] == ["fc2", "fc1", "conv2", "bn2", "conv1", "bn1"]
        assert steps[0]["spearman"] == 1.0 and steps[0]["ssim"] == 1.0
        assert len({s["target"] for s in steps}) == 1 and all(s["method"] == method for s in steps)
        for s in steps:
            assert s["heatmap"].shape == (16, 16) and s["heatmap"].min() >= 0 and s["heatmap"].max() <= 1
            assert -1 <= s["spearman"] <= 1 and -1 <= s["ssim"] <= 1
        finals.append(steps[-1]["spearman"])
    assert max(finals) < BOUND, finals


def test_deterministic_for_a_seed_and_target(tiny):
    model, x = tiny
    a = sanity.sanity_check(model, x[0], "saliency", target=1, seed=5)
    b = sanity.sanity_check(model, x[0], "saliency", target=1, seed=5, with_ssim=False)
    c = sanity.sanity_check(model, x[0], "saliency", target=1, seed=6)
    assert all(s["target"] == 1 for s in a) and b[1]["ssim"] is None
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa["heatmap"], sb["heatmap"])
    assert not np.array_equal(a[-1]["heatmap"], c[-1]["heatmap"])
    rng = torch.get_rng_state()
    sanity.sanity_check(model, x[0], "gradcam")
    assert torch.equal(rng, torch.get_rng_state())          # torch's global RNG is left as it was


def test_resnets():
    model = make_model(size=16, name="resnet9", width=4)
    snap = snapshot(model)
    steps = sanity.sanity_check(model, torch.rand(3, 16, 16), "saliency")
    assert_unchanged(model, snap)
    assert steps[1]["step"] == "fc" and steps[-1]["step"] == "prep.conv" and len(steps) == 1 + 9
    order = sanity.randomization_order(tv_resnet18(size=32))
    assert order[0] == ["fc"] and order[-1] == ["conv1", "bn1"]
    assert ["layer1.0.conv2", "layer1.0.bn2"] in order and ["layer2.0.downsample.0", "layer2.0.downsample.1"] in order


def test_timm_convnext_block_with_its_own_layer_scale():
    """timm's ConvNeXt block holds a parameter of its own (the layer scale `gamma`) and has no
    reset_parameters(): the cascade redraws it (the page said 'has no reset_parameters()' before), every
    step's map is finite, and the given model is untouched."""
    import timm
    from torch import nn
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=3).eval()
    for m in model.modules():                      # a trained-looking layer scale, not timm's constant init
        if hasattr(m, "gamma") and isinstance(m.gamma, nn.Parameter):
            m.gamma.data.uniform_(0.1, 0.5)
    model.meta = {"input_shape": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    snap = snapshot(model)
    steps = sanity.sanity_check(model, torch.rand(3, 32, 32), "saliency", with_ssim=False)
    assert_unchanged(model, snap)
    assert any(name == "stages.3.blocks.1" for s in steps for name in s["randomized"]), [s["step"] for s in steps]
    assert all(np.isfinite(s["heatmap"]).all() for s in steps)
    block = model.get_submodule("stages.3.blocks.1")
    copy_ = __import__("copy").deepcopy(block)
    torch.manual_seed(1)
    sanity.randomize(copy_)
    assert not torch.equal(copy_.gamma, block.gamma)
    assert abs(float(copy_.gamma.std()) - float(block.gamma.std())) < 0.5 * float(block.gamma.std()) + 0.05


def test_unknown_method(tiny):
    with pytest.raises(CNNLibError, match="unknown attribution method"):
        sanity.sanity_check(tiny[0], tiny[1][0], "magic")


def test_rank_statistics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = np.random.default_rng(0)
    a = g.random((9, 11))
    b = np.round(a + g.normal(0, 0.3, a.shape), 1)                    # with ties
    np.testing.assert_allclose(sanity.rankdata(b), stats.rankdata(b.ravel()))
    assert sanity.spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert np.isnan(sanity.spearman(a, np.zeros_like(a)))
    assert sanity.ssim(a, a) == pytest.approx(1.0) and sanity.ssim(a, 1 - a) < 0
