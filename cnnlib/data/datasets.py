"""Datasets as uint8 arrays: decoded once per split, memory-mapped from a disk cache, augmented in batches.

    splits = load_dataset("cifar10")           # or "mnist", "fashion-mnist", "stl10", or an ImageFolder path
    splits["train"] -> (x uint8 (N, C, H, W), y int64 (N,)) torch tensors; also "val", "test", "classes", ...
    (a checkpoint's own split, without downloading: cnnlib.data.spec.load_checkpoint_split)

Every optional argument defaults to None, meaning TrainConfig's default (config.py is the only place a
default lives). ImageFolder trees are `train/<class>/*` (+ optional `test/<class>/*`; without it a test
split is carved from train/) or `<class>/*` directly inside (all of it is the test split). Their images
come at any size: each is decoded with cnnlib.data.images and fitted the torchvision way (`preprocessing_for`).
Decoded splits live in `<data root>/cnnlib-cache/` as memory-mapped files (cnnlib/data/cache.py), so memory
stays flat however large the set. Augmentation runs on whole batches as tensor ops (`augment_batch`);
normalization statistics come from the training split (`channel_stats`) and travel in the checkpoint.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from cnnlib.config import DATA_ROOT_ENV, DEFAULT_DATA_ROOT, TrainConfig
from cnnlib.data.cache import CACHE_VERSION, cached_split, folder_layout, preprocessing_for, read_split
from cnnlib.data.cache import decode_files as _decode
from cnnlib.data.cache import first_shape as _first_shape
from cnnlib.data.cache import scan as _scan
from cnnlib.data.cache import unreadable as _unreadable
from cnnlib.errors import DatasetError

__all__ = ["NAMED", "OFFLINE_CIFAR_ARCHIVE", "augment_batch", "channel_stats", "load_dataset",
           "missing_dataset_message", "resolve_path", "resolve_root", "torchvision_split"]

NAMED = {"cifar10": "CIFAR10", "mnist": "MNIST", "fashion-mnist": "FashionMNIST",  # --data name -> torchvision
         "stl10": "STL10"}
TITLES = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "stl10": "STL-10"}
SPLITS = ("train", "val", "test")
OFFLINE_CIFAR_ARCHIVE = "../shared/datasets/cifar10-jpeg.tar.gz"  # offline CIFAR-10 JPEGs, relative to the repo root
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"        # `apt-get install dataset-fashion-mnist`
FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_root(root: str | None = None) -> str:
    """The data root: `root`, else TrainConfig's data_root, else $CNNLIB_DATA_ROOT, else ~/.cache/cnnlib."""
    return os.path.abspath(os.path.expanduser(root or TrainConfig().data_root or os.environ.get(DATA_ROOT_ENV)
                                              or DEFAULT_DATA_ROOT))


def resolve_path(path: str) -> str:
    """A user's or a checkpoint's folder -> absolute: relative to the working directory when it exists
    there, else to the repository root (checkpoints store paths such as .cache/cifar10-jpeg)."""
    p = os.path.expanduser(str(path).strip())
    if os.path.isabs(p) or os.path.exists(p):
        return os.path.abspath(p)
    return os.path.join(REPO_ROOT, p)


def offline_cifar_archive() -> str | None:
    """Absolute path of OFFLINE_CIFAR_ARCHIVE when that file exists on this machine, else None."""
    path = OFFLINE_CIFAR_ARCHIVE if os.path.isabs(OFFLINE_CIFAR_ARCHIVE) else os.path.join(REPO_ROOT, OFFLINE_CIFAR_ARCHIVE)
    return os.path.normpath(path) if os.path.isfile(path) else None


# ----------------------------------------------------------------------------- messages

