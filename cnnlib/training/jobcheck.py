"""Checks on a training run's settings before cnnlib.training.jobs starts a process for it.

A dashboard form hands over loosely typed values; everything is coerced to TrainConfig's field types and
checked here, so a mistake is one CNNLibError sentence (DatasetError for data) on the page instead of a
process that starts and dies: an unknown field, a wrong type, an out-of-range value, an unknown
recipe/model/optimizer/device, a missing weights file, data that is not on disk and cannot be downloaded,
an unusable run name, or a resume with other settings than the interrupted run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import re
import socket
from urllib.parse import urlparse

from cnnlib.config import CHOICES, RECIPES, TrainConfig, make_config
from cnnlib.errors import CNNLibError, DatasetError
from cnnlib.training.joblog import load_cached

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# TrainConfig fields a start() may not set: the job decides them.
_FIXED = {"out": "the checkpoint path comes from the run's name ({folder}/NAME.pt), so do not pass out"}
# Value rules for TrainConfig fields, checked before anything starts: (test, what the value must be).
_RULES = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "eval_batch_size": (lambda v: v >= 1, "at least 1"),
    "val_size": (lambda v: v >= 0, "0 or more"),
    "test_fraction": (lambda v: 0 < v < 1, "between 0 and 1"),
    "split_seed": (lambda v: v >= 0, "0 or more"),
    "seed": (lambda v: v >= 0, "0 or more"),
    "image_size": (lambda v: v >= 0, "0 or more"),
    "resize": (lambda v: v >= 0, "0 or more"),
    "width": (lambda v: v >= 0, "0 or more"),
    "threads": (lambda v: v >= 0, "0 or more"),
    "crop_padding": (lambda v: v >= 0, "0 or more"),
    "dropout": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "lr": (lambda v: v > 0, "above 0"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "momentum": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "warmup": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "label_smoothing": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "grad_clip": (lambda v: v >= 0, "0 or more"),
}
_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text"}


def check_name(name) -> str:
    """The run's name without a trailing ".pt", if it can be a plain checkpoint file name."""
    name = str(name).strip()
    name = name.removesuffix(".pt")
    if not NAME_RE.match(name) or name.endswith(".resume"):
        raise CNNLibError(f"{name!r} is not a usable run name; use letters, digits, '_', '-' and '.' "
                          f"(it becomes the checkpoint's file name)")
    return name


