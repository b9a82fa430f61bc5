"""The data a checkpoint reads: where it is, whether a typed folder fits, and what to say when it does not.

    spec = checkpoint_data_spec(meta, override="")     # DataSpec: source, data root, split seed, sizes
    x, y = load_checkpoint_split(meta, "test")          # numpy; decodes only that split, never downloads
    folder_split(spec, "test")                          # [(file, label)] in the same order
    skipped_files(meta, "test")                         # the split's files skipped as unreadable
    missing_data_help(meta, error, override)            # ONE sentence for the dashboard

A checkpoint records its dataset (a torchvision name or an ImageFolder path) and its split seed; the user may
type another folder (`override`). A folder with other classes or another image size raises DataMismatch.
Files that cannot be decoded are skipped (cnnlib.data.cache): folder_split leaves them out too, so its
files stay aligned with the rows of load_checkpoint_split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from cnnlib.config import DATA_ROOT_ENV, TrainConfig
from cnnlib.data.cache import first_size, folder_layout, preprocessing_for, unreadable
from cnnlib.data.cache import classes_of as _classes
from cnnlib.data.cache import decode_files as _decode
from cnnlib.data.cache import scan as _scan
from cnnlib.data import datasets
from cnnlib.data.datasets import (CIFAR10_CLASSES, FASHION_FILES, NAMED, SPLITS, TITLES,
                                  _carve, _empty, _named_split, _recipe, _sentence, _short, _val,
                                  offline_cifar_archive, resolve_path, resolve_root)
from cnnlib.errors import DatasetError

__all__ = ["DataMismatch", "DataSpec", "checkpoint_data_spec", "folder_split", "load_checkpoint_split",
           "missing_data_help", "skipped_files"]

class DataMismatch(DatasetError):
    """The data are there, but not the checkpoint's: other classes or another image size."""


def missing_data_help(meta: dict, error: Exception | None = None, override: str = "") -> str:
    """ONE sentence for the dashboard: why this checkpoint's test images are not available and what to do.

    `override`: what the user typed into Data folder (a folder or a dataset name); `error`: what loading raised."""
    try:
        spec = checkpoint_data_spec(meta, override)
    except DatasetError as e:
        return _sentence(str(e))
    if spec.source in NAMED:
        return _sentence(_named_help(spec, error))
    try:
        _check_folder(spec, meta)
    except DatasetError as e:
        tip = "" if override else "; type a folder with the same classes into Data folder"
        if not override and list(meta.get("classes") or []) == CIFAR10_CLASSES and not os.path.exists(spec.source):
            archive = offline_cifar_archive()
            tip = ("; it is CIFAR-10: " + (f"unpack the offline copy there with `mkdir -p {spec.source} && tar -xzf "
                                           f"{archive} -C {spec.source}`, or " if archive else "")
                   + "type cifar10 into Data folder once `python -m cnnlib train --data cifar10` has downloaded it "
                     "(needs network access)" + ("" if archive else ", or type a folder holding a copy"))
        return _sentence(str(e) + tip)
    return _sentence(f"reading the images in {spec.source} failed: {error}" if error
                     else f"the images in {spec.source} could not be loaded")