def _recipe(name: str, dashboard: bool = False) -> str:
    """Ways to get a named dataset, as one clause (no full stop)."""
    get = f"`python -m cnnlib train --data {name}`" if dashboard else f"`--data {name}`"
    ways = [f"with network access, {get} downloads it into the data root"
            + (" (a 2.6 GB archive; its 100,000 unlabeled images are not used)" if name == "stl10" else "")]
    if name == "fashion-mnist" and not os.path.isdir(DEBIAN_FASHION_MNIST):
        ways.append("offline, `apt-get install dataset-fashion-mnist` installs it and cnnlib unpacks it by itself")
    archive = offline_cifar_archive() if name == "cifar10" else None
    if archive:
        use = "type .cache/cifar10-jpeg into Data folder" if dashboard else "use `--data .cache/cifar10-jpeg`"
        ways.append(f"offline, unpack the JPEG copy with `mkdir -p .cache/cifar10-jpeg && tar -xzf {archive} "
                    f"-C .cache/cifar10-jpeg` and {use}")
    return "; ".join(ways)


def missing_dataset_message(name: str, root: str, reason: str) -> str:
    """What the CLI prints when a named dataset is not on disk (exit status 2)."""
    return (f"The {TITLES.get(name, name)} dataset is not in {root} and could not be downloaded ({reason}). "
            f"To get it: {_recipe(name)}; or pass --data PATH with an ImageFolder tree "
            f"(train/<class>/*.jpg, optional test/<class>/*); or, if a copy already exists elsewhere, point "
            f"the data root at it with --data-root DIR or ${DATA_ROOT_ENV} (the dashboard's Data folder field "
            f"takes a folder too).")


def _sentence(text: str) -> str:
    text = " ".join(str(text).split()).rstrip(". ")
    return text[:1].upper() + text[1:] + "."


def _short(names) -> str:
    names = list(names)
    return ", ".join(map(str, names[:6])) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")


# ----------------------------------------------------------------------------- torchvision datasets

def torchvision_split(name: str, root: str, which: str, download: bool = False):
    """torchvision's dataset object for a name in NAMED and `which` ("train" or "test"); RuntimeError when it is
    not on disk (and not downloaded). STL-10 by its split name, without its unlabeled 100,000 images (neither
    read nor checked, so that 2.7 GB file may be absent)."""
    import torchvision.datasets as tvd
    cls = getattr(tvd, NAMED[name])
    if name == "stl10":
        cls = type("STL10Labeled", (cls,), {"train_list": cls.train_list[:2]})
        return cls(root, split=which, download=download)
    return cls(root, train=which == "train", download=download)


def _named_split(name: str, root: str, which: str, download: bool, mode: str = "r"):
    """(x uint8 (N, C, H, W) memmap, y int64 (N,), classes) of torchvision's train or test set."""
    key = f"{name}-v{CACHE_VERSION}-{which}"
    hit = read_split(root, key, mode)
    if hit is not None:
        return hit
    if name == "fashion-mnist":
        _adopt_debian_fashion_mnist(os.path.join(root, "FashionMNIST", "raw"))
    try:
        ds = torchvision_split(name, root, which, download=False)
    except RuntimeError:  # not on disk (or corrupt): torchvision says "Dataset not found"
        if not download:
            raise DatasetError(missing_dataset_message(name, root, "downloads are turned off")) from None
        try:
            ds = torchvision_split(name, root, which, download=True)
        except Exception as e:  # noqa: BLE001 - URLError, socket errors, HTTP errors, checksum errors
            raise DatasetError(missing_dataset_message(name, root, f"{type(e).__name__}: {str(e)[:120]}")) from None
    x = np.asarray(ds.data)
    x = x[:, None] if x.ndim == 3 else x if name == "stl10" else x.transpose(0, 3, 1, 2)   # -> (N, C, H, W)
    y = np.asarray(getattr(ds, "targets", getattr(ds, "labels", None)), np.int64)
    classes = list(getattr(ds, "classes", None) or STL10_CLASSES)   # STL-10 reads them from class_names.txt
    x, y = cached_split(root, key, x.shape[1:], lambda a, b: np.ascontiguousarray(x[a:b]), y, classes, mode)
    return x, y, classes


