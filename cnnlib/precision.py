"""Mixed precision policy for training and evaluation.

CUDA: bf16 autocast. CPU: bf16 autocast where the processor has native bf16 (AVX512-BF16 or
AMX); elsewhere fp32. `--precision fp32` forces fp32.
Measured on a 2-core AVX512-BF16 CPU (bench/bench_train.py): bf16 + channels_last trains
simple_cnn about twice as fast as fp32.
"""
from __future__ import annotations

import re

import torch

from .config import TrainConfig
from .errors import CNNLibError


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bf16 autocast was measured faster (bench/bench_train.py)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
    except OSError:
        return False


def autocast_dtype(cfg: TrainConfig, device: torch.device):
    """None for fp32, else the autocast dtype."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision not in ("auto", "bf16"):
        raise CNNLibError(f"unknown precision {cfg.precision!r}; use auto, bf16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16
    if cfg.precision == "bf16" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


def describe_device(device: torch.device, dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return f"{name}, {'bf16 autocast' if dtype is not None else 'fp32'}"
