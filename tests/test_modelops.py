"""cnnlib.modelops, the one path from image to logits: copies that leave the model alone, the converted
analysis copy for foreign architectures (same outputs, one module per call, non-inplace), and one batched
forward loop for tensors, arrays and memory-mapped files."""
import pathlib

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from cnnlib import modelops
from cnnlib.explain import attribution
from cnnlib.models import anatomy as interpret
from cnnlib.errors import CNNLibError
from modeltools import assert_unchanged, images, make_model, normalized, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
TORCHVISION_FAMILIES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "vgg11_bn", "densenet121",
                        "convnext_tiny"]


def foreign(name: str, size: int = 64, classes: int = 5):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=classes).eval()
    model.meta = {"input_shape": [3, size, size], "classes": [f"c{i}" for i in range(classes)],
                  "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    return model


def test_to_input_and_probabilities_are_the_one_path():
    model = make_model()
    x = images(5)
    mean, std = modelops.norm_stats(model.meta)
    ref = normalized(x.float() / 255, model.meta)
    torch.testing.assert_close(modelops.to_input(x, mean, std), ref)                 # uint8
    torch.testing.assert_close(modelops.to_input(x.float() / 255, mean, std), ref)   # [0, 1] floats
    torch.testing.assert_close(modelops.to_input(x.numpy(), mean, std), ref)         # numpy
    with torch.no_grad():
        expected = torch.softmax(model(ref), 1).numpy()
    np.testing.assert_allclose(modelops.probabilities(model, x.float() / 255), expected, atol=1e-6)
    np.testing.assert_allclose(modelops.probabilities(model, x[0]), expected[:1], atol=1e-6)
    with pytest.raises(CNNLibError):
        modelops.norm_stats({})


def test_forward_batches_streams_a_memmap(tmp_path):
    model = make_model()
    x = images(70)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=tuple(x.shape))
    mm[:] = x.numpy()
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    mean, std = modelops.norm_stats(model.meta)
    starts, outs = [], []
    for i, logits in modelops.forward_batches(model, ro, mean, std, batch_size=32):
        starts.append(i)
        outs.append(logits)
    assert starts == [0, 32, 64]
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(outs), model(normalized(x.float() / 255, model.meta)))


def _rss_file_mib() -> float:
    """This process's resident file-backed pages (memory-mapped files), MiB, from /proc/self/status."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status (not Linux)")


def test_a_pass_over_a_memmap_leaves_no_pages_resident(tmp_path):
    """A 96 MiB read-only cache (1,000 images at 3 x 181 x 181, plain file writes as the cache does) streamed
    through forward_batches: the used rows leave this process's resident memory (they would add ~96 MiB
    without datacache.release_rows, as the control pass without it shows), and reading again still gives the
    same pixels. Copy-on-write memmaps and in-memory arrays are left alone."""
    from cnnlib.data.cache import release_rows
    n, shape = 1000, (3, 181, 181)
    rng = np.random.default_rng(0)
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, *shape)})
        for a in range(0, n, 100):
            f.write(rng.integers(0, 256, (100, *shape), dtype=np.uint8).tobytes())
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)

    ro = np.load(path, mmap_mode="r")
    before = _rss_file_mib()
    sums = torch.cat([out.sum(1) for _, out in modelops.forward_batches(net, ro, mean, std, batch_size=50)])
    grown = _rss_file_mib() - before

    control = np.load(path, mmap_mode="r")
    before = _rss_file_mib()
    total = sum(int(control[a:a + 50].sum(dtype=np.int64)) for a in range(0, n, 50))   # touched, not released
    grown_control = _rss_file_mib() - before
    print(f"resident growth: {grown:.1f} MiB with release_rows, {grown_control:.1f} MiB without")
    assert grown_control > 60, grown_control          # the pass really maps ~96 MiB
    assert grown < 16, grown
    assert int(ro.sum(dtype=np.int64)) == total        # released pages read back the same bytes
    torch.testing.assert_close(sums.double().sum() * 181 * 181 * 255, torch.tensor(float(total), dtype=torch.float64),
                               rtol=1e-4, atol=0)

    half = np.load(path, mmap_mode="r")[500:]         # a slice of rows (what a page streams) is released too
    before = _rss_file_mib()
    for a in range(0, 500, 50):
        np.array(half[a:a + 50])
        release_rows(half, a, a + 50)
    assert _rss_file_mib() - before < 16

    cow = np.load(path, mmap_mode="c")
    cow[0, 0, 0, 0] = 7 if cow[0, 0, 0, 0] != 7 else 8
    kept = int(cow[0, 0, 0, 0])
    release_rows(cow, 0, n)                            # copy-on-write: the change must survive
    release_rows(np.asarray(cow[:10]), 0, 10)          # in memory: nothing to do
    assert int(cow[0, 0, 0, 0]) == kept


@pytest.mark.parametrize("name", ["simple_cnn", "resnet9", "torchvision/resnet18", "torchvision/mobilenet_v3_small"])
def test_inference_copy_folds_batchnorm_and_equals_the_model(name):
    """Every conv -> BatchNorm pair folded (no BatchNorm2d left where each follows a conv), outputs equal to
    the model's, layer names kept, and the shared model untouched (weights, memory format, hooks)."""
    if name.startswith("torchvision/"):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name.split("/")[1], num_classes=5).eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        model.meta = {"input_shape": [3, 64, 64], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    else:
        model = make_model(name=name, size=32)
    snap = snapshot(model)
    net, channels_last = modelops.inference_copy(model)
    assert channels_last
    left = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert not left, left
    assert {n for n, _ in net.named_modules()} == {n for n, _ in model.named_modules()}
    x = torch.rand(3, *model.meta["input_shape"])
    with torch.no_grad():
        want = model(x)
        got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert_unchanged(model, snap)
    assert all(p.is_contiguous() for p in model.parameters())


def test_inference_copy_folds_nothing_when_a_conv_output_has_another_reader():
    class TwoReaders(nn.Module):          # the conv's output goes to the BatchNorm and straight to the head
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(8, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.head(torch.cat([self.bn(y).mean((2, 3)), y.mean((2, 3))], 1))

    model = TwoReaders().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(2, 3)
    model.meta = {"input_shape": [3, 8, 8]}
    net, _ = modelops.inference_copy(model)
    assert isinstance(net.bn, nn.BatchNorm2d)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))


