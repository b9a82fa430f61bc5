"""Data: named datasets and ImageFolder trees on real on-disk formats, the memory-mapped split cache,
a checkpoint's data (checkpoint_data_spec / load_checkpoint_split), messages, statistics and augmentation."""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from cnnlib import DatasetError
from cnnlib.data import datasets as data_mod
from cnnlib.data import spec as data_spec
from cnnlib.data import cache as datacache
from cnnlib.data import images as images_mod
from cnnlib.config import TrainConfig
from cnnlib.inference import load_model

from conftest import CLASSES4, train_tiny, write_cifar10_batches, write_image_folder, write_mnist_idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=180, env=None):
    return subprocess.run([sys.executable, "-m", "cnnlib", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


SORTED4 = sorted(CLASSES4)  # ImageFolder's class order


def folder_meta(path, classes=SORTED4, shape=(3, 16, 16), config=None, **extra):
    """A checkpoint's meta (no state_dict) for an ImageFolder dataset."""
    meta = {"data": {"name": os.path.basename(str(path)), "path": str(path), "split_seed": 0},
            "classes": list(classes), "input_shape": list(shape)}
    if config is not None:
        meta["config"] = config
    return {**meta, **extra}


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts cnnlib.data.images.load_image calls per file (every dataset image is decoded through it)."""
    calls = []
    real = images_mod.load_image

    def counting(source):
        calls.append(str(source))
        return real(source)
    monkeypatch.setattr(images_mod, "load_image", counting)
    return calls


def one_sentence(msg: str) -> bool:
    return msg.endswith(".") and not re.search(r"[.!?]\s+[A-Z]", msg[:-1]) and "\n" not in msg


# ----------------------------------------------------------------------------- named datasets

def test_cifar10_pickles_load_split_and_cache(tmp_path, monkeypatch):
    root = write_cifar10_batches(tmp_path)
    # synthetic files cannot match CIFAR-10's md5 sums; everything else is torchvision's real loader
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    splits = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=3, download=False)
    x, y = splits["train"]
    assert x.dtype == torch.uint8 and x.shape == (180, 3, 32, 32) and y.dtype == torch.int64
    assert splits["sizes"] == {"train": 180, "val": 20, "test": 80}
    assert splits["classes"][0] == "airplane" and len(splits["classes"]) == 10
    cache = os.path.join(root, "cnnlib-cache")
    v = datacache.CACHE_VERSION
    assert {f"cifar10-v{v}-train.x.npy", f"cifar10-v{v}-test.x.npy", f"cifar10-v{v}-test.json"} <= set(os.listdir(cache))
    # the second load comes from the decoded cache, with the same split
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", lambda *a, **k: pytest.fail("decoded again"))
    t0 = time.perf_counter()
    again = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=3, download=False)
    assert time.perf_counter() - t0 < 2.0
    assert torch.equal(again["val"][0], splits["val"][0])
    other = data_mod.load_dataset("cifar10", root=root, val_size=20, split_seed=4, download=False)
    assert not torch.equal(other["val"][1], splits["val"][1])
    # a checkpoint's val split is the training run's
    meta = {"data": {"name": "cifar10", "path": root, "split_seed": 3}, "config": {"val_size": 20},
            "classes": splits["classes"], "input_shape": [3, 32, 32]}
    xv, yv = data_spec.load_checkpoint_split(meta, "val")
    assert np.array_equal(xv, splits["val"][0].numpy()) and np.array_equal(yv, splits["val"][1].numpy())
    xt, _ = data_spec.load_checkpoint_split(meta, "test")
    assert isinstance(xt, np.memmap) and np.array_equal(xt, splits["test"][0].numpy())
    with pytest.raises(data_spec.DataMismatch, match="1x28x28"):
        write_mnist_idx(root)
        data_spec.load_checkpoint_split({**meta, "data": {"name": "mnist", "path": root}}, "test")


def test_fashion_mnist_from_debian_gz_files(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_idx(debian, folder=".", gz=True)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(debian / "raw"))
    s = data_mod.load_dataset("fashion-mnist", root=str(tmp_path / "root"), val_size=20, download=False)
    assert s["sizes"] == {"train": 100, "val": 20, "test": 40} and s["classes"][0] == "T-shirt/top"


def test_grayscale_mnist_end_to_end(tmp_path):
    root = write_mnist_idx(tmp_path / "root")
    out = train_tiny(tmp_path, "mnist", data_root=root, epochs=1, flip=False)
    model = load_model(out)
    assert model.meta["input_shape"] == [1, 28, 28] and len(model.meta["normalization"]["mean"]) == 1
    from cnnlib.inference import predict
    top = predict(model, np.zeros((50, 40, 3), np.uint8), k=3)  # colour input, converted to gray
    assert len(top) == 3 and top[0]["class"] in model.meta["classes"]


# ----------------------------------------------------------------------------- ImageFolder trees

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
    # the checkpoint sees the very splits training carved
    meta = folder_meta(no_test, config={"val_size": 8, "test_fraction": 0.25})
    for split in ("train", "val", "test"):
        x, y = data_spec.load_checkpoint_split(meta, split, root=str(tmp_path / "r"))
        assert np.array_equal(x, s[split][0].numpy()) and np.array_equal(y, s[split][1].numpy()), split


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train/.*no class sub-folders|no class sub-folders.*train/"):
        data_mod.load_dataset(str(tmp_path / "empty"), root=str(tmp_path / "r"))
    with pytest.raises(DatasetError, match="neither a known dataset"):
        data_mod.load_dataset(str(tmp_path / "nope"), root=str(tmp_path / "r"))
    (tmp_path / "noimg" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        data_mod.load_dataset(str(tmp_path / "noimg"), root=str(tmp_path / "r"))
    bad = write_image_folder(tmp_path / "bad", n_train=8, n_test=4)
    victim = os.path.join(bad, "test", "red", min(os.listdir(os.path.join(bad, "test", "red"))))
    with open(victim, "wb") as f:
        f.write(b"not an image")
    x, y = data_spec.load_checkpoint_split(folder_meta(bad), "test", root=str(tmp_path / "r"))
    assert len(x) == len(y) == 3                                        # skipped, not fatal (issue 18)
    assert not [f for f in os.listdir(tmp_path / "r" / "cnnlib-cache") if f.endswith(".tmp")]
    (tmp_path / "allbad" / "test" / "red").mkdir(parents=True)        # nothing decodable at all: one sentence
    for name in ("a.jpg", "b.png"):
        (tmp_path / "allbad" / "test" / "red" / name).write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="none of the 2 image files in .* can be decoded"):
        data_spec.load_checkpoint_split(folder_meta(tmp_path / "allbad", classes=["red"]), "test",
                                        root=str(tmp_path / "r"))


def smooth_image(w, h, channels, seed):
    """A smooth picture (so resampling differences stay small) that differs across the whole frame."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [127 + 100 * np.sin(xx / (7 + 3 * c + seed)) * np.cos(yy / (11 + 2 * c)) for c in range(channels)]
    a = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a, "L" if channels == 1 else "RGB")


def write_sized_folder(root, sizes, classes=("a", "b"), mode="RGB", layout=("train", "test")):
    files = []
    for split in layout:
        for i, (w, h) in enumerate(sizes):
            d = os.path.join(root, split, classes[i % len(classes)]) if split else os.path.join(root, classes[i % len(classes)])
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{i:03d}.png")
            smooth_image(w, h, 1 if mode == "L" else 3, i).save(path)
            files.append(path)
    return str(root), files


@pytest.mark.parametrize("resize,image_size", [(40, 32), (0, 24), (48, 0)])
def test_any_image_size_matches_torchvision_resize_and_center_crop(tmp_path, resize, image_size):
    from torchvision import transforms as T

    sizes = [(224, 224), (61, 47), (300, 200), (50, 90), (224, 224), (33, 35)]
    folder, _ = write_sized_folder(tmp_path / "d", sizes)
    s = data_mod.load_dataset(folder, root=str(tmp_path / "r"), val_size=1, image_size=image_size, resize=resize)
    side = image_size or resize
    assert s["test"][0].shape == (len(sizes), 3, side, side)
    ref = T.Compose([T.Resize(resize or image_size), T.CenterCrop(side)])
    test_files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(folder, "test")) for f in fs)
    for x, path in zip(s["test"][0], test_files):
        want = np.asarray(ref(Image.open(path).convert("RGB")), np.float64).transpose(2, 0, 1)
        diff = np.abs(x.numpy().astype(np.float64) - want)
        assert diff.mean() < 3 and np.percentile(diff, 99) < 16, (path, diff.mean(), diff.max())
    # a checkpoint with that preprocessing reads the same pixels
    meta = folder_meta(folder, classes=["a", "b"], shape=(3, side, side),
                       preprocessing=data_mod.preprocessing_for(resize, image_size))
    x, y = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "r"))
    assert np.array_equal(x, s["test"][0].numpy()) and np.array_equal(y, s["test"][1].numpy())


