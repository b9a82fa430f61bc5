"""The teaching pages (forward pass, through the layers, channel visualisation, training batch, train from the
dashboard, sanity check) with AppTest through the st.navigation frame: each renders for the tiny simple_cnn, a
resnet9-shaped checkpoint and an imported model; the forward pass's numbers are the model's own; a training
run is started, refused, cancelled, and a finished run appears in the checkpoint picker."""
from __future__ import annotations

import os
import re
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import train_tiny, write_image_folder
from test_dashboard_support import _env, app, block, images_in, imported_ckpt, ok, texts, widget  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Setting backward hooks on ReLU")

PAGES = {"Forward pass": "views/forward_pass.py", "Through the layers": "views/layer_strip.py",
         "Channel visualisation": "views/channel_vis.py", "Training batch": "views/training_batch.py",
         "Train a model": "views/train_live.py", "Sanity check": "views/sanity.py"}


def go(at, title: str, errors: bool = False):
    at.switch_page(PAGES[title]).run()
    ok(at, errors)
    return at


def button(at, key: str):
    return next(b for b in at.button if b.key == key)


@pytest.fixture(scope="module")
def resnet_dir(lens_checkpoints, tmp_path_factory):
    """A resnet9-shaped checkpoint (width 4, one epoch) on the tiny checkpoints' dataset, in a folder of its own."""
    base = tmp_path_factory.mktemp("resnet")
    folder = base / "checkpoints"
    folder.mkdir()
    train_tiny(base, lens_checkpoints["data"], out_name="checkpoints/res.pt", model="resnet9", width=4, epochs=1,
               record_filters=False)
    return str(folder)


@pytest.mark.parametrize("which", ["tiny", "resnet9", "imported"])
def test_every_teaching_page_renders(which, monkeypatch, lens_checkpoints, imported_ckpt, request):  # noqa: F811
    if which == "resnet9":
        monkeypatch.setenv("CNNLENS_CHECKPOINTS", request.getfixturevalue("resnet_dir"))
    elif which == "imported":
        monkeypatch.setenv("CNNLENS_CHECKPOINTS", imported_ckpt["dir"])
    at = app()
    if which == "tiny":
        widget(at, "side_ckpt").set_value(lens_checkpoints["tiny"]).run()
    for title in PAGES:
        go(at, title)
        assert title in texts(at) and "How to read this" in texts(at), title
    go(at, "Forward pass")
    assert "result = " in texts(at) and "hook = " in texts(at) and "Σ exp" in texts(at)
    go(at, "Through the layers")
    assert any(getattr(n, "key", None) == "ls_strip" for n in _walk(at.main))
    go(at, "Channel visualisation")
    widget(at, "cv_steps").set_value(16).run()
    button(at, "cv_go").click().run()
    ok(at)
    assert _captions(at, "after 16 steps") and "16 steps" in texts(at)
    assert _captions(at, "start: noise (contrast ×")          # the start shown stretched, not a flat grey (issue 18)
    assert "test images that excite" in texts(at)
    go(at, "Sanity check")
    rhos = re.findall(r"ρ = (-?\d\.\d\d|—)", " ".join(_all_captions(at)))
    assert rhos and rhos[0] == "1.00" and len(rhos) >= 3, rhos


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _all_captions(at) -> list[str]:
    out = []
    for n in _walk(at.main):
        if getattr(n, "type", None) == "image":
            out += [str(c) for c in n.captions]
    return out


def _captions(at, text: str) -> bool:
    return any(text in c for c in _all_captions(at))


# ----------------------------------------------------------------------------- the forward pass's numbers

def _hooks(at) -> list[tuple[float, float]]:
    return [(float(r), float(h)) for r, h in re.findall(r"`result = (\S+)` · `hook = (\S+)`", texts(at))]


