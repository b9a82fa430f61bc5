"""Mixed precision policy for training and evaluation: fp32 or bf16 autocast, chosen by measurement.

    dtype, record = resolve(cfg, device, model_name, kwargs, input_shape, channels_last)
    record -> {"used": "bf16", "why": "measured: bf16 2,910 img/s vs fp32 1,530 img/s (cached 2026-11-25)", ...}

`--precision fp32` / `bf16` are obeyed as given. `auto` times a few real training steps (forward, backward,
optimizer step of the actual model at the actual batch size, random data of the real input shape) in fp32
and in bf16 autocast, and takes the faster. Rounds of steps alternate between the two (so a burst of load
from another process hits both) and the median round decides. The result is cached per (machine: GPU name
or CPU model + threads, torch version, model + kwargs, batch size, channels_last) in
`<data root>/precision.json` (written atomically; an unreadable file is ignored and rewritten).
Why measure: bf16 is ~2x faster than fp32 on CPUs with AVX512-BF16/AMX but several times slower where
bf16 is emulated (AVX2), and on GPUs it depends on the model.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable

import torch

from cnnlib.config import TrainConfig, check_choice

PRECISIONS = ("fp32", "bf16")
CACHE_NAME = "precision.json"      # file name under the data root
WARMUP_STEPS = 2                   # untimed steps per precision before timing (allocator, oneDNN kernels)
ROUND_SECONDS = 0.15               # target wall time of one timed round (steps per round follow from it), s
MAX_ROUNDS = 7                     # timed rounds per precision at most; the median round decides
MIN_ROUNDS = 3                     # rounds before stopping early when one precision is clearly faster
FAR_MARGIN = 3.0                   # probes alone decide when every step of one is this many times slower
CLEAR_MARGIN = 1.5                 # "clearly faster": the slower's fastest round is this many times the faster's slowest


def machine_name(device: torch.device) -> str:
    """GPU name, or CPU model string plus torch's thread count (the things a step time depends on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def dtype_of(name: str):
    return None if name == "fp32" else torch.bfloat16


# ----------------------------------------------------------------------------- measuring

def step_timer(model_name: str, kwargs: dict, input_shape, batch_size: int, channels_last: bool,
               device: torch.device, cfg: TrainConfig | None = None) -> Callable[[str, int], float]:
    """A function (precision, steps) -> seconds for `steps` training steps of a fresh `model_name` on
    random data (batch_size, *input_shape), in that precision. Global RNG state is left untouched."""
    from cnnlib.models.registry import get_model
    from cnnlib.modelops import autocast
    from cnnlib.training.optim import build_optimizer

    cfg = cfg or TrainConfig()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = get_model(model_name, **kwargs).to(device).train()
        x = torch.randn(batch_size, *input_shape, device=device)                    # (B, C, H, W)
        y = torch.randint(0, kwargs.get("num_classes", 10), (batch_size,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt, _ = build_optimizer(model, cfg, 1000)

    def run(precision: str, steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):   # dropout draws
            for _ in range(steps):
                with autocast(device, dtype_of(precision)):
                    logits = model(x)                                       # (B, K)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    return run


def measure(timer: Callable[[str, int], float], batch_size: int) -> dict[str, float]:
    """Images per second for each precision: warm-up, then alternating timed rounds; median round."""
    per_step: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for p in PRECISIONS:
        timer(p, WARMUP_STEPS)                                   # compile kernels, warm the allocator
    for _ in range(2):                                           # two alternating single-step probes each
        for p in PRECISIONS:
            per_step[p].append(max(timer(p, 1), 1e-9))
    (fast, slow) = sorted(PRECISIONS, key=lambda p: max(per_step[p]))
    if min(per_step[slow]) > FAR_MARGIN * max(per_step[fast]):  # e.g. emulated bf16: no need for rounds
        return {p: batch_size / statistics.median(per_step[p]) for p in PRECISIONS}
    steps = {p: max(1, round(ROUND_SECONDS / min(per_step[p]))) for p in PRECISIONS}
    rounds: dict[str, list[float]] = {p: [] for p in PRECISIONS}   # seconds per image, one per round
    for r in range(MAX_ROUNDS):
        for p in PRECISIONS:
            rounds[p].append(timer(p, steps[p]) / (steps[p] * batch_size))
        if r + 1 >= MIN_ROUNDS:
            (fast, slow) = sorted(PRECISIONS, key=lambda p: statistics.median(rounds[p]))
            if min(rounds[slow]) > CLEAR_MARGIN * max(rounds[fast]):
                break
    return {p: 1.0 / statistics.median(rounds[p]) for p in PRECISIONS}


# ----------------------------------------------------------------------------- the cache

def cache_path(cfg: TrainConfig) -> str:
    from cnnlib.data.datasets import resolve_root
    return os.path.join(resolve_root(cfg.data_root or None), CACHE_NAME)


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}                                               # missing or corrupt: start afresh


def _write_cache(path: str, data: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".precision-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)                                   # atomic: readers see the old or the new file
    except OSError:
        pass                                                    # a read-only data root: measure again next time


def cache_key(device, model_name, kwargs, batch_size, channels_last) -> str:
    return json.dumps({"machine": machine_name(device), "torch": torch.__version__, "model": model_name,
                       "kwargs": kwargs, "batch_size": batch_size, "channels_last": channels_last}, sort_keys=True)


# ----------------------------------------------------------------------------- the policy

def resolve(cfg: TrainConfig, device: torch.device, model_name: str, kwargs: dict, input_shape,
            channels_last: bool, timer: Callable[[str, int], float] | None = None, path: str | None = None):
    """(autocast dtype or None, record {"used", "why", and for auto the img/s of each}) for this run."""
    check_choice("precision", cfg.precision)
    if cfg.precision != "auto":
        return dtype_of(cfg.precision), {"used": cfg.precision, "why": f"requested (--precision {cfg.precision})"}
    path = path or cache_path(cfg)
    key = cache_key(device, model_name, kwargs, cfg.batch_size, channels_last)
    cache = _read_cache(path)
    entry = cache.get(key)
    if not (isinstance(entry, dict) and all(isinstance(entry.get(p), (int, float)) for p in PRECISIONS)):
        timer = timer or step_timer(model_name, kwargs, input_shape, cfg.batch_size, channels_last, device, cfg)
        entry = {**measure(timer, cfg.batch_size),
                 "date": datetime.date.today().isoformat(), "machine": machine_name(device)}
        cache = _read_cache(path)                               # another run may have written meanwhile
        cache[key] = entry
        _write_cache(path, cache)
        when = f"measured {entry['date']}"
    else:
        when = f"cached {entry.get('date', '?')}"
    used = max(PRECISIONS, key=lambda p: entry[p])
    other = "fp32" if used == "bf16" else "bf16"
    why = f"measured: {used} {entry[used]:,.0f} img/s vs {other} {entry[other]:,.0f} img/s ({when})"
    return dtype_of(used), {"used": used, "why": why, "img_per_s": {p: entry[p] for p in PRECISIONS}}


def describe_device(device: torch.device, dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return f"{name}, {'bf16 autocast' if dtype is not None else 'fp32'}"