def test_grayscale_folder_and_first_image_size(tmp_path):
    folder, _ = write_sized_folder(tmp_path / "g", [(20, 12), (40, 24), (20, 12)], mode="L")
    s = data_mod.load_dataset(folder, root=str(tmp_path / "r"), val_size=1)  # both 0: first image's size
    assert s["train"][0].shape[1:] == (1, 12, 20) and s["test"][0].shape == (3, 1, 12, 20)


def test_flat_class_folder_is_the_test_split(tmp_path, count_decodes):
    flat = os.path.join(write_image_folder(tmp_path / "f", n_train=24, with_test=False), "train")  # <class>/*.png
    s = data_mod.load_dataset(flat, root=str(tmp_path / "r"), val_size=5)
    assert s["sizes"] == {"train": 0, "val": 0, "test": 24}
    assert s["train"][0].shape == (0, 3, 16, 16) and s["val"][0].shape == (0, 3, 16, 16)
    assert s["classes"] == sorted(CLASSES4)
    meta = folder_meta(flat, config={})
    count_decodes.clear()
    x, y = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "r2"))
    assert x.shape == (24, 3, 16, 16) and np.array_equal(x, s["test"][0].numpy()) and len(count_decodes) == 24
    x, y = data_spec.load_checkpoint_split(meta, "train", root=str(tmp_path / "r2"))
    assert x.shape == (0, 3, 16, 16) and y.shape == (0,) and y.dtype == np.int64


