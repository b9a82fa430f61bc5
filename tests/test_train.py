"""cnnlib.training.train and cnnlib.config: one epoch learns, safe checkpoints, resume, crash during save, NaN guard, DDP,
recipes and flags, the recorded initialisation, fine-tuning from weights."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cnnlib import TrainingError
from cnnlib.models.registry import get_model
from cnnlib.data import spec as data_spec
from cnnlib import modelops
from cnnlib.models import anatomy as interpret
from cnnlib.training import train as train_mod
from cnnlib.io.checkpoint import load_checkpoint, save_checkpoint
from cnnlib.config import make_config
from cnnlib.inference import load_model

from conftest import train_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=180, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlib", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------- training and checkpoints

def test_one_epoch_lowers_loss_and_writes_a_safe_checkpoint(tmp_path, image_folder):
    out = train_tiny(tmp_path, image_folder, epochs=3)
    raw = torch.load(out, weights_only=True)  # plain data only
    for key in ("format_version", "model", "state_dict", "classes", "input_shape", "normalization", "data",
                "config", "history", "best_epoch", "metrics", "test_predictions"):
        assert key in raw
    hist = raw["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert raw["metrics"]["test_acc"] > 0.5  # 4 classes: chance is 0.25
    assert raw["best_epoch"] == 1 + int(np.argmax([h["val_acc"] for h in hist]))
    assert hist[0]["first_layer"].shape == (32, 3, 3, 3) and hist[0]["first_layer"].dtype == torch.float16
    tp = raw["test_predictions"]
    assert tp["probs"].dtype == torch.float16 and tp["probs"].shape == (32, 4) and tp["targets"].shape == (32,)
    assert os.path.isfile(tmp_path / "training_results.png")
    assert not os.path.exists(out + ".resume.pt")
    # the stored predictions are those of the stored weights
    model = load_model(out)
    assert not model.training and model.meta["classes"] == ["blue", "gray", "green", "red"]
    x, y = data_spec.load_checkpoint_split(model.meta, "test", root=str(tmp_path / "data-root"))
    preds = torch.from_numpy(modelops.probabilities(model, np.asarray(x)).argmax(1))
    agree = (preds == tp["preds"].long()).float().mean().item()
    assert agree > 0.95 and torch.equal(tp["targets"].long(), torch.from_numpy(y))
    # epoch 0: the kernels before the first step are stored, and equal what the recorded seed re-creates
    init = raw["initial_first_layer"]
    assert init.shape == (32, 3, 3, 3) and not torch.equal(init, hist[0]["first_layer"])
    meta = {k: v for k, v in raw.items() if k not in ("state_dict", "initial_first_layer")}
    torch.testing.assert_close(interpret.initial_first_layer(meta).half(), init)
    assert [e for e, _ in interpret.filter_history(model.meta)] == [0, 1, 2, 3]


def test_seed_makes_runs_repeatable_and_resume_continues(tmp_path, image_folder, monkeypatch):
    common = dict(epochs=3, precision="fp32")
    full = load_checkpoint(train_tiny(tmp_path, image_folder, "full.pt", **common))

    real_epoch = train_mod.train_one_epoch
    def interrupt_at_epoch_2(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_one_epoch", interrupt_at_epoch_2)
    out = str(tmp_path / "resumed.pt")
    argv = ["--data", image_folder, "--data-root", str(tmp_path / "data-root"), "--epochs", "3", "--batch-size", "16",
            "--val-size", "16", "--lr", "3e-3", "--precision", "fp32", "--no-progress", "--out", out]
    assert train_mod.main(argv) == 130
    assert os.path.exists(out + ".resume.pt") and len(load_checkpoint(out)["history"]) == 1
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)
    assert train_mod.main(argv + ["--resume"]) == 0
    resumed = load_checkpoint(out)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert [h["val_acc"] for h in resumed["history"]] == [h["val_acc"] for h in full["history"]]
    assert all(torch.allclose(resumed["state_dict"][k].float(), v.float(), atol=1e-5)
               for k, v in full["state_dict"].items())
    assert not os.path.exists(out + ".resume.pt")
    with pytest.raises(TrainingError, match="no interrupted run"):
        train_mod.main(argv + ["--resume"])


def test_resume_refuses_changed_settings(tmp_path, image_folder, monkeypatch):
    out = str(tmp_path / "m.pt")
    base = ["--data", image_folder, "--data-root", str(tmp_path / "dr"), "--batch-size", "16", "--val-size", "16",
            "--no-progress", "--out", out]
    real_epoch = train_mod.train_one_epoch
    def stop_at_epoch_2(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_one_epoch", stop_at_epoch_2)
    assert train_mod.main(base + ["--epochs", "3"]) == 130
    with pytest.raises(TrainingError, match="epochs was 3"):
        train_mod.main(base + ["--epochs", "5", "--resume"])


def test_crash_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "m.pt")
    model = get_model("simple_cnn", num_classes=2, image_size=8)
    good = {"model": {"name": "simple_cnn", "kwargs": {"num_classes": 2, "image_size": 8}},
            "state_dict": model.state_dict(), "classes": ["a", "b"], "input_shape": [3, 8, 8],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(good, path)
    before = open(path, "rb").read()

    real_save = torch.save
    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(100)  # half-written ...
        raise KeyboardInterrupt  # ... and killed
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**good, "classes": ["c", "d"]}, path)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert load_checkpoint(path)["classes"] == ["a", "b"]
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, image_folder):
    out = train_tiny(tmp_path, image_folder, epochs=1)
    before = open(out, "rb").read()
    with pytest.raises(TrainingError, match="not finite"):
        train_tiny(tmp_path, image_folder, epochs=2, optimizer="sgd", lr=1e30, schedule="constant")
    assert open(out, "rb").read() == before
    r = run_cli("train", "--data", image_folder, "--data-root", str(tmp_path / "data-root"), "--epochs", "1",
                "--batch-size", "16", "--val-size", "16", "--optimizer", "sgd", "--lr", "1e30", "--schedule",
                "constant", "--no-progress", "--out", out)
    assert r.returncode == 2 and "not finite" in r.stderr and "Traceback" not in r.stderr
    assert open(out, "rb").read() == before


def test_ddp_gloo_two_processes(tmp_path, image_folder):
    out = str(tmp_path / "ddp.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cnnlib",
           "train", "--data", image_folder, "--data-root", str(tmp_path / "dr"), "--epochs", "1", "--batch-size",
           "8", "--val-size", "16", "--no-progress", "--threads", "1", "--out", out]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    ckpt = load_checkpoint(out)
    assert "DDP" in ckpt["device"] and len(ckpt["history"]) == 1
    # each rank trained on half of the 80 training images per epoch: 40 / 8 = 5 steps each
    assert r.stdout.count("test accuracy") == 1  # only rank 0 writes and reports


def test_config_recipes_and_flags():
    seed = make_config("seed")
    assert (seed.optimizer, seed.lr, seed.batch_size, seed.epochs, seed.dropout) == ("adam", 1e-3, 32, 10, 0.5)
    args = train_mod.get_args_parser().parse_args(["--recipe", "seed", "--lr", "0.01", "--no-augment"])
    cfg = train_mod.config_from_args(args)
    assert (cfg.lr, cfg.batch_size, cfg.augment, cfg.recipe) == (0.01, 32, False, "seed")
    with pytest.raises(SystemExit):
        train_mod.get_args_parser().parse_args(["--model", "nope"])


# ----------------------------------------------------------------------------- the fast recipe and its parts

def test_fast_recipe_keeps_the_exact_simple_cnn():
    from cnnlib.config import RECIPES, TrainConfig
    fast = make_config("fast")
    assert fast.model == "simple_cnn" and fast.width == 0 and fast.epochs <= 6
    assert set(RECIPES["fast"]) <= {f for f in TrainConfig.__dataclass_fields__}
    # every new field has a default and a help text (its unit) on the command line
    helps = train_mod._field_help()
    for field in ("ema", "lookahead_k", "lookahead_alpha", "bn_momentum", "init", "flip_mode", "lr_div_start",
                  "lr_div_end"):
        assert helps.get(field), field
    args = train_mod.get_args_parser().parse_args(["--recipe", "fast", "--ema", "0.99", "--flip-mode", "random"])
    cfg = train_mod.config_from_args(args)
    assert (cfg.ema, cfg.flip_mode, cfg.init) == (0.99, "random", fast.init)


def test_ema_lookahead_whiten_alternate_flip_store_the_weights_that_score(tmp_path, image_folder):
    out = train_tiny(tmp_path, image_folder, recipe="fast", epochs=3, ema=0.9, lookahead_k=5, bn_momentum=0.2,
                     init="whiten", flip_mode="alternate", precision="fp32")
    raw = torch.load(out, weights_only=True)
    assert raw["config"]["ema"] == 0.9 and raw["precision"]["used"] == "fp32"
    assert [h["epoch"] for h in raw["history"]] == [1, 2, 3] and all(h["elapsed"] > 0 for h in raw["history"])
    # re-evaluating the stored (EMA) weights reproduces the stored predictions and accuracy
    model = load_model(out)
    x, y = data_spec.load_checkpoint_split(model.meta, "test", root=str(tmp_path / "data-root"))
    preds = torch.from_numpy(modelops.probabilities(model, np.asarray(x)).argmax(1))
    assert (preds == raw["test_predictions"]["preds"].long()).float().mean().item() > 0.95
    acc = (preds == torch.from_numpy(y)).float().mean().item()
    assert abs(acc - raw["metrics"]["test_acc"]) < 0.05
    # the whitened start is what was recorded as epoch 0, not the seed's random init
    meta = {k: v for k, v in raw.items() if k != "state_dict"}
    init = interpret.initial_first_layer(meta)
    torch.manual_seed(0)
    random_init = get_model("simple_cnn", **raw["model"]["kwargs"]).conv1.weight.detach().half()
    assert not torch.equal(init.half(), random_init)


def test_weight_ema_averages_parameters_and_batchnorm_statistics():
    from cnnlib.training.optim import WeightEMA
    torch.manual_seed(0)
    model = get_model("simple_cnn", num_classes=2, image_size=8)
    ema = WeightEMA(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for v in model.state_dict().values():
            v.add_(1) if v.is_floating_point() else v.add_(3)
    ema.steps = 100                                   # past the warm-up cap: decay 0.5 exactly
    ema.update(model)
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, start[k] + 0.5)   # running_mean / running_var too
        else:
            assert torch.equal(v, start[k] + 3)            # num_batches_tracked is copied
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_lookahead_pulls_fast_weights_back_every_k_steps():
    from cnnlib.training.optim import Lookahead
    model = torch.nn.Linear(2, 1)
    start = model.weight.detach().clone()
    la = Lookahead(model, k=2, alpha=0.5)
    with torch.no_grad():
        model.weight.add_(2.0)
    la.step()                                            # step 1: nothing
    torch.testing.assert_close(model.weight.detach(), start + 2)
    la.step()                                            # step 2: slow = start + 0.5 * 2, fast = slow
    torch.testing.assert_close(model.weight.detach(), start + 1)
    torch.testing.assert_close(la.slow[0], start + 1)


def test_whiten_init_decorrelates_first_layer_responses():
    from cnnlib.training.optim import whiten_init_
    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 1, 16, 16, generator=g)
    x = (torch.cat([base, base * 0.9, base * 0.5 + 0.2], 1) * 255).to(torch.uint8)   # strongly correlated channels
    mean, std = torch.full((1, 3, 1, 1), 0.4), torch.full((1, 3, 1, 1), 0.2)
    conv = torch.nn.Conv2d(3, 32, 3, padding=1)
    norm_before = conv.weight.reshape(32, -1).norm(dim=1).mean()
    whiten_init_(conv, x, mean, std)
    w = conv.weight.reshape(32, -1)
    torch.testing.assert_close(w[16:], -w[:16])                       # +- pairs
    torch.testing.assert_close(w.norm(dim=1).mean(), norm_before)     # default init's scale
    patches = torch.nn.functional.unfold((x.float() / 255 - mean) / std, 3).transpose(1, 2).reshape(-1, 27)
    out = (patches - patches.mean(0)) @ w[:16].T                      # responses of the 16 whitening filters
    corr = torch.corrcoef(out.T)
    assert (corr - torch.eye(16)).abs().max() < 1e-3                  # uncorrelated