def test_inference_copy_while_another_thread_runs_a_model():
    """Ten sessions share one process: building an inference copy (evaluation of an uploaded checkpoint)
    must not break another thread's forward pass. torch.fx's tracer, which this used to call, patches
    nn.Module.__call__ for every thread while it traces (the load test's NameError)."""
    import threading
    building, other = make_model(name="resnet9", size=32), make_model(seed=3)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        want = other(x)
    errors, stop = [], threading.Event()

    def forwards():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    torch.testing.assert_close(other(x), want)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                return

    t = threading.Thread(target=forwards)
    t.start()
    try:
        for _ in range(15):
            modelops.inference_copy(building)
    finally:
        stop.set()
        t.join()
    assert errors == []


def test_working_copy_shares_weights_and_leaves_the_model_alone():
    model = make_model()
    snap = snapshot(model)
    copy = modelops.working_copy(model)
    assert copy.conv1.weight is model.conv1.weight and copy.meta is model.meta and copy is not model
    copy.train()
    copy.fc1.register_forward_hook(lambda *a: None)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("name", TORCHVISION_FAMILIES)
def test_analysis_copy_of_torchvision_models(name):
    model = foreign(name)
    snap = snapshot(model)
    net = modelops.analysis_copy(model)
    assert_unchanged(model, snap)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)          # the converted copy: same outputs
    assert not any(getattr(m, "inplace", False) for m in net.modules())
    calls = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in net.named_modules() if n and next(m.children(), None) is None]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert set(calls.values()) == {1}, {n: c for n, c in calls.items() if c != 1}   # one module per use
    rows = interpret.list_layers(model)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    layer = interpret.default_gradcam_layer(model)
    row = next(r for r in rows if r["name"] == layer)
    assert row["spatial"] and row["output_shape"][1] >= 2 and not row["type"].startswith("Adaptive")
    assert isinstance(net.get_submodule(interpret.penultimate_layer(model)), nn.Linear)
    assert interpret.first_layer_filters(model).shape[-1] == 3


def test_resnet_relu_called_twice_gets_one_copy_per_call_and_guided_backprop_matches():
    model = foreign("resnet18")
    net = modelops.analysis_copy(model)
    relu = net.layer1[0].relu
    assert isinstance(relu, modelops.PerCall) and relu.n == 2
    names = [r["name"] for r in interpret.list_layers(model)]
    assert "layer1.0.relu.call1" in names and "layer1.0.relu.call2" in names
    fm = interpret.feature_maps(model, torch.rand(3, 64, 64), ["layer1.0.relu.call1", "layer1.0.relu.call2"])
    assert fm["layer1.0.relu.call1"]["raw"].shape == (64, 16, 16)
    assert not np.array_equal(fm["layer1.0.relu.call1"]["raw"], fm["layer1.0.relu.call2"]["raw"])
    # Guided Backprop: the copy's ReLU hooks act once per call; the result does not depend on how often
    # a caller ran the network before (the per-call counter restarts with every forward pass)
    x = torch.rand(3, 64, 64)
    a = attribution.attribute(model, x, "guided_backprop")["attribution"]
    b = attribution.attribute(model, x, "guided_backprop")["attribution"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).sum() > 0