# ----------------------------------------------------------------------------- the cache

def test_checkpoint_test_split_decodes_only_test_files(tmp_path, count_decodes):
    folder = write_image_folder(tmp_path / "d", n_train=96, n_test=32)
    meta = folder_meta(folder, config={"val_size": 16})
    x, y = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "fresh"))
    assert x.shape == (32, 3, 16, 16) and y.dtype == np.int64 and y.shape == (32,)
    assert len(count_decodes) == 32 and all(os.sep + "test" + os.sep in p for p in count_decodes)
    count_decodes.clear()
    again, _ = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "fresh"))
    assert count_decodes == [] and np.array_equal(again, x)
    # train/ only: the carved test split decodes its own files, not the whole of train/
    carved = write_image_folder(tmp_path / "c", n_train=80, with_test=False)
    count_decodes.clear()
    x, _ = data_spec.load_checkpoint_split(folder_meta(carved, config={"test_fraction": 0.25}), "test",
                                          root=str(tmp_path / "fresh"))
    assert len(x) == 20 and len(count_decodes) == 20


def test_cache_is_a_validated_memmap(tmp_path, count_decodes):
    folder = write_image_folder(tmp_path / "d", n_train=16, n_test=12)
    root = str(tmp_path / "r")
    meta = folder_meta(folder)
    x, y = data_spec.load_checkpoint_split(meta, "test", root=root)
    assert y.dtype == np.int64 and y.shape == (12,)
    assert isinstance(x, np.memmap) and not x.flags.writeable and x.dtype == np.uint8
    first = np.array(x)
    train = data_mod.load_dataset(folder, root=root, val_size=4)
    assert train["test"][0].numpy().base is not None  # the torch test split maps the same file (copy-on-write)
    assert len([f for f in os.listdir(os.path.join(root, "cnnlib-cache")) if f.endswith(".x.npy")]) == 2  # shared
    xfile = x.filename
    for damage in ("truncate", "garbage", "header"):
        if damage == "truncate":
            with open(xfile, "r+b") as f:
                f.truncate(os.path.getsize(xfile) - 100)
        elif damage == "garbage":
            with open(xfile, "wb") as f:
                f.write(os.urandom(500))
        else:
            os.remove(xfile[:-len(".x.npy")] + ".json")
        count_decodes.clear()
        x, _ = data_spec.load_checkpoint_split(meta, "test", root=root)
        assert len(count_decodes) == 12, damage  # detected and rebuilt, never used
        assert np.array_equal(x, first) and isinstance(x, np.memmap)


