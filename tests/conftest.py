"""Shared fixtures: tiny synthetic datasets in the real on-disk formats, and a tiny trained checkpoint.

The images are learnable on purpose: class k is a noisy picture whose colour and bright
quadrant depend on k, so one epoch of a small CNN already lowers the loss.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)   # two xdist workers: one thread each

CLASSES4 = ["red", "green", "blue", "gray"]


def bench_module(name: str):
    """bench/<name>.py imported as a module (the load test and the page walk are benchmarks the tests reuse)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_images(n: int, num_classes: int, size: int = 32, channels: int = 3, seed: int = 0):
    """uint8 (n, size, size, channels) and labels (n,): class-dependent colour + bright quadrant + noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = rng.normal(60, 25, size=(n, size, size, channels))
    half = size // 2
    for i, k in enumerate(y):
        if channels == 3:
            x[i, :, :, k % 3] += 90
        qy, qx = divmod(k % 4, 2)
        x[i, qy * half:(qy + 1) * half, qx * half:(qx + 1) * half, :] += 80 + 10 * (k // 4)
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def write_image_folder(root, n_train=96, n_test=32, classes=CLASSES4, size=16, with_test=True, mode="RGB"):
    """root/train/<class>/*.png (and root/test/<class>/*.png)."""
    channels = 1 if mode == "L" else 3
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        if split == "test" and not with_test:
            continue
        x, y = synthetic_images(n, len(classes), size, channels, seed)
        for i, (img, k) in enumerate(zip(x, y)):
            d = os.path.join(root, split, classes[k])
            os.makedirs(d, exist_ok=True)
            Image.fromarray(img[..., 0] if channels == 1 else img, mode).save(os.path.join(d, f"{i:05d}.png"))
    return str(root)


def write_cifar10_batches(root, per_batch=40, n_test=80):
    """root/cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta (CIFAR-10's pickles)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files = [(f"data_batch_{i}", per_batch, i) for i in range(1, 6)] + [("test_batch", n_test, 9)]
    for name, n, seed in files:
        x, y = synthetic_images(n, 10, 32, 3, seed)
        # keys as the original Python 2 pickles decode with encoding="latin1": str
        blob = {"batch_label": name, "labels": y.tolist(),
                "data": x.transpose(0, 3, 1, 2).reshape(n, 3072), "filenames": ["x.png"] * n}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(blob, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
    return str(root)


def write_mnist_idx(root, folder="MNIST", n_train=120, n_test=40, gz=False):
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (MNIST's IDX format)."""
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    opener = gzip.open if gz else open
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = synthetic_images(n, 10, 28, 1, seed)
        suffix = ".gz" if gz else ""
        with opener(os.path.join(raw, f"{prefix}-images-idx3-ubyte{suffix}"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + x[..., 0].tobytes())
        with opener(os.path.join(raw, f"{prefix}-labels-idx1-ubyte{suffix}"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + y.astype(np.uint8).tobytes())
    return str(root)


def train_tiny(tmp_path, data, out_name="tiny.pt", **overrides):
    """Train through the real pipeline with small, fast settings; returns the checkpoint path."""
    from cnnlib.config import make_config
    from cnnlib.training.train import run

    values = dict(data=str(data), data_root=str(tmp_path / "data-root"), epochs=2, batch_size=16, val_size=16,
                  out=str(tmp_path / out_name), progress=False, lr=3e-3, eval_batch_size=64)
    values.update(overrides)
    run(make_config(values.pop("recipe", "default"), **values))
    return values["out"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A trained simple_cnn checkpoint on a 4-class 16x16 synthetic ImageFolder (the data stays on disk)."""
    base = tmp_path_factory.mktemp("tiny")
    folder = write_image_folder(base / "data")
    return train_tiny(base, folder, epochs=3)


@pytest.fixture(scope="session")
def tiny_cifar_ckpt(tmp_path_factory):
    """A trained simple_cnn on synthetic 32x32 RGB, 10 classes (CIFAR-10 shapes), ImageFolder on disk."""
    base = tmp_path_factory.mktemp("tinycifar")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder = write_image_folder(base / "data", n_train=200, n_test=100, classes=names, size=32)
    return train_tiny(base, folder, epochs=2)


# ----------------------------------------------------------------------------- dashboard tests

def pytest_addoption(parser):
    parser.addoption("--no-browser", action="store_true", default=False,
                     help="skip the real-browser dashboard test (tests/test_browser.py); "
                          "also: CNNLENS_SKIP_BROWSER=1")


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the dashboard in headless Chromium "
                                       "(skipped with --no-browser or CNNLENS_SKIP_BROWSER=1)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--no-browser") or os.environ.get("CNNLENS_SKIP_BROWSER") == "1":
        skip = pytest.mark.skip(reason="browser test turned off (--no-browser / CNNLENS_SKIP_BROWSER=1)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def lens_checkpoints(tiny_ckpt, tmp_path_factory):
    return build_lens_checkpoints(tiny_ckpt, tmp_path_factory.mktemp("lens"))


def build_browser_checkpoints(tiny_ckpt, base, n_train: int = 200):
    """build_lens_checkpoints with wrong.pt pointed at a larger folder of the same classes (240 test images, so
    the Errors gallery has rows of mistakes and the map points worth selecting; 200 training images for the
    neighbours and verdicts). Its stored predictions are dropped: they are computed from the new pixels."""
    lc = build_lens_checkpoints(tiny_ckpt, base)
    big = write_image_folder(base / "bigdata", n_train=n_train, n_test=240, classes=lc["classes"], size=16)
    ckpt = torch.load(lc["wrong"], weights_only=True)
    ckpt["data"] = {**ckpt["data"], "path": big}
    ckpt.pop("test_predictions", None)
    stamp = os.path.getmtime(lc["wrong"])
    torch.save(ckpt, lc["wrong"])
    os.utime(lc["wrong"], (stamp, stamp))
    return lc


def build_lens_checkpoints(tiny_ckpt, base):
    """A checkpoint folder for the dashboard: tiny.pt (the trained tiny_ckpt) and, newest, wrong.pt (the same
    network with noise on its classifier, so it makes real mistakes; its stored test predictions are recomputed).
    Also nodata.pt in a folder of its own: wrong.pt whose recorded dataset folder does not exist."""
    import shutil

    from cnnlib.io.checkpoint import load_checkpoint, save_checkpoint
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import run_split
    from cnnlib.inference import load_model

    folder = base / "checkpoints"
    folder.mkdir()
    shutil.copy(tiny_ckpt, folder / "tiny.pt")
    ckpt = load_checkpoint(tiny_ckpt)
    x, y = load_checkpoint_split({k: v for k, v in ckpt.items() if k != "state_dict"}, "test")
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0):
        sd = {k: v.clone() for k, v in ckpt["state_dict"].items()}
        w = sd["fc2.weight"]
        sd["fc2.weight"] = w + scale * w.std() * torch.randn(w.shape, generator=gen)
        out = run_split(load_model({**ckpt, "state_dict": sd}), x, y)
        acc = float((out["preds"] == out["targets"]).mean())
        if 0.3 <= acc <= 0.85:
            break
    wrong = {**ckpt, "state_dict": sd, "metrics": {**ckpt["metrics"], "test_acc": acc},
             "test_predictions": {"targets": torch.from_numpy(np.asarray(y)).to(torch.int16), "preds": torch.from_numpy(out["preds"]).to(torch.int16),
                                  "probs": torch.from_numpy(out["probs"]).to(torch.float16)}}
    save_checkpoint(wrong, str(folder / "wrong.pt"))
    stamp = os.path.getmtime(folder / "tiny.pt") + 60
    os.utime(folder / "wrong.pt", (stamp, stamp))
    nodata_dir = base / "nodata"
    nodata_dir.mkdir()
    save_checkpoint({**wrong, "data": {**wrong["data"], "path": str(base / "no-such-dataset")}},
                    str(nodata_dir / "nodata.pt"))
    return {"dir": str(folder), "tiny": str(folder / "tiny.pt"), "wrong": str(folder / "wrong.pt"),
            "nodata": str(nodata_dir / "nodata.pt"), "nodata_dir": str(nodata_dir), "accuracy": acc,
            "data": ckpt["data"]["path"], "classes": ckpt["classes"],
            "best_class": int(np.bincount(out["targets"][out["preds"] == out["targets"]],
                                          minlength=len(ckpt["classes"])).argmax())}