def _named_help(spec: DataSpec, error: Exception | None) -> str:
    if isinstance(error, DataMismatch):
        return str(error)
    if spec.source == "fashion-mnist" and os.path.isdir(datasets.DEBIAN_FASHION_MNIST):   # installed: something else
        if isinstance(error, DatasetError) and str(error).startswith("Debian's"):
            return str(error)
        lacking = [n for n in FASHION_FILES if not os.path.isfile(os.path.join(datasets.DEBIAN_FASHION_MNIST, n + ".gz"))]
        if lacking:
            return (f"Debian's Fashion-MNIST folder {datasets.DEBIAN_FASHION_MNIST} lacks {', '.join(lacking)}: reinstall it "
                    f"with `apt-get install --reinstall dataset-fashion-mnist`")
        raw = os.path.join(spec.root, "FashionMNIST", "raw")
        if all(os.path.isfile(os.path.join(raw, n)) for n in FASHION_FILES):
            return (f"Debian's Fashion-MNIST is installed, but the copy unpacked in {raw} cannot be read: delete that "
                    f"folder and reload the page, and cnnlib unpacks it again")
        return (f"Debian's Fashion-MNIST is installed but not unpacked into {raw} yet: reload the page to unpack it "
                f"(the data root must be writable: choose one with ${DATA_ROOT_ENV})")
    return (f"{TITLES[spec.source]} is not in {spec.root} and the dashboard never downloads it: "
            f"{_recipe(spec.source, True)}; or start the dashboard with ${DATA_ROOT_ENV} pointing at a data root "
            f"that holds it, or type an ImageFolder copy into Data folder")


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides a checkpoint's pixels (the dashboard's cache key too)."""
    source: str          # a name in NAMED, or an absolute ImageFolder path
    root: str            # data root: where named datasets live and decoded caches go
    split_seed: int
    val_size: int
    test_fraction: float
    image_size: int      # ImageFolder: centre crop (0: see preprocessing_for)
    resize: int          # ImageFolder: shorter side first (0: see preprocessing_for)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_data_spec(meta: dict, override: str = "", root: str | None = None) -> DataSpec:
    """Where a checkpoint's data is and how it was split: meta["data"] and meta["config"] (missing fields:
    TrainConfig's defaults). `override` is a dataset name or folder typed by the user; `root` a data root."""
    info, raw_cfg = meta.get("data") or {}, meta.get("config") or {}
    cfg = TrainConfig.from_dict(raw_cfg)
    named_root = None
    source = (override or "").strip() or (info.get("name") if info.get("name") in NAMED else "") \
        or info.get("path") or raw_cfg.get("data") or ""
    if not source:
        raise DatasetError("this checkpoint does not record which dataset it was trained on (no data name or "
                           "path in it): pass --data NAME|PATH, or type a folder into the dashboard's Data folder")
    if source.lower() in NAMED:
        source = source.lower()
        recorded = info.get("path") if info.get("name") == source else None
        if not root and recorded and os.path.isdir(resolve_path(recorded)):
            named_root = resolve_path(recorded)   # the data root the checkpoint was trained with
    else:
        source = resolve_path(source)
    pre = meta.get("preprocessing") or {}
    _, h, w = (int(s) for s in meta.get("input_shape") or (0, 0, 0))
    if source in NAMED:
        image_size = resize = 0
    elif pre:
        image_size, resize = int(pre.get("crop") or 0), int(pre.get("resize") or 0)
    else:
        image_size, resize = (h if h == w else 0), 0
    seed = info.get("split_seed")
    return DataSpec(source, named_root or resolve_root(root), int(cfg.split_seed if seed is None else seed),
                    int(cfg.val_size), float(cfg.test_fraction), image_size, resize)


def _check_folder(spec: DataSpec, meta: dict) -> tuple[dict, list[str]]:
    """(layout, classes) of a checkpoint's ImageFolder, or a DatasetError that says what does not match."""
    layout = folder_layout(spec.source)
    first = layout["train"] or layout["test"]
    classes = _classes(first)
    if layout["train"] and layout["test"] and _classes(layout["test"]) != classes:
        raise DatasetError(f"{layout['test']} has the classes {_short(_classes(layout['test']))}, but "
                           f"{layout['train']} has {_short(classes)}")
    want = list(meta.get("classes") or [])
    if want and not set(classes) <= set(want):      # same names in another order, or a subset: re-mapped by name
        raise DataMismatch(f"{spec.source} has the classes {_short(classes)}, which do not match the "
                           f"checkpoint's {_short(want)}")
    cfg = TrainConfig.from_dict(meta.get("config") or {})
    if meta.get("config") is not None and not meta.get("preprocessing") and not cfg.image_size and not cfg.resize:
        # trained at the images' own size (that of the first training image): another size is other data
        size = first_size(first)
        _, h, w = meta["input_shape"]
        if size != (w, h):
            raise DataMismatch(f"the images in {spec.source} are {size[0]}x{size[1]} pixels, which does not match "
                               f"the checkpoint's {w}x{h} (it was trained on images at their own size)")
    return layout, classes