def _adopt_debian_fashion_mnist(raw: str) -> None:
    """Unpack Debian's dataset-fashion-mnist .gz files into torchvision's raw/ folder (offline machines)."""
    import gzip
    import shutil

    names = FASHION_FILES
    if all(os.path.isfile(os.path.join(raw, n)) for n in names) or \
            not all(os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz")) for n in names):
        return
    try:
        os.makedirs(raw, exist_ok=True)
        for n in names:
            tmp = os.path.join(raw, n + ".tmp")
            with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz"), "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, os.path.join(raw, n))
    except OSError as e:
        raise DatasetError(f"Debian's Fashion-MNIST could not be unpacked into {raw} ({e.strerror or e}); "
                           f"choose a writable data root with --data-root DIR or ${DATA_ROOT_ENV}") from None


# ----------------------------------------------------------------------------- splits

def _split(n: int, sizes: list[int], seed: int) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm, sizes))


def _carve(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(test indices, rest) for an ImageFolder without test/."""
    n_test = max(1, round(n * test_fraction))
    return tuple(_split(n, [n_test, n - n_test], seed + 1))


def _val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, train indices) of a training split of n images."""
    val_size = 0 if n == 0 else min(val_size, max(n // 10, 1)) if val_size >= n else val_size
    return tuple(_split(n, [val_size, n - val_size], seed))


def _empty(shape) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((0, *shape), np.uint8), np.empty(0, np.int64)


def load_dataset(data: str | None = None, root: str | None = None, val_size: int | None = None,
                 split_seed: int | None = None, download: bool | None = None, test_fraction: float | None = None,
                 image_size: int | None = None, resize: int | None = None) -> dict:
    """Decoded splits of a named dataset or an ImageFolder path (None: TrainConfig's default).

    Returns {"train": (x, y), "val": (x, y), "test": (x, y), "classes": [..], "name": str, "path": str,
             "split_seed": int, "sizes": {...}, "preprocessing": {...}}; x uint8 torch (N, C, H, W), y int64
    torch (N,). Train and val are gathered copies; test is the memory-mapped cache itself (copy-on-write).
    "preprocessing" is images.fit_image's dict for the folder's images ({} for named datasets): what a
    checkpoint stores so that uploads and load_checkpoint_split see the pixels training saw.
    """
    cfg = TrainConfig()   # read at call time: the one place defaults live
    data = cfg.data if data is None else data
    val_size = cfg.val_size if val_size is None else val_size
    split_seed = cfg.split_seed if split_seed is None else split_seed
    download = cfg.download if download is None else download
    test_fraction = cfg.test_fraction if test_fraction is None else test_fraction
    image_size = cfg.image_size if image_size is None else image_size
    resize = cfg.resize if resize is None else resize
    root = resolve_root(root)
    key = str(data).lower()
    if key in NAMED:
        name, path, pre = key, root, {}
        x, y, classes = _named_split(key, root, "train", download, "c")
        x_test, y_test, _ = _named_split(key, root, "test", download, "c")
        rows = np.arange(len(y))
    elif os.path.isdir(data):
        name, path = os.path.basename(os.path.normpath(data)), data
        layout = folder_layout(data)
        scans = {s: _scan(d) for s, d in layout.items() if d}
        if layout["train"] and layout["test"] and scans["test"][0] != scans["train"][0]:
            raise DatasetError(f"{layout['test']} has the classes {_short(scans['test'][0])}, but "
                               f"{layout['train']} has {_short(scans['train'][0])}")
        classes = scans.get("train", scans.get("test"))[0]
        shape = _first_shape(layout["train"] or layout["test"], resize, image_size)
        if not resize and not image_size and shape[1] == shape[2]:
            image_size = shape[1]   # a square first image: its side, so a checkpoint's input_shape says the same
        pre = preprocessing_for(resize, image_size)
        x, y = (_decode(scans["train"][1], shape, pre, root, classes, "c") if layout["train"] else _empty(shape))
        rows = _rows(scans["train"][1]) if layout["train"] else np.arange(0)
        if layout["test"]:
            x_test, y_test = _decode(scans["test"][1], shape, pre, root, classes, "c")
        else:  # train/ only: carve a test split, then validation from the rest
            test_idx, rest = (i.numpy() for i in _carve(len(rows), test_fraction, split_seed))
            test_rows, rows = rows[test_idx], rows[rest]
            test_rows = test_rows[test_rows >= 0]
            x_test, y_test = x[test_rows], y[test_rows]
    else:
        raise DatasetError(f"--data {data!r} is neither a known dataset ({', '.join(NAMED)}) nor an existing "
                           f"folder: pass one of those names (with network access `--data cifar10` downloads "
                           f"CIFAR-10 into the data root, --data-root DIR or ${DATA_ROOT_ENV}) or the path of an "
                           f"ImageFolder tree (train/<class>/*.jpg, optional test/<class>/*)")
    # carved over every file (unreadable ones included, as cnnlib.data.spec.folder_split does), then mapped to
    # the decoded rows; -1: a skipped file
    val_idx, train_idx = (rows[i.numpy()] for i in _val(len(rows), val_size, split_seed))
    val_idx, train_idx = val_idx[val_idx >= 0], train_idx[train_idx >= 0]
    t = torch.from_numpy
    out = {"train": (t(x[train_idx]), t(y[train_idx])), "val": (t(x[val_idx]), t(y[val_idx])),
           "test": (t(x_test), t(np.asarray(y_test))), "classes": list(classes), "name": name, "path": path,
           "split_seed": split_seed, "preprocessing": pre}
    out["sizes"] = {s: len(out[s][1]) for s in SPLITS}
    return out


def _rows(samples) -> np.ndarray:
    """For each file of `samples`, its row in the decoded arrays (-1: skipped as unreadable)."""
    bad = set(_unreadable([p for p, _ in samples]))
    keep = np.array([p not in bad for p, _ in samples], bool)
    return np.where(keep, np.cumsum(keep) - 1, -1)


# ----------------------------------------------------------------------------- statistics and augmentation

def channel_stats(x, chunk: int | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) (tensor, array or memmap), in [0, 1] units,
    in float64; reads `chunk` images at a time (None: about 32 MB of pixels, datacache.chunks) and lets a
    memmap's used rows go, so memory does not grow with N or the image size."""
    from cnnlib.data.cache import chunks, release_rows
    c = x.shape[1]
    s, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    steps = chunks(len(x), x.shape[1:]) if chunk is None else [(a, a + chunk) for a in range(0, len(x), chunk)]
    for i, stop in steps:
        b = x[i:stop]
        b = (b if isinstance(b, torch.Tensor) else torch.from_numpy(np.array(b))).to(torch.float64).div_(255.0)
        release_rows(x, i, stop)
        s += b.sum(dim=(0, 2, 3))
        s2 += (b * b).sum(dim=(0, 2, 3))
        n += b.numel() // c
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def augment_batch(x: torch.Tensor, padding: int | None = None, flip: bool | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding + random horizontal flip, per image, as batched tensor ops.

    x: (B, C, H, W) any dtype, on any device -> same shape. Equivalent to torchvision's
    RandomCrop(H, padding=padding) and RandomHorizontalFlip() applied to each image. None: TrainConfig's
    crop_padding / flip.
    """
    cfg = TrainConfig()
    padding = cfg.crop_padding if padding is None else padding
    flip = cfg.flip if flip is None else flip
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p), zeros
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bi, ci, rows, cols]  # (B, C, H, W) gather of each image's window
    if flip:
        mask = (torch.rand(b, generator=generator, device="cpu") < 0.5).to(dev)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    return x
