"""Training throughput: the seed tutorial's pipeline vs cnnlib's, same model, same data, one run.

    python bench/bench_train.py --data .cache/cifar10-jpeg            # one epoch each, ratio printed
    python bench/bench_train.py --data .cache/cifar10-jpeg --full     # + the 10-epoch default recipe

(a) seed-style: torchvision ImageFolder + per-image PIL transforms (RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with workers, batch 32, Adam 1e-3, fp32.
(b) cnnlib, seed recipe: decoded uint8 tensor, batched tensor augmentation, batch 32, Adam, fp32.
(c) cnnlib, default recipe: as (b) with batch 128, AdamW one-cycle, bf16 autocast where native, channels_last.
All three train simple_cnn for one epoch on the same 45,000-image training split.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnlib import data as data_mod  # noqa: E402
from cnnlib import precision  # noqa: E402
from cnnlib import train as train_mod  # noqa: E402
from cnnlib.config import make_config  # noqa: E402
from cnnlib.models import get_model  # noqa: E402


def seed_style_epoch(folder: str, train_idx: torch.Tensor, mean, std, workers: int) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = torch.utils.data.Subset(ImageFolder(os.path.join(folder, "train"), transform=tf), train_idx.tolist())
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers,
                                         persistent_workers=False)
    torch.manual_seed(0)
    model = get_model("simple_cnn", num_classes=10, dropout=0.5).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def cnnlib_epoch(splits: dict, recipe: str) -> tuple[float, str]:
    cfg = make_config(recipe, progress=False, epochs=1)
    device = torch.device("cpu")
    x, y = splits["train"]
    mean, std = data_mod.channel_stats(x)
    dtype = precision.autocast_dtype(cfg, device)
    ctx = {"device": device, "dtype": dtype, "mean": torch.tensor(mean).view(1, -1, 1, 1),
           "std": torch.tensor(std).view(1, -1, 1, 1), "channels_last": True, "rank": 0, "world": 1,
           "order_gen": torch.Generator().manual_seed(0), "aug_gen": torch.Generator().manual_seed(1)}
    torch.manual_seed(0)
    model = get_model("simple_cnn", num_classes=10, dropout=cfg.dropout).to(memory_format=torch.channels_last)
    opt, sched = train_mod.build_optimizer(model, cfg, -(-len(x) // cfg.batch_size))
    stats = train_mod.train_one_epoch(model, opt, sched, x, y, cfg, ctx, 1)
    return stats["seconds"], precision.describe_device(device, dtype)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".cache/cifar10-jpeg", help="CIFAR-10 as an ImageFolder tree")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the seed-style pipeline")
    p.add_argument("--full", action="store_true", help="also train the default recipe for 10 epochs")
    p.add_argument("--skip-seed", action="store_true", help="skip (a), the slow reference")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(args.data, "train")):
        sys.exit(f"{args.data} has no train/ folder: unpack ../shared/datasets/cifar10-jpeg.tar.gz there first")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    splits = data_mod.load_dataset(args.data, val_size=5000, split_seed=0)
    n = splits["sizes"]["train"]
    print(f"data: {args.data}, {n} training images, loaded in {time.perf_counter() - t0:.2f}s (decoded cache)")
    # the training split's indices into ImageFolder order (load_dataset's split, recomputed)
    train_idx = data_mod._split(n + splits["sizes"]["val"], [splits["sizes"]["val"], n], 0)[1]
    mean, std = data_mod.channel_stats(splits["train"][0])

    rows = []
    if not args.skip_seed:
        secs = seed_style_epoch(args.data, train_idx, mean, std, args.workers)
        rows.append(("(a) seed-style: PIL transforms, DataLoader, batch 32, Adam, fp32", secs))
    secs, _ = cnnlib_epoch(splits, "seed")
    rows.append(("(b) cnnlib pipeline, seed recipe: batch 32, Adam, fp32", secs))
    secs, dev = cnnlib_epoch(splits, "default")
    rows.append((f"(c) cnnlib pipeline, default recipe: batch 128, AdamW, {dev.split(', ')[-1]}", secs))

    ref = rows[0][1]
    print(f"\n{'pipeline':<78} {'s/epoch':>8} {'img/s':>8} {'speed-up':>9}")
    for name, secs in rows:
        print(f"{name:<78} {secs:8.1f} {n / secs:8.0f} {ref / secs:8.2f}x")

    if args.full:
        print("\n10 epochs of the default recipe (python -m cnnlib train), wall time from start to test accuracy:")
        t0 = time.perf_counter()
        out = os.path.join(".cache", "bench", "default_recipe.pt")
        ckpt = train_mod.run(make_config("default", data=args.data, out=out, progress=False))
        wall = time.perf_counter() - t0
        print(f"default recipe: test accuracy {100 * ckpt['metrics']['test_acc']:.2f}%, "
              f"best val {100 * ckpt['metrics']['val_acc']:.2f}% (epoch {ckpt['best_epoch']}), wall {wall:.1f}s")


if __name__ == "__main__":
    main()