def check_settings(settings: dict, folder: str, out: str, cwd: str, can_download) -> tuple[TrainConfig, dict]:
    """(the resolved TrainConfig, the settings as coerced, with their recipe) or CNNLibError.

    `can_download(dataset)` says whether a missing named dataset could be fetched (see check_data)."""
    kinds = {f.name: (f.type if isinstance(f.type, str) else f.type.__name__)
             for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in settings if k not in kinds)
    if unknown:
        raise CNNLibError(f"unknown training setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"the settings are the fields of cnnlib.config.TrainConfig")
    for key, why in _FIXED.items():
        if key in settings:
            raise CNNLibError(why.format(folder=folder))
    clean = {k: _coerce(k, kinds[k], v) for k, v in settings.items() if v is not None}
    recipe = clean.pop("recipe", "default")
    if recipe not in RECIPES:
        raise CNNLibError(f"unknown recipe {recipe!r}; known recipes: {', '.join(sorted(RECIPES))}")
    cfg = make_config(recipe, **{**clean, "out": out})
    _check_values(cfg)
    check_data(cfg, cwd, can_download)
    return cfg, {**clean, "recipe": recipe}


def resume_state(folder: str, name: str) -> str:
    """The path of run `name`'s resume state, or CNNLibError when there is no interrupted run to resume."""
    path = os.path.join(folder, name + ".pt.resume.pt")
    if not os.path.exists(path):
        raise CNNLibError(f"{name} has no interrupted run to resume ({os.path.basename(path)} is not in "
                          f"{folder})")
    return path


def check_resume(cfg: TrainConfig, folder: str, name: str) -> None:
    """A resume must repeat the interrupted run's settings; only TrainConfig.RUN_CONTROL fields may change."""
    saved = TrainConfig.from_dict(load_cached(resume_state(folder, name)).get("config") or {})
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TrainConfig.RUN_CONTROL and f.name != "out" \
                and getattr(saved, f.name) != getattr(cfg, f.name):
            raise CNNLibError(f"{f.name} was {getattr(saved, f.name)!r} in the interrupted run but is "
                              f"{getattr(cfg, f.name)!r} now; resume with the same settings")


def _coerce(key: str, kind: str, value):
    bad = CNNLibError(f"{key} must be {_KIND_WORDS.get(kind, kind)}, not {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool) and kind in ("int", "float"):
        raise bad
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise bad
    if kind == "float":
        if isinstance(value, numbers.Real) and math.isfinite(float(value)):
            return float(value)
        raise bad
    if kind == "str":
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value
        raise bad
    return value


def _check_values(cfg: TrainConfig) -> None:
    for key, (ok, words) in _RULES.items():
        if not ok(getattr(cfg, key)):
            raise CNNLibError(f"{key} must be {words}, not {getattr(cfg, key)!r}")
    if cfg.schedule == "onecycle" and not 0 < cfg.warmup < 1:
        raise CNNLibError(f"warmup must be above 0 and below 1 with the onecycle schedule, not {cfg.warmup!r}")
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise CNNLibError(f"unknown {key} {getattr(cfg, key)!r}; use {', '.join(choices)}")
    from cnnlib.models.registry import list_models
    if cfg.model not in list_models():
        raise CNNLibError(f"unknown model {cfg.model!r}; choose one of {', '.join(list_models())}")
    from cnnlib.inference import resolve_device
    resolve_device(cfg.device)                                        # CNNLibError with one sentence
    if cfg.weights and not os.path.isfile(os.path.expanduser(cfg.weights)):
        raise CNNLibError(f"the weights file {cfg.weights} does not exist")


def check_data(cfg: TrainConfig, cwd: str, can_download) -> None:
    """DatasetError (one sentence) when the run's data is not on disk and cannot be downloaded.

    `can_download` is passed in rather than called directly so that cnnlib.training.jobs (and tests, through it) can
    stand in for an offline machine."""
    from cnnlib.data import datasets as data_mod
    from cnnlib.data.cache import CACHE_VERSION, first_file, folder_layout, read_split

    key = str(cfg.data).strip().lower()
    root = data_mod.resolve_root(cfg.data_root or None)
    if key in data_mod.NAMED:
        if all(read_split(root, f"{key}-v{CACHE_VERSION}-{s}") is not None for s in ("train", "test")):
            return                                                    # decoded before
        if key == "fashion-mnist" and all(os.path.isfile(os.path.join(data_mod.DEBIAN_FASHION_MNIST, n + ".gz"))
                                          for n in data_mod.FASHION_FILES):
            return                                                    # train unpacks Debian's copy by itself
        with contextlib.suppress(Exception):          # torchvision: "Dataset not found or corrupted": go on below
            for which in ("train", "test"):
                data_mod.torchvision_split(key, root, which)
            return
        if not cfg.download:
            raise DatasetError(data_mod.missing_dataset_message(key, root, "downloads are turned off"))
        if not can_download(key):
            raise DatasetError(data_mod.missing_dataset_message(key, root, "this machine cannot reach the "
                                                                            "download server"))
        return
    path = cfg.data if os.path.isabs(cfg.data) else os.path.join(cwd, cfg.data)
    if not os.path.isdir(path):
        raise DatasetError(f"--data {cfg.data!r} is neither a known dataset ({', '.join(data_mod.NAMED)}) nor an "
                           f"existing folder: pass one of those names or the path of an ImageFolder tree "
                           f"(train/<class>/*.jpg, optional test/<class>/*)")
    layout = folder_layout(path)                                      # DatasetError when it is no ImageFolder
    for split in ("train", "test"):
        if layout[split]:
            first_file(layout[split])                                 # DatasetError when it holds no images


def can_download(name: str, timeout: float = 3.0) -> bool:
    """Whether one of torchvision's download hosts for dataset `name` answers (a TCP connection)."""
    import torchvision.datasets as tvd

    from cnnlib.data.datasets import NAMED
    cls = getattr(tvd, NAMED[name])
    urls = [m for m in getattr(cls, "mirrors", [])] or [getattr(cls, "url", "")]
    hosts = []
    for u in urls:
        p = urlparse(u if "://" in u else "https://" + u)
        if p.hostname and (p.hostname, p.port or (80 if p.scheme == "http" else 443)) not in hosts:
            hosts.append((p.hostname, p.port or (80 if p.scheme == "http" else 443)))
    for host in hosts[:2]:
        try:
            socket.create_connection(host, timeout=timeout).close()
            return True
        except OSError:
            continue
    return False