def test_cache_streams_in_chunks_and_survives_a_read_only_root(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "d", n_train=8, n_test=20)
    meta = folder_meta(folder)
    whole, _ = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "a"))
    monkeypatch.setattr(datacache, "CHUNK_BYTES", 3 * 16 * 16 * 3)  # three images per chunk
    blocks = []
    real = datacache.write_split

    def spy(root, key, shape, fill, y, classes, extra=None):
        return real(root, key, shape, lambda a, b: blocks.append(b - a) or fill(a, b), y, classes, extra)
    monkeypatch.setattr(datacache, "write_split", spy)
    chunked, _ = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "b"))
    assert blocks == [3, 3, 3, 3, 3, 3, 2] and np.array_equal(chunked, whole)

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(datacache, "write_split", read_only)
    x, y = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "c"))
    assert not isinstance(x, np.memmap) and np.array_equal(x, whole) and len(y) == 20


# ----------------------------------------------------------------------------- a checkpoint's data

def test_checkpoint_data_spec(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "d", n_train=8, n_test=4)
    cfg = {"val_size": 16, "test_fraction": 0.25, "split_seed": 9, "data": folder}
    spec = data_spec.checkpoint_data_spec(folder_meta(folder, config=cfg), root=str(tmp_path / "r"))
    assert spec == data_spec.DataSpec(folder, str(tmp_path / "r"), 0, 16, 0.25, 16, 0)  # data.split_seed wins
    # an imported model: no config, so TrainConfig's defaults; preprocessing decides the image settings
    d = TrainConfig()
    bare = {"data": {"path": folder}, "classes": ["a"], "input_shape": [3, 224, 224],
            "preprocessing": {"resize": 256, "crop": 224}}
    spec = data_spec.checkpoint_data_spec(bare)
    assert (spec.split_seed, spec.val_size, spec.test_fraction, spec.image_size, spec.resize) == \
        (d.split_seed, d.val_size, d.test_fraction, 224, 256)
    assert spec.root == data_mod.resolve_root(None)
    assert data_spec.checkpoint_data_spec({**bare, "input_shape": [3, 20, 30], "preprocessing": None}).image_size == 0
    # a relative path is relative to the repository root (checkpoints store .cache/cifar10-jpeg)
    rel = data_spec.checkpoint_data_spec({**bare, "data": {"path": ".cache/no-such-copy"}})
    assert rel.source == os.path.join(REPO, ".cache", "no-such-copy")
    # named datasets, overrides, and keys
    named = data_spec.checkpoint_data_spec({"data": {"name": "mnist", "path": str(tmp_path)}, "classes": [],
                                           "input_shape": [1, 28, 28]})
    assert (named.source, named.root, named.image_size) == ("mnist", str(tmp_path), 0)
    assert data_spec.checkpoint_data_spec(bare, override="CIFAR10").source == "cifar10"
    assert data_spec.checkpoint_data_spec(bare, override=str(tmp_path)).key() != spec.key()
    assert data_spec.checkpoint_data_spec(bare).key() == spec.key() and len(spec.key()) >= 8
    # no dataset recorded: no silent cifar10
    with pytest.raises(DatasetError, match="does not record which dataset"):
        data_spec.checkpoint_data_spec({"classes": ["a"], "input_shape": [3, 8, 8]})
    assert data_spec.checkpoint_data_spec({"config": {"data": "mnist"}, "classes": [], "input_shape": [1, 28, 28]}
                                         ).source == "mnist"


def test_load_checkpoint_split_checks_classes_and_size(tmp_path):
    folder = write_image_folder(tmp_path / "d", n_train=8, n_test=4)
    with pytest.raises(data_spec.DataMismatch, match="classes .*do not match"):
        data_spec.load_checkpoint_split(folder_meta(folder, classes=["cat", "dog"]), "test", root=str(tmp_path / "r"))
    # trained at the images' own size (config without image_size/resize): other sizes are other data
    with pytest.raises(data_spec.DataMismatch, match="16x16 pixels.*32x32"):
        data_spec.load_checkpoint_split(folder_meta(folder, shape=(3, 32, 32), config={}), "test",
                                       root=str(tmp_path / "r"))
    with pytest.raises(DatasetError, match="unknown split"):
        data_spec.load_checkpoint_split(folder_meta(folder), "holdout")
    # an imported model of another size: the images are fitted to it
    x, _ = data_spec.load_checkpoint_split(folder_meta(folder, shape=(1, 32, 32)), "test", root=str(tmp_path / "r"))
    assert x.shape == (4, 1, 32, 32)


# ----------------------------------------------------------------------------- defaults and messages