def folder_split(spec: DataSpec, split: str, layout: dict | None = None) -> list[tuple[str, int]] | None:
    """(file, label) of an ImageFolder split in the order load_checkpoint_split returns it: test/ when the
    folder has one, else the test split carved from train/ with the split seed; val and train are the
    validation split and the rest of train/ (after carving). Files that cannot be decoded are left out, as
    load_checkpoint_split skips them. None: a flat folder has no train or val."""
    samples = _all_files(spec, split, layout)
    if samples is None:
        return None
    bad = set(unreadable([p for p, _ in samples]))
    return [s for s in samples if s[0] not in bad] if bad else samples


def skipped_files(meta: dict, split: str = "test", data: str | None = None, root: str | None = None) -> list[str]:
    """The files of a checkpoint's ImageFolder split that load_checkpoint_split skips because they cannot be
    decoded (damaged, not images), in order; [] for a named dataset or when the folder cannot be read."""
    try:
        spec = checkpoint_data_spec(meta, data or "", root)
        if spec.source in NAMED:
            return []
        samples = _all_files(spec, split)
    except DatasetError:
        return []
    return unreadable([p for p, _ in samples or []])


def _all_files(spec: DataSpec, split: str, layout: dict | None = None) -> list[tuple[str, int]] | None:
    """folder_split's (file, label) list with the unreadable files still in: the split is carved over every
    file, so that a damaged file changes no other image's split."""
    layout = layout or folder_layout(spec.source)
    if split == "test" and layout["test"]:
        return _scan(layout["test"])[1]
    if not layout["train"]:
        return None
    samples = _scan(layout["train"])[1]
    idx = torch.arange(len(samples))
    if not layout["test"]:
        test_idx, idx = _carve(len(samples), spec.test_fraction, spec.split_seed)
        idx = test_idx if split == "test" else idx
    if split != "test":
        val_idx, train_idx = _val(len(idx), spec.val_size, spec.split_seed)
        idx = idx[val_idx if split == "val" else train_idx]
    return [samples[i] for i in idx.tolist()]


def load_checkpoint_split(meta: dict, split: str = "test", data: str | None = None,
                          root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, C, H, W), y int64 (N,)) numpy of `split` for a checkpoint; x may be a read-only memmap.

    Decodes only that split (cached under the data root), never downloads; `data` overrides the checkpoint's
    dataset name or folder. Raises DatasetError with one sentence saying what is missing or does not match.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use train, val or test")
    spec = checkpoint_data_spec(meta, data or "", root)
    shape = tuple(int(s) for s in meta["input_shape"])
    if spec.source in NAMED:
        x, y, classes = _named_split(spec.source, spec.root, "test" if split == "test" else "train", False)
        if tuple(x.shape[1:]) != shape:
            raise DataMismatch(f"the {TITLES[spec.source]} images are {'x'.join(map(str, x.shape[1:]))} (C x H x W), "
                               f"which does not match the checkpoint's {'x'.join(map(str, shape))}")
        if split != "test":
            val_idx, train_idx = _val(len(y), spec.val_size, spec.split_seed)
            idx = (val_idx if split == "val" else train_idx).numpy()
            x, y = x[idx], y[idx]
    else:
        layout, classes = _check_folder(spec, meta)
        samples = _all_files(spec, split, layout)    # decoding skips the unreadable ones
        if samples is None:
            return _empty(shape)   # a flat folder is all test: no train or val images
        x, y = _decode(samples, shape, preprocessing_for(spec.resize, spec.image_size), spec.root, classes)
    want = list(meta["classes"])
    if list(classes) != want:
        if spec.source in NAMED or not set(classes) <= set(want):
            raise DataMismatch(f"the {TITLES.get(spec.source, spec.source)} classes {_short(classes)} do not match "
                               f"the checkpoint's {_short(want)}")
        y = np.array([want.index(c) for c in classes], np.int64)[np.asarray(y)]   # folder label -> checkpoint label
    return x, y
