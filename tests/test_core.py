"""Core: data loaders on real on-disk formats, models, training, checkpoints, resume, NaN guard, DDP."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cnnlib import CNNLibError, DatasetError, TrainingError, get_model, list_models
from cnnlib import data as data_mod
from cnnlib import train as train_mod
from cnnlib.checkpoint import load_checkpoint, save_checkpoint
from cnnlib.config import make_config
from cnnlib.inference import load_model

from conftest import train_tiny, write_cifar10_batches, write_image_folder, write_mnist_idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=180, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlib", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------- models

def test_registry_lists_and_fails_loudly():
    assert {"simple_cnn", "resnet9"} <= set(list_models())
    with pytest.raises(CNNLibError, match="known models: .*simple_cnn"):
        get_model("no_such_net")


@pytest.mark.parametrize("name,shape,classes", [("simple_cnn", (3, 32, 32), 10), ("simple_cnn", (1, 28, 28), 7),
                                                ("resnet9", (3, 32, 32), 10), ("resnet9", (1, 28, 28), 3)])
def test_models_fit_any_input(name, shape, classes):
    model = get_model(name, num_classes=classes, in_channels=shape[0], image_size=shape[1]).eval()
    assert model(torch.rand(2, *shape)).shape == (2, classes)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    calls = {}  # every module instance runs exactly once per forward (hooks and Captum rely on it)
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n, m in model.named_modules() if not list(m.children())]
    model(torch.rand(1, *shape))
    for h in handles:
        h.remove()
    assert calls and max(calls.values()) == 1


def test_simple_cnn_is_the_original_architecture():
    m = get_model("simple_cnn")
    assert [type(x).__name__ for x in m.children()] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
        "Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert (m.conv1.in_channels, m.conv1.out_channels, m.conv2.out_channels) == (3, 32, 64)
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.out_features) == (4096, 128, 10)


# ----------------------------------------------------------------------------- data

def test_cifar10_pickles_load_split_and_cache(tmp_path, monkeypatch):
    root = write_cifar10_batches(tmp_path)
    # synthetic files cannot match CIFAR-10's md5 sums; everything else is torchvision's real loader
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    splits = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=3, download=False)
    x, y = splits["train"]
    assert x.dtype == torch.uint8 and x.shape == (180, 3, 32, 32) and y.dtype == torch.int64
    assert splits["sizes"] == {"train": 180, "val": 20, "test": 80}
    assert splits["classes"][0] == "airplane" and len(splits["classes"]) == 10
    assert os.path.isfile(os.path.join(root, "cnnlib-cache", "cifar10-v1.pt"))
    # the second load comes from the decoded cache, with the same split
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", lambda *a, **k: pytest.fail("decoded again"))
    t0 = time.perf_counter()
    again = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=3, download=False)
    assert time.perf_counter() - t0 < 2.0
    assert torch.equal(again["val"][0], splits["val"][0])
    other = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=4, download=False)
    assert not torch.equal(other["val"][1], splits["val"][1])


def test_image_folder_with_and_without_test(tmp_path):
    with_test = write_image_folder(tmp_path / "a", n_train=40, n_test=12)
    s = data_mod.load_dataset(with_test, root=str(tmp_path / "r"), val_size=8)
    assert s["sizes"] == {"train": 32, "val": 8, "test": 12} and s["classes"] == ["blue", "gray", "green", "red"]
    assert s["train"][0].shape[1:] == (3, 16, 16)
    no_test = write_image_folder(tmp_path / "b", n_train=40, with_test=False)
    s = data_mod.load_dataset(no_test, root=str(tmp_path / "r"), val_size=8, test_fraction=0.25)
    assert s["sizes"] == {"train": 22, "val": 8, "test": 10}
    resized = data_mod.load_dataset(no_test, root=str(tmp_path / "r"), val_size=8, image_size=8)
    assert resized["test"][0].shape[1:] == (3, 8, 8)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train/"):
        data_mod.load_dataset(str(tmp_path / "empty"), root=str(tmp_path / "r"))
    with pytest.raises(DatasetError, match="neither a known dataset"):
        data_mod.load_dataset(str(tmp_path / "nope"), root=str(tmp_path / "r"))


def test_missing_dataset_cli_message(tmp_path):
    r = run_cli("train", "--data", "cifar10", "--data-root", str(tmp_path), "--no-download", "--out",
                str(tmp_path / "m.pt"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for option in ("--data PATH", "--data-root", "CNNLIB_DATA_ROOT", "download"):
        assert option in r.stderr


def test_channel_stats_and_augment_are_exact():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = data_mod.channel_stats(x, chunk=10)
    ref = x.double().div(255)
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).tolist()) and np.allclose(std, ref.std(dim=(0, 2, 3), unbiased=False).tolist())
    out = data_mod.augment_batch(x, padding=2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):  # each output is some 8x8 window of the padded image, maybe mirrored
        windows = [(padded[i, :, dy:dy + 8, dx:dx + 8], f) for dy in range(5) for dx in range(5) for f in (0, 1)]
        match = [f for w, f in windows if torch.equal(out[i], w.flip(2) if f else w)]
        assert match, f"image {i} is not a crop of its padded input"
        flips += min(match)
    assert 0 < flips < len(x)


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
    x, y = data_mod.load_checkpoint_split(model.meta, "test", root=str(tmp_path / "data-root"))
    with torch.inference_mode():
        preds = model(train_mod.to_input(x, torch.tensor(model.meta["normalization"]["mean"]).view(1, -1, 1, 1),
                                         torch.tensor(model.meta["normalization"]["std"]).view(1, -1, 1, 1),
                                         False)).argmax(1)
    agree = (preds == tp["preds"].long()).float().mean().item()
    assert agree > 0.95 and torch.equal(tp["targets"].long(), y)


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


def test_grayscale_mnist_end_to_end(tmp_path):
    root = write_mnist_idx(tmp_path / "root")
    out = train_tiny(tmp_path, "mnist", data_root=root, epochs=1, flip=False)
    model = load_model(out)
    assert model.meta["input_shape"] == [1, 28, 28] and len(model.meta["normalization"]["mean"]) == 1
    from cnnlib.inference import predict
    top = predict(model, np.zeros((50, 40, 3), np.uint8), k=3)  # colour input, converted to gray
    assert len(top) == 3 and top[0]["class"] in model.meta["classes"]


def test_fashion_mnist_from_debian_gz_files(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_idx(debian, folder=".", gz=True)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(debian / "raw"))
    s = data_mod.load_dataset("fashion-mnist", root=str(tmp_path / "root"), val_size=20, download=False)
    assert s["sizes"] == {"train": 100, "val": 20, "test": 40} and s["classes"][0] == "T-shirt/top"


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
