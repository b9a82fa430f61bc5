"""Datasets as whole uint8 tensors, decoded once, cached on disk, augmented in batches.

    splits = load_dataset("cifar10")          # or "mnist", "fashion-mnist", or an ImageFolder path
    splits["train"] -> (x uint8 (N, C, H, W), y int64 (N,));  also "val", "test", "classes", ...

Each split is one uint8 tensor. The decoded arrays are cached under
`<data_root>/cnnlib-cache/` so a second run starts in well under 2 s.
Augmentation (random crop with zero padding + horizontal flip, as the
original tutorial) runs on whole batches as tensor ops on the training
device (`augment_batch`). Normalization statistics come from the training
split (`channel_stats`) and travel in the checkpoint.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .config import DATA_ROOT_ENV, DEFAULT_DATA_ROOT, TrainConfig
from .errors import DatasetError

NAMED = {"cifar10": "CIFAR10", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CACHE_VERSION = 1  # bump when the cached tensor layout changes
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # `apt-get install dataset-fashion-mnist`


def resolve_root(root: str | None) -> str:
    return os.path.expanduser(root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


def missing_dataset_message(name: str, root: str, reason: str) -> str:
    return (f"The {name} dataset is not available in {root} and could not be downloaded ({reason}). "
            f"Options: (1) run once with network access so torchvision can download it into the data root; "
            f"(2) pass --data PATH with an ImageFolder tree (train/<class>/*, optional test/<class>/*), "
            f"for example the offline copy: tar -xzf ../shared/datasets/cifar10-jpeg.tar.gz -C .cache/cifar10-jpeg "
            f"and --data .cache/cifar10-jpeg; (3) point the data root elsewhere with --data-root DIR or the "
            f"{DATA_ROOT_ENV} environment variable.")


# ----------------------------------------------------------------------------- torchvision datasets

def _load_torchvision(name: str, root: str, download: bool):
    """(x_train, y_train, x_test, y_test, classes) through torchvision.datasets."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, NAMED[name])
    if name == "fashion-mnist":
        _adopt_debian_fashion_mnist(os.path.join(root, "FashionMNIST", "raw"))
    out = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=False)
        except RuntimeError:  # not on disk (or corrupt): torchvision says "Dataset not found"
            if not download:
                raise DatasetError(missing_dataset_message(name, root, "downloads are turned off")) from None
            try:
                ds = cls(root, train=train, download=True)
            except Exception as e:  # noqa: BLE001 - URLError, socket errors, HTTP errors, checksum errors
                raise DatasetError(missing_dataset_message(name, root, f"{type(e).__name__}: {str(e)[:120]}")) from None
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N,H,W) or (N,H,W,C) -> (N,C,H,W)
        out += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return (*out, list(ds.classes))


def _adopt_debian_fashion_mnist(raw: str) -> None:
    """Unpack Debian's dataset-fashion-mnist .gz files into torchvision's raw/ folder (offline machines)."""
    import gzip
    import shutil

    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if all(os.path.isfile(os.path.join(raw, n)) for n in names):
        return
    if not all(os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz")) for n in names):
        return
    os.makedirs(raw, exist_ok=True)
    for n in names:
        tmp = os.path.join(raw, n + ".tmp")
        with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, n + ".gz"), "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, os.path.join(raw, n))


# ----------------------------------------------------------------------------- ImageFolder trees

def _scan_folder(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision's ImageFolder scan (classes sorted, files sorted)."""
    from torchvision.datasets.folder import make_dataset, find_classes

    classes, class_to_idx = find_classes(folder)
    samples = make_dataset(folder, class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    return classes, samples


def _decode_all(samples, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Decode files to one uint8 tensor (N, C, H, W), resizing where a file differs in size."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    x = np.empty((len(samples), size[1], size[0], channels), dtype=np.uint8)

    def work(i):
        try:
            with Image.open(samples[i][0]) as im:
                im = im.convert(mode)
                if im.size != size:
                    im = im.resize(size, Image.Resampling.BILINEAR)
                x[i] = np.asarray(im).reshape(size[1], size[0], channels)
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"cannot decode {samples[i][0]}: {e}") from None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(samples)), chunksize=512))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _load_folder(path: str, image_size: int):
    from PIL import Image

    train_dir = os.path.join(path, "train")
    if not os.path.isdir(train_dir):
        raise DatasetError(f"{path} is not an ImageFolder tree: it needs a train/ folder with one "
                           f"sub-folder per class (train/<class>/*.jpg), and optionally test/<class>/*")
    classes, train = _scan_folder(train_dir)
    if not train:
        raise DatasetError(f"{train_dir} holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    test = []
    test_dir = os.path.join(path, "test")
    if os.path.isdir(test_dir):
        test_classes, test = _scan_folder(test_dir)
        if test_classes != classes:
            raise DatasetError(f"{test_dir} has classes {test_classes}, but {train_dir} has {classes}")
    with Image.open(train[0][0]) as first:
        channels = 1 if first.mode in ("L", "1", "I;16", "I") else 3
        size = (image_size, image_size) if image_size else first.size
    x_train = _decode_all(train, channels, size)
    y_train = torch.tensor([t for _, t in train], dtype=torch.int64)
    x_test = _decode_all(test, channels, size) if test else None
    y_test = torch.tensor([t for _, t in test], dtype=torch.int64) if test else None
    return x_train, y_train, x_test, y_test, classes


def _folder_fingerprint(path: str, image_size: int) -> str:
    """Changes when files are added, removed or touched (scan is cheap: os.scandir)."""
    h = hashlib.sha1(f"{os.path.abspath(path)}|{image_size}|v{CACHE_VERSION}".encode())
    for sub in ("train", "test"):
        top = os.path.join(path, sub)
        if not os.path.isdir(top):
            continue
        for cls in sorted(os.listdir(top)):
            d = os.path.join(top, cls)
            if not os.path.isdir(d):
                continue
            entries = [(e.name, e.stat().st_size, int(e.stat().st_mtime)) for e in os.scandir(d)]
            h.update(repr((sub, cls, sorted(entries))).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- public API

def _cached(cache_file: str, build):
    if os.path.isfile(cache_file):
        try:
            blob = torch.load(cache_file, weights_only=True)
            if blob.get("version") == CACHE_VERSION:
                return blob
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
            pass
    x_train, y_train, x_test, y_test, classes = build()
    blob = {"version": CACHE_VERSION, "x_train": x_train, "y_train": y_train, "x_test": x_test,
            "y_test": y_test, "classes": classes}
    try:
        from .checkpoint import atomic_torch_save
        atomic_torch_save(blob, cache_file)
    except OSError:
        pass  # read-only data root: run without the cache
    return blob


def _split(n: int, sizes: list[int], seed: int) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm, sizes))