def test_defaults_come_from_trainconfig(tmp_path, monkeypatch):
    for fn, names in ((data_mod.load_dataset, ["data", "root", "val_size", "split_seed", "download", "test_fraction",
                                               "image_size", "resize"]), (data_mod.augment_batch, ["padding", "flip"])):
        params = inspect.signature(fn).parameters
        assert all(params[n].default is None for n in names), fn.__name__

    folder = write_image_folder(tmp_path / "d", n_train=40, with_test=False)

    @dataclasses.dataclass
    class Patched(TrainConfig):
        data: str = folder
        val_size: int = 7
        test_fraction: float = 0.5
        image_size: int = 8
        crop_padding: int = 0
        flip: bool = False
    monkeypatch.setattr(data_mod, "TrainConfig", Patched)
    s = data_mod.load_dataset(root=str(tmp_path / "r"))
    assert s["sizes"] == {"train": 13, "val": 7, "test": 20} and s["train"][0].shape[1:] == (3, 8, 8)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(data_mod.augment_batch(x, generator=torch.Generator().manual_seed(0)), x)
    monkeypatch.setattr(data_mod, "TrainConfig", TrainConfig)
    assert not torch.equal(data_mod.augment_batch(x, generator=torch.Generator().manual_seed(0)), x)


def test_missing_data_help_says_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "OFFLINE_CIFAR_ARCHIVE", str(tmp_path / "no-archive.tar.gz"))
    monkeypatch.setenv("CNNLIB_DATA_ROOT", str(tmp_path / "root"))
    folder = write_image_folder(tmp_path / "good", n_train=8, n_test=4)
    meta = folder_meta(folder, config={})
    (tmp_path / "empty").mkdir()
    other = write_image_folder(tmp_path / "other", n_train=4, n_test=4, classes=["cat", "dog"])
    big = write_image_folder(tmp_path / "big", n_train=4, n_test=4, size=24)
    cases = {str(tmp_path / "nope"): "does not exist",
             str(tmp_path / "empty"): "not an ImageFolder tree: it has no class sub-folders",
             other: "classes cat, dog, which do not match the checkpoint's blue, gray, green, red",
             big: "24x24 pixels, which does not match the checkpoint's 16x16",
             "mnist": "MNIST is not in " + str(tmp_path / "root")}
    for override, expect in cases.items():
        msg = data_spec.missing_data_help(meta, DatasetError("x"), override=override)
        assert expect in msg and one_sentence(msg), (override, msg)
        assert "../shared" not in msg and "tar -x" not in msg
    msg = data_spec.missing_data_help(meta, override="mnist")
    assert "`python -m cnnlib train --data mnist` downloads it" in msg and "CNNLIB_DATA_ROOT" in msg
    # the checkpoint's own CIFAR-10 folder is gone: say so, and how to get CIFAR-10
    cifar = {**folder_meta(tmp_path / "gone"), "classes": data_mod.CIFAR10_CLASSES, "input_shape": [3, 32, 32]}
    msg = data_spec.missing_data_help(cifar, DatasetError("x"))
    assert "gone does not exist" in msg and "--data cifar10" in msg and "tar" not in msg and one_sentence(msg)
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(b"")
    monkeypatch.setattr(data_mod, "OFFLINE_CIFAR_ARCHIVE", str(archive))
    msg = data_spec.missing_data_help(cifar, DatasetError("x"))
    assert f"tar -xzf {archive}" in msg and one_sentence(msg)
    # no dataset recorded at all
    msg = data_spec.missing_data_help({"classes": ["a"], "input_shape": [3, 8, 8]})
    assert "does not record which dataset" in msg and one_sentence(msg)


