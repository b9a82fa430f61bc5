"""Every training hyperparameter, in one place, with its unit and meaning.

`TrainConfig` is the only place a default lives: the CLI builds its flags
from these fields (`train.get_args_parser`), recipes override a few of them,
and the checkpoint stores the resolved config as a plain dict.

The default recipe reaches >= 75% CIFAR-10 test accuracy with `simple_cnn`
in 10 epochs on a 2-core CPU; `--recipe fast` aims at the same in 6 epochs
(same network; see RECIPES); `--recipe seed` reproduces the original
tutorial (Adam 1e-3, batch 32, dropout 0.5, constant learning rate).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from cnnlib.errors import CNNLibError

DATA_ROOT_ENV = "CNNLIB_DATA_ROOT"  # environment variable for the data root
DEFAULT_DATA_ROOT = os.path.join("~", ".cache", "cnnlib")  # used when neither flag nor env is set


@dataclass
class TrainConfig:
    # --- data ---
    data: str = "cifar10"          # cifar10 | mnist | fashion-mnist | stl10 | path to an ImageFolder tree
    data_root: str = ""            # where datasets and decoded caches live; "" -> $CNNLIB_DATA_ROOT or ~/.cache/cnnlib
    download: bool = True          # let torchvision download named datasets when missing
    val_size: int = 5000           # images held out of the training split for validation (best-checkpoint choice)
    test_fraction: float = 0.1     # ImageFolder without test/: fraction of images carved out as the test split
    split_seed: int = 0            # seed of the train/val (and carved test) split; fixed so runs compare
    image_size: int = 0            # ImageFolder only: square input size in pixels (centre crop after --resize); 0 -> size of the first image
    resize: int = 0                # ImageFolder only: scale the shorter side to this many pixels first; 0 -> to image_size
    # --- model ---
    model: str = "simple_cnn"      # a name from cnnlib.models.registry.list_models()
    dropout: float = 0.1           # dropout probability before the classifier (models that have one)
    width: int = 0                 # base channel width for models that take one; 0 -> the model's own default
    weights: str = ""              # start from these weights (state dict, checkpoint or .safetensors); "" -> random init
    # --- optimisation ---
    epochs: int = 10               # full passes over the training split
    batch_size: int = 128          # images per optimiser step (per process under DDP)
    optimizer: str = "adamw"       # adamw | adam | sgd
    lr: float = 3e-3               # peak learning rate (the one-cycle maximum, or the constant rate)
    weight_decay: float = 1e-2     # decoupled for adamw, L2 for adam/sgd
    momentum: float = 0.9          # sgd momentum (nesterov)
    schedule: str = "onecycle"     # onecycle | cosine | constant
    warmup: float = 0.25           # onecycle: fraction of all steps spent rising to the peak rate
    lr_div_start: float = 10.0     # onecycle: the rate starts at lr / lr_div_start
    lr_div_end: float = 100.0      # onecycle: the rate ends at lr / lr_div_start / lr_div_end
    label_smoothing: float = 0.1   # cross-entropy label smoothing in [0, 1)
    grad_clip: float = 0.0         # max global gradient norm; 0 -> no clipping
    ema: float = 0.0               # weight EMA decay per optimiser step; 0 -> off (else validation, test and the stored weights are the EMA's)
    lookahead_k: int = 0           # lookahead: optimiser steps between slow-weight syncs; 0 -> off
    lookahead_alpha: float = 0.5   # lookahead: fraction of the way the slow weights move to the fast ones per sync
    bn_momentum: float = 0.0       # BatchNorm running-stats momentum (weight of each new batch); 0 -> the model's own (0.1)
    init: str = "random"           # random | whiten: first conv's kernels from the training patches' PCA (data-dependent start, same layer)
    # --- augmentation (batched tensor ops on the training device) ---
    augment: bool = True           # random crop + horizontal flip on the training split
    crop_padding: int = 2          # pixels of zero padding before the random crop (the original used 4)
    flip: bool = True              # random horizontal flip (turn off for digits)
    flip_mode: str = "random"      # random: a coin per image per epoch | alternate: coin in epoch 1, then each image flips every epoch (airbench)
    # --- run ---
    seed: int = 0                  # seeds model init, batch order and augmentation
    precision: str = "auto"        # auto | fp32 | bf16  (auto: whichever trains faster, measured once per machine/model/batch and cached)
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    threads: int = 0               # CPU threads for torch; 0 -> torch's default (all cores)
    eval_batch_size: int = 1000    # images per forward pass during validation/test
    out: str = "checkpoints/model.pt"  # best checkpoint path; the resume state sits beside it
    resume: bool = False           # continue the interrupted run that wrote <out>.resume.pt
    progress: bool = True          # tqdm progress bar per epoch
    record_filters: bool = True    # keep the first conv layer's kernels at every epoch in the history
    recipe: str = "default"        # name of the recipe these values started from

    # Fields that only steer how a run executes; --resume may change these, nothing else.
    RUN_CONTROL = ("data_root", "download", "device", "threads", "eval_batch_size", "resume", "progress")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# The values a text field may take (the one list: training, the dashboard's job checks and their errors).
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "adam", "sgd"),
    "schedule": ("onecycle", "cosine", "constant"),
    "precision": ("auto", "fp32", "bf16"),
    "init": ("random", "whiten"),
    "flip_mode": ("random", "alternate"),
}


def check_choice(field: str, value: str) -> None:
    """Loud error for a value outside CHOICES[field]."""
    if value not in CHOICES[field]:
        raise CNNLibError(f"unknown {field} {value!r}; use {', '.join(CHOICES[field])}")


# Recipes override a few fields of TrainConfig; everything else keeps its default.
RECIPES: dict[str, dict] = {
    "default": {},
    # The original tutorial: Adam 1e-3, batch 32, constant rate, dropout 0.5, fp32.
    "seed": dict(optimizer="adam", lr=1e-3, batch_size=32, schedule="constant", dropout=0.5,
                 weight_decay=0.0, label_smoothing=0.0, crop_padding=4, precision="fp32"),
    # ResNet-9 at base width 16, sized for a laptop CPU: SGD + nesterov, one-cycle, label smoothing.
    # (On a GPU, add --width 64 for the full DAWNBench network.)
    # Time to accuracy with the exact simple_cnn: aims at >= 75% CIFAR-10 test accuracy in 6 epochs. In 6
    # epochs this network underfits (train accuracy < validation), so regularise less: no dropout, 1-pixel
    # crops, each image flipped in alternate epochs (airbench); more, smaller steps (batch 64) averaged by a
    # weight EMA (stored weights = the EMA's); label smoothing 0.2; conv1 starts as PCA-whitening filters.
    "fast": dict(epochs=6, batch_size=64, optimizer="adamw", lr=3e-3, warmup=0.2, label_smoothing=0.2,
                 ema=0.995, init="whiten", flip_mode="alternate", crop_padding=1, dropout=0.0),
    "resnet": dict(model="resnet9", width=16, optimizer="sgd", lr=0.2, batch_size=256, weight_decay=5e-4,
                   label_smoothing=0.1, dropout=0.0, epochs=20, warmup=0.2, crop_padding=4),
}


def make_config(recipe: str = "default", **overrides) -> TrainConfig:
    """The config of `recipe` with `overrides` (None values are ignored)."""
    if recipe not in RECIPES:
        raise CNNLibError(f"unknown recipe {recipe!r}; known recipes: {', '.join(sorted(RECIPES))}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(recipe=recipe, **values)
