"""Evaluating an imported torchvision/resnet18 on 224-pixel images: CNN Lens against the plain loop.

    python bench/bench_eval224.py [--n 10000] [--src .cache/cifar10-jpeg] [--work .cache/bench224]

What it does, in one run on one machine:
  1. makes a 224-pixel ImageFolder test set once: the first N CIFAR-10 test JPEGs upscaled (bilinear) and
     re-encoded at JPEG quality 90 under --work (git-ignored; never commit it);
  2. saves random resnet18 weights (10 classes) and imports them with `cnnlib import` (preprocessing:
     the images are already 224 x 224, so resize 224 / crop 224);
  3. times, each in its own process so its peak memory is its own:
       (a) plain: torchvision.datasets.ImageFolder + ToTensor/Normalize + DataLoader(2 workers, batch 64)
           + the model under inference_mode;
       (b) CNN Lens, first run: decode into the memory-mapped cache, then evaluate (run_split, BatchNorm
           folded, channels_last);
       (c) CNN Lens, cached: the memory-mapped cache already on disk;
     and prints images/s and peak resident memory (the process plus its DataLoader workers);
  4. the model's own floor: random 224-px batches through the same inference copy (BatchNorm folded,
     channels_last) at the same batch size as (b) and (c) (modelops.batch_size_for), in its own process;
     prints `cnnlib import` (decode + evaluate), (b) and (c) as multiples of the floor's time for N images
     (the issue's goal for the import and the first evaluation: within 1.3x).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]
from machine import machine  # noqa: E402
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def peak_mib() -> float:
    """Peak resident memory of this process plus the largest of its finished children (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def make_data(src: str, dst: str, n: int) -> str:
    from PIL import Image
    test = os.path.join(dst, "test")
    if os.path.isdir(test) and sum(len(fs) for _, _, fs in os.walk(test)) >= n:
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    classes = sorted(os.listdir(os.path.join(src, "test")))
    per_class = n // len(classes)
    for c in classes:
        os.makedirs(os.path.join(test, c))
        for name in sorted(os.listdir(os.path.join(src, "test", c)))[:per_class]:
            with Image.open(os.path.join(src, "test", c, name)) as im:
                im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR).save(
                    os.path.join(test, c, name), quality=90)
    return dst


def run_plain(data: str, weights: str, batch: int) -> dict:
    import torch
    import torchvision
    from torchvision import transforms
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    ds = torchvision.datasets.ImageFolder(os.path.join(data, "test"), transforms.Compose(
        [transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=2)
    t0, correct = time.perf_counter(), 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "img_per_s": len(ds) / seconds, "acc": correct / len(ds), "peak_mib": peak_mib()}


def run_cnnlib(ckpt: str, data_root: str) -> dict:
    import numpy as np
    from cnnlib.data import spec as data_spec
    from cnnlib.diagnose import evaluate
    from cnnlib.inference import load_model
    model = load_model(ckpt)
    t0 = time.perf_counter()
    x, y = data_spec.load_checkpoint_split(model.meta, "test", root=data_root)
    t_load = time.perf_counter() - t0
    out = evaluate.run_split(model, x, y)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "load_seconds": t_load, "img_per_s": len(y) / seconds,
            "acc": float((out["preds"] == np.asarray(y)).mean()), "peak_mib": peak_mib(),
            "memmap": type(x).__name__}


def run_floor(ckpt: str, n: int) -> dict:
    """Random images through exactly what run_split runs: the inference copy, the same batch size."""
    import torch
    from cnnlib.inference import load_model
    from cnnlib.modelops import batch_size_for, inference_copy
    model = load_model(ckpt)
    net, channels_last = inference_copy(model)
    batch = batch_size_for(model.meta["input_shape"])
    x = torch.rand(batch, *model.meta["input_shape"])
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.inference_mode():
        net(x)                                                   # warm-up
        rounds = max(3, min(20, n // batch))
        t0 = time.perf_counter()
        for _ in range(rounds):
            net(x)
        per_image = (time.perf_counter() - t0) / (rounds * batch)
    return {"seconds": per_image * n, "img_per_s": 1 / per_image, "batch": batch, "acc": float("nan"),
            "peak_mib": peak_mib()}


def child(kind: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", args.work, "--n", str(args.n)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode:
        raise SystemExit(f"{kind} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="test images (spread evenly over the classes)")
    p.add_argument("--src", default=os.path.join(REPO, ".cache", "cifar10-jpeg"))
    p.add_argument("--work", default=os.path.join(REPO, ".cache", "bench224"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    data_dir, weights = os.path.join(args.work, "data"), os.path.join(args.work, "resnet18.pt")
    ckpt, root = os.path.join(args.work, "resnet18-imported.pt"), os.path.join(args.work, "data-root")
    if args.child == "plain":
        print(json.dumps(run_plain(data_dir, weights, args.batch)))
        return 0
    if args.child == "cnnlib":
        print(json.dumps(run_cnnlib(ckpt, root)))
        return 0
    if args.child == "floor":
        print(json.dumps(run_floor(ckpt, args.n)))
        return 0

    import torch
    import torchvision
    t0 = time.perf_counter()
    make_data(args.src, data_dir, args.n)
    print(f"data: {args.n} images at 224x224 in {data_dir} ({time.perf_counter() - t0:.1f} s)")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    from cnnlib.io.importer import import_weights
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    import_weights(weights, "torchvision/resnet18", data_dir, out=ckpt, image_size=224, resize=224,
                   mean=MEAN, std=STD, data_root=root, log=lambda *a, **k: None)
    t_import = time.perf_counter() - t0
    print(f"import (decode + evaluate once): {t_import:.1f} s")
    shutil.rmtree(root, ignore_errors=True)                   # (b) starts from an empty cache
    rows = [("(a) plain ImageFolder + DataLoader(2 workers)", child("plain", args)),
            ("(b) CNN Lens, first run (decode to memmap + evaluate)", child("cnnlib", args)),
            ("(c) CNN Lens, cached memmap", child("cnnlib", args)),
            ("(d) the model's floor (random batches, same copy and batch)", child("floor", args))]
    base = rows[0][1]["img_per_s"]
    print(f"\n{machine()}: torchvision/resnet18, {args.n} images at 224 px\n")
    print(f"{'pipeline':<56} {'s':>7} {'img/s':>7} {'vs (a)':>7} {'peak MiB':>9} {'acc':>6}")
    for name, r in rows:
        print(f"{name:<56} {r['seconds']:7.1f} {r['img_per_s']:7.1f} {r['img_per_s'] / base:6.2f}x "
              f"{r['peak_mib']:9.0f} {r['acc']:6.3f}")
    floor = rows[3][1]
    print(f"\nagainst the floor ({floor['seconds']:.1f} s for {args.n} images at batch {floor['batch']}): "
          f"cnnlib import {t_import / floor['seconds']:.2f}x, first evaluation {rows[1][1]['seconds'] / floor['seconds']:.2f}x, "
          f"cached {rows[2][1]['seconds'] / floor['seconds']:.2f}x (goal: within 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
