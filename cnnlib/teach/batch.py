"""What the training loop sees: a batch through the checkpoint's own augmentation and normalization, stage
by stage (original, padded, randomly cropped, flipped, normalized), for the "Training batch" page.

    training_batch_steps(meta, x_uint8 (B, C, H, W), seed=0) -> {"original", "padded", "cropped", "offsets",
        "flipped", "flip", "normalized", "mean", "std", "padding", "augment"}
"""
from __future__ import annotations

import numpy as np
import torch

from cnnlib.config import TrainConfig
from cnnlib.data.datasets import augment_batch
from cnnlib.errors import CNNLibError
from cnnlib.modelops import norm_stats, to_input

__all__ = ["training_batch_steps"]


def training_batch_steps(meta: dict, x_uint8, seed: int = 0) -> dict:
    """A batch x_uint8 (B, C, H, W) through the checkpoint's augmentation and normalization, stage by stage.

    The recipe is meta["config"] (augment, crop_padding, flip; TrainConfig's defaults where missing). The
    stages come from cnnlib.data.datasets.augment_batch itself, called twice with generators seeded alike: once with
    flip=False (crop only) and once with the recipe's flip. The crop offsets are drawn first, so both calls
    crop the same windows. Returns {"original" uint8 (B, C, H, W), "padded" uint8 (B, C, H + 2p, W + 2p)
    (zeros around), "cropped" uint8, "offsets" int64 (B, 2) (row, col) of each crop window in `padded`,
    "flipped" uint8 (exactly what training feeds on for this seed), "flip" bool (B,) (the window was
    mirrored; False also when mirroring changes nothing), "normalized" float32 (B, C, H, W) =
    (flipped / 255 - mean) / std, "mean" (C,), "std" (C,), "padding", "augment", "flip_enabled"}.
    """
    x = torch.as_tensor(np.array(x_uint8)) if not isinstance(x_uint8, torch.Tensor) else x_uint8.cpu()
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise CNNLibError(f"expected a uint8 batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    defaults = TrainConfig()
    cfg = (meta or {}).get("config") or {}
    augment = bool(cfg.get("augment", defaults.augment))
    padding = int(cfg.get("crop_padding", defaults.crop_padding)) if augment else 0
    flip = bool(cfg.get("flip", defaults.flip)) and augment
    if augment:
        cropped = augment_batch(x, padding, flip=False, generator=torch.Generator().manual_seed(int(seed)))
        flipped = augment_batch(x, padding, flip=flip, generator=torch.Generator().manual_seed(int(seed)))
    else:
        cropped = flipped = x.clone()
    padded = torch.nn.functional.pad(x, (padding,) * 4)                          # (B, C, H + 2p, W + 2p)
    h, w = x.shape[-2:]
    offsets = torch.zeros(len(x), 2, dtype=torch.int64)
    for i in range(len(x)):                      # find each window (read back, not re-drawn)
        offsets[i] = torch.tensor(next((dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                                       if torch.equal(padded[i, :, dy:dy + h, dx:dx + w], cropped[i])))
    mean, std = norm_stats(meta)
    return {"original": x.numpy(), "padded": padded.numpy(), "cropped": cropped.numpy(), "offsets": offsets.numpy(),
            "flipped": flipped.numpy(), "flip": np.array([not torch.equal(f, c) for f, c in zip(flipped, cropped)]),
            "normalized": to_input(flipped, mean, std).numpy(), "mean": mean.flatten().numpy(),
            "std": std.flatten().numpy(), "padding": padding, "augment": augment, "flip_enabled": flip}