def test_missing_fashion_mnist_help_depends_on_debian_package(tmp_path, monkeypatch):
    meta = {"data": {"name": "fashion-mnist", "path": str(tmp_path / "gone")}, "classes": [], "input_shape": [1, 28, 28]}
    monkeypatch.setenv("CNNLIB_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(tmp_path / "not-installed"))
    msg = data_spec.missing_data_help(meta, DatasetError("x"))
    assert "apt-get install dataset-fashion-mnist" in msg and one_sentence(msg)
    debian = tmp_path / "debian"
    write_mnist_idx(debian, folder=".", gz=True)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", str(debian / "raw"))
    msg = data_spec.missing_data_help(meta, DatasetError("x"))
    assert "apt-get install dataset-fashion-mnist" not in msg and "installed" in msg and one_sentence(msg)
    os.remove(debian / "raw" / "t10k-labels-idx1-ubyte.gz")
    msg = data_spec.missing_data_help(meta, DatasetError("x"))
    assert "lacks t10k-labels-idx1-ubyte" in msg and one_sentence(msg)


def test_missing_dataset_message_is_actionable(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "OFFLINE_CIFAR_ARCHIVE", str(tmp_path / "absent.tar.gz"))
    msg = data_mod.missing_dataset_message("cifar10", "/data", "downloads are turned off")
    for part in ("`--data cifar10` downloads it", "--data PATH", "--data-root", "CNNLIB_DATA_ROOT"):
        assert part in msg
    assert "../shared" not in msg and "tar " not in msg
    monkeypatch.setattr(data_mod, "OFFLINE_CIFAR_ARCHIVE", data_mod.__file__)  # any file that exists
    assert f"tar -xzf {data_mod.__file__}" in data_mod.missing_dataset_message("cifar10", "/data", "offline")


def test_missing_dataset_cli_message(tmp_path):
    r = run_cli("train", "--data", "cifar10", "--data-root", str(tmp_path), "--no-download", "--out",
                str(tmp_path / "m.pt"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for option in ("--data PATH", "--data-root", "CNNLIB_DATA_ROOT", "download"):
        assert option in r.stderr


# ----------------------------------------------------------------------------- statistics and augmentation

def test_channel_stats_and_augment_are_exact(tmp_path):
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = data_mod.channel_stats(x, chunk=10)
    ref = x.double().div(255)
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).tolist()) and np.allclose(std, ref.std(dim=(0, 2, 3), unbiased=False).tolist())
    np.save(tmp_path / "x.npy", x.numpy())  # a read-only memmap gives the same numbers, chunk by chunk
    assert np.allclose(data_mod.channel_stats(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk=7)[0], mean)
    out = data_mod.augment_batch(x, padding=2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):  # each output is some 8x8 window of the padded image, maybe mirrored
        windows = [(padded[i, :, dy:dy + 8, dx:dx + 8], f) for dy in range(5) for dx in range(5) for f in (0, 1)]
        match = [f for w, f in windows if torch.equal(out[i], w.flip(2) if f else w)]
        assert match, f"image {i} is not a crop of its padded input"
        flips += min(match)
    assert 0 < flips < len(x)


def test_checkpoint_classes_in_another_order_or_a_superset_are_mapped_by_name(tmp_path):
    from conftest import write_image_folder
    folder = tmp_path / "colours"
    write_image_folder(folder, n_train=0, n_test=24, classes=["blue", "green", "red"], size=16, with_test=True)
    base = {"input_shape": [3, 16, 16], "data": {"name": "colours", "path": str(folder / "test")},
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    x0, y0 = data_spec.load_checkpoint_split(dict(base, classes=["blue", "green", "red"]), root=str(tmp_path / "r"))
    x1, y1 = data_spec.load_checkpoint_split(dict(base, classes=["red", "cat", "blue", "green"]),
                                            root=str(tmp_path / "r"))
    assert np.array_equal(np.asarray(x0), np.asarray(x1))
    assert np.array_equal(np.array(["blue", "green", "red"])[y0], np.array(["red", "cat", "blue", "green"])[y1])
    with pytest.raises(DatasetError, match="do not match"):
        data_spec.load_checkpoint_split(dict(base, classes=["red", "blue"]), root=str(tmp_path / "r"))


def test_a_damaged_cache_is_reported_and_rebuilt(tmp_path, caplog):
    from cnnlib.data import cache as datacache
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    y = np.arange(50) % 2
    datacache.cached_split(str(tmp_path), "k", (3, 8, 8), lambda a, b: x[a:b], y, ["a", "b"])
    path = os.path.join(datacache.cache_dir(str(tmp_path)), "k.x.npy")
    with open(path, "r+b") as f:                          # one flipped bit in the pixels, same length
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    calls = []
    with caplog.at_level("WARNING", logger="cnnlib"):
        got, _ = datacache.cached_split(str(tmp_path), "k", (3, 8, 8),
                                        lambda a, b: calls.append((a, b)) or x[a:b], y, ["a", "b"])
    assert calls and np.array_equal(np.asarray(got), x)   # rebuilt from the source, never used
    assert "damaged" in caplog.text and "checksum" in caplog.text
