"""CUDA timings: one epoch of each recipe, evaluation of the test split, every attribution method on one image.

    python bench/gpu.py --data .cache/cifar10-jpeg [--recipes default fast] [--device cuda:0]

Uses only torch / torchvision features present in torch 2.11 / torchvision 0.26 (torch.autocast bf16,
channels_last, torch.cuda.synchronize / Event timing). Every figure is printed with the GPU's name.
Exit status 2 when no CUDA device is available.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnlib.explain import attribution

from cnnlib.diagnose import evaluate  # noqa: E402
from cnnlib.data import spec as data_spec
from cnnlib.training import train as train_mod  # noqa: E402
from cnnlib.config import make_config  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402


def cuda_seconds(fn, device: torch.device, repeats: int = 1) -> float:
    """Median wall seconds of fn() over `repeats` runs, synchronised before and after each."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".cache/cifar10-jpeg", help="CIFAR-10 as an ImageFolder tree (or cifar10)")
    p.add_argument("--recipes", nargs="+", default=["default", "fast"], help="recipes to train one epoch each")
    p.add_argument("--device", default="cuda", help="CUDA device")
    p.add_argument("--repeats", type=int, default=5, help="repeats of each attribution method (median)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine; nothing to time", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device)
    print(f"GPU: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}")

    workdir = tempfile.mkdtemp(prefix="cnnlib-gpu-")
    ckpt_path = None
    for recipe in args.recipes:
        out = os.path.join(workdir, f"{recipe}.pt")
        cfg = make_config(recipe, data=args.data, device=args.device, epochs=1, progress=False, out=out)
        t0 = time.perf_counter()
        ckpt = train_mod.run(cfg)                       # one epoch: data to GPU, train, validate, test, save
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        train_s = ckpt["history"][0]["seconds"]
        print(f"[{gpu}] --recipe {recipe}: one epoch {train_s:.2f} s (train + validation), {wall:.2f} s wall "
              f"with data load and test; val {100 * ckpt['history'][0]['val_acc']:.2f}%, "
              f"precision {ckpt['precision']['used']} ({ckpt['precision']['why']})", flush=True)
        ckpt_path = out

    model = load_model(ckpt_path, device=device)
    x, y = data_spec.load_checkpoint_split(model.meta, "test")
    evaluate.run_split(model, x[:1000], y[:1000])      # warm-up: cuDNN autotune, allocator
    secs = cuda_seconds(lambda: evaluate.run_split(model, x, y), device, repeats=3)
    print(f"[{gpu}] evaluate the test split ({len(y):,} images, run_split): {secs:.3f} s", flush=True)

    one = torch.as_tensor(x[0]).float().div(255.0).to(device)                     # (C, H, W) in [0, 1]
    print(f"\n[{gpu}] attribution, one {tuple(one.shape)} image, median of {args.repeats} after a warm-up:")
    for method in attribution.METHODS:
        try:
            attribution.attribute(model, one, method)                               # warm-up
            secs = cuda_seconds(lambda m=method: attribution.attribute(model, one, m), device, args.repeats)
            print(f"  {method:<28} {secs * 1000:9.1f} ms", flush=True)
        except Exception as e:                                                      # report, keep timing the rest
            print(f"  {method:<28} FAILED: {type(e).__name__}: {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