def load_dataset(data: str = "cifar10", root: str | None = None, val_size: int = 5000, split_seed: int = 0,
                 download: bool = True, test_fraction: float = 0.1, image_size: int = 0) -> dict:
    """Decoded splits of a named dataset or an ImageFolder path.

    Returns {"train": (x, y), "val": (x, y), "test": (x, y), "classes": [..], "name": str,
             "path": str, "split_seed": int, "sizes": {...}}; x uint8 (N, C, H, W), y int64 (N,).
    """
    root = resolve_root(root)
    key = data.lower()
    if key in NAMED:
        name, path = key, root
        cache_file = os.path.join(root, "cnnlib-cache", f"{key}-v{CACHE_VERSION}.pt")
        blob = _cached(cache_file, lambda: _load_torchvision(key, root, download))
    elif os.path.isdir(data):
        name, path = os.path.basename(os.path.normpath(data)), data
        cache_file = os.path.join(root, "cnnlib-cache", f"folder-{_folder_fingerprint(data, image_size)}.pt")
        blob = _cached(cache_file, lambda: _load_folder(data, image_size))
    else:
        raise DatasetError(f"--data {data!r} is neither a known dataset ({', '.join(NAMED)}) nor an existing "
                           f"folder. " + missing_dataset_message(data, root, "no such folder"))
    x, y = blob["x_train"], blob["y_train"]
    if blob["x_test"] is None:  # ImageFolder without test/: carve a test split, then validation
        n_test = max(1, int(round(len(x) * test_fraction)))
        test_idx, x_idx = _split(len(x), [n_test, len(x) - n_test], split_seed + 1)
        x_test, y_test, x, y = x[test_idx], y[test_idx], x[x_idx], y[x_idx]
    else:
        x_test, y_test = blob["x_test"], blob["y_test"]
    val_size = min(val_size, max(len(x) // 10, 1)) if val_size >= len(x) else val_size
    val_idx, train_idx = _split(len(x), [val_size, len(x) - val_size], split_seed)
    out = {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": (x_test, y_test),
           "classes": list(blob["classes"]), "name": name, "path": path, "split_seed": split_seed}
    out["sizes"] = {s: len(out[s][1]) for s in ("train", "val", "test")}
    return out


def load_checkpoint_split(meta: dict, split: str = "test", data: str | None = None,
                          root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels of `split` for a checkpoint's dataset, without downloading.

    `data` overrides the checkpoint's own dataset name/path. Raises DatasetError with a
    how-to-get-it message when the dataset is not on disk.
    """
    if split not in ("train", "val", "test"):
        raise DatasetError(f"unknown split {split!r}; use train, val or test")
    info = meta.get("data", {})
    cfg = TrainConfig.from_dict(meta.get("config", {}))  # the run's settings; TrainConfig fills any missing
    source = data or (info.get("name") if info.get("name") in NAMED else info.get("path")) or cfg.data
    splits = load_dataset(source, root=root or (info.get("path") if source in NAMED else None),
                          val_size=cfg.val_size, split_seed=info.get("split_seed", cfg.split_seed),
                          download=False, test_fraction=cfg.test_fraction, image_size=cfg.image_size)
    x, y = splits[split]
    c, h, w = meta["input_shape"]
    if tuple(x.shape[1:]) != (c, h, w):
        raise DatasetError(f"the {source} images are {tuple(x.shape[1:])}, but the model expects {(c, h, w)}")
    if splits["classes"] != list(meta["classes"]):
        raise DatasetError(f"the {source} classes {splits['classes']} differ from the checkpoint's {meta['classes']}")
    return x, y


def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units, in float64."""
    c = x.shape[1]
    s, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].to(torch.float64).div_(255.0)
        s += b.sum(dim=(0, 2, 3))
        s2 += (b * b).sum(dim=(0, 2, 3))
        n += b.numel() // c
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def augment_batch(x: torch.Tensor, padding: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding + random horizontal flip, per image, as batched tensor ops.

    x: (B, C, H, W) any dtype, on any device -> same shape. Equivalent to torchvision's
    RandomCrop(H, padding=padding) and RandomHorizontalFlip() applied to each image.
    """
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