def test_forward_pass_numbers_are_the_models_activations(lens_checkpoints):
    """The conv, BatchNorm, ReLU and pool values shown equal the model's activations, computed here with
    forward hooks on the real model (for a unit chosen by its row and column)."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.inference import load_model
    model = load_model(lens_checkpoints["tiny"], "cpu")
    x, _ = load_checkpoint_split(model.meta, "test")
    at = app()
    widget(at, "side_ckpt").set_value(lens_checkpoints["tiny"]).run()
    go(at, "Forward pass")
    widget(at, "fp_layer").set_value("conv2").run()
    widget(at, "fp_ch").set_value(3).run()
    widget(at, "fp_y").set_value(2).run()
    widget(at, "fp_x").set_value(5).run()
    ok(at)
    shown = _hooks(at)
    assert len(shown) == 4, texts(at)                       # conv, batchnorm, relu, pool
    acts = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach()))
             for n in ("conv2", "bn2", "relu2", "pool2")]
    mean = torch.tensor(model.meta["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(model.meta["normalization"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model((torch.from_numpy(np.asarray(x[:1])).float() / 255 - mean) / std)
    for h in hooks:
        h.remove()
    expected = [float(acts["conv2"][0, 3, 2, 5]), float(acts["bn2"][0, 3, 2, 5]), float(acts["relu2"][0, 3, 2, 5]),
                float(acts["pool2"][0, 3, 1, 2])]
    for (result, hook), want in zip(shown, expected):
        assert hook == pytest.approx(want, rel=1e-4, abs=1e-5)
        assert result == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert "`conv2` channel 3, row 2, column 5" in texts(at)
    probs = torch.softmax(logits[0], 0)
    softmax = at.dataframe[-1].value
    assert list(softmax["model"]) == [f"{100 * float(p):.2f}%" for p in probs]
    assert list(softmax["probability = exp / Σ"]) == list(softmax["model"])
    widget(at, "fp_toy_s").set_value(2).run()                  # toy widget: (6 + 0 - 3) // 2 + 1 = 2
    ok(at)
    assert "**2 × 2**" in texts(at)


# ----------------------------------------------------------------------------- train from the dashboard

def _poll(at, until, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        ok(at, errors=True)
        if until(texts(at)):
            return texts(at)
        time.sleep(0.5)
    raise AssertionError(f"timed out; page says:\n{texts(at)[-1500:]}")


def _fill(at, name: str, folder: str, epochs: int):
    widget(at, "tl_name").set_value(name)
    widget(at, "tl_data").set_value("a folder (ImageFolder tree)")
    widget(at, "tl_folder").set_value(folder)
    widget(at, "tl_epochs_default").set_value(epochs)
    widget(at, "tl_batch_default").set_value(16)
    widget(at, "tl_threads").set_value(1)
    next(b for b in at.button if b.label == "Start").click().run()


def test_train_from_the_dashboard(tmp_path, monkeypatch, lens_checkpoints):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(lens_checkpoints["tiny"], folder / "tiny.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CNNLIB_DATA_ROOT", str(tmp_path / "data-root"))
    data = write_image_folder(tmp_path / "data", n_train=256, n_test=16, size=16)
    try:
        _train_walk(app(), folder, data, tmp_path)
    finally:
        from cnnlib.training.jobs import TrainingJobs
        TrainingJobs(str(folder)).cancel(timeout=5)


def _train_walk(at, folder, data, tmp_path):
    go(at, "Train a model")
    assert "No run has been started" in texts(at)

    # a missing dataset: refused in one sentence, before any process starts
    _fill(at, "nodata", str(tmp_path / "no-such-folder"), 1)
    ok(at, errors=True)
    assert len(at.error) == 1 and at.error[0].value.startswith("Not started:"), [e.value for e in at.error]
    assert "\n" not in at.error[0].value
    assert not (folder / ".jobs" / "status.json").exists()

    # a long run: progress shows; a second run is refused with the library's sentence; cancel; resume offered
    _fill(at, "slow", data, 200)
    ok(at)
    _poll(at, lambda t: "status: **running**" in t and re.search(r"epoch \d+ of 200", t))
    _fill(at, "second", data, 1)
    assert any("already running; wait for it or cancel it" in e.value for e in at.error), [e.value for e in at.error]
    _poll(at, lambda t: re.search(r"epoch ([2-9]|\d\d+) of 200", t), timeout=120)   # a resume state exists
    button(at, "tl_cancel").click().run()
    text = _poll(at, lambda t: "status: **cancelled**" in t)
    assert "Resume continues it" in text and any(b.key == "tl_resume" for b in at.button)

    # a short run to the end: success, and the new checkpoint is in the sidebar's picker
    _fill(at, "quick", data, 1)
    _poll(at, lambda t: "status: **finished**" in t, timeout=120)
    at.run()
    assert "quick.pt** is in the sidebar's checkpoint picker" in texts(at)
    assert any(o.startswith("quick.pt · ") for o in widget(at, "side_ckpt").options)
    assert os.path.exists(folder / "quick.pt")


def test_channel_page_first_choice_is_a_layer_with_maps(monkeypatch):
    """mobilenet_v3_small's last spatial layer is a 1 x 1 average pool (the page chose it, and optimised a grey
    image): the first choice is the deepest activation whose maps are larger than 1 x 1."""
    import compute
    import teaching
    rows = [{"name": "features.0.2", "type": "Hardswish", "output_shape": [16, 112, 112]},
            {"name": "features.12.1", "type": "BatchNorm2d", "output_shape": [576, 7, 7]},
            {"name": "features.12.2", "type": "Hardswish", "output_shape": [576, 7, 7]},
            {"name": "avgpool", "type": "AdaptiveAvgPool2d", "output_shape": [576, 1, 1]},
            {"name": "classifier.0", "type": "Linear", "output_shape": [1024]}]
    monkeypatch.setattr(compute, "layers", lambda ctx: rows)
    assert teaching.default_channel_layer(None) == "features.12.2"
    rows[2]["type"] = "Identity"
    assert teaching.default_channel_layer(None) == "features.0.2"
    rows[0]["type"] = "Conv2d"
    assert teaching.default_channel_layer(None) == "features.12.2"      # no activation: the deepest wide layer


def test_a_one_epoch_run_shows_batches_and_loss_and_a_cancel_in_it_can_be_resumed(tmp_path, monkeypatch,
                                                                                   lens_checkpoints):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(lens_checkpoints["tiny"], folder / "tiny.pt")
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CNNLIB_DATA_ROOT", str(tmp_path / "data-root"))
    data = write_image_folder(tmp_path / "data", n_train=1500, n_test=16, size=16)
    at = app()
    try:
        go(at, "Train a model")
        widget(at, "tl_name").set_value("one")
        widget(at, "tl_data").set_value("a folder (ImageFolder tree)")
        widget(at, "tl_folder").set_value(data)
        widget(at, "tl_epochs_default").set_value(1)
        widget(at, "tl_batch_default").set_value(1)                   # 1,500 steps: an epoch long enough to watch
        widget(at, "tl_threads").set_value(1)
        next(b for b in at.button if b.label == "Start").click().run()
        text = _poll(at, lambda t: re.search(r"epoch 1 of 1, batch \d+ of \d+ \(running loss \d+\.\d+", t),
                     timeout=120)
        assert "The curves appear after the first epoch" in text
        button(at, "tl_cancel").click().run()
        text = _poll(at, lambda t: "status: **cancelled**" in t)
        assert "Resume starts it again with the same settings" in text
        assert any(b.key == "tl_resume" for b in at.button) and not any(b.key == "tl_cancel" for b in at.button)
    finally:
        from cnnlib.training.jobs import TrainingJobs
        TrainingJobs(str(folder)).cancel(timeout=5)


def test_channel_page_scores_a_large_test_set_only_when_asked_and_in_one_pass(lens_checkpoints, monkeypatch):
    """Issue 20: at 224 px the page read every test image twice before anything was asked (over 300 s for a
    5,000-image folder). Above AUTO_SCORE_PIXELS it waits for a button, then reads them once."""
    import teaching
    from cnnlib.explain import featurevis
    calls = []
    real = featurevis.channel_scores
    monkeypatch.setattr(featurevis, "channel_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(teaching, "AUTO_SCORE_PIXELS", 0)
    teaching._top.clear()
    at = go(app(), "Channel visualisation")
    assert calls == [] and not images_in(block(at, "cv_top"))
    assert any(b.key == "cv_top_go" and b.label.startswith("Score all") for b in at.button)
    button(at, "cv_top_go").click().run()
    ok(at)
    assert calls == [1] and len(images_in(block(at, "cv_top"))) == teaching.TOP_K
