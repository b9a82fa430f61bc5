"""Training time on this machine: the model-only floor, one epoch of each recipe, and time to 75% accuracy.

    python bench/bench_train.py --data .cache/cifar10-jpeg                  # quick: floor + one epoch per recipe
    python bench/bench_train.py --data .cache/cifar10-jpeg --full           # + the fast recipe to the end (time to 75%)
    python bench/bench_train.py --data .cache/cifar10-jpeg --full --full-default --seed-style   # everything

floor     forward + backward + optimizer step of simple_cnn on random in-memory batches at the recipe's
          batch size and precision (precision.step_timer, the same steps `--precision auto` times),
          median of timed rounds, scaled to one epoch of 45,000 images: what no data pipeline can beat.
epoch     one real epoch of the recipe (cnnlib's pipeline: uint8 tensor in memory, batched augmentation,
          the recipe's optimiser and precision); the ratio to the floor is the pipeline's overhead.
to 75%    `python -m cnnlib train --recipe fast` end to end: the first epoch whose VALIDATION accuracy
          (5,000 held-out training images) reaches 75%, and the wall time from start (data load included)
          to the end of that epoch's validation; then the test accuracy of the stored weights.
--seed-style adds the original tutorial's pipeline (torchvision ImageFolder + PIL transforms + DataLoader,
batch 32, Adam, fp32) and cnnlib's pipeline with the seed recipe, for the README's speed-up table.
Every figure is printed with the CPU model (or GPU name) it was measured on.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnlib.data import datasets as data_mod  # noqa: E402
from cnnlib.training import precision  # noqa: E402
from cnnlib.training import train as train_mod  # noqa: E402
from cnnlib.config import make_config  # noqa: E402
from cnnlib.models.registry import get_model  # noqa: E402

EPOCH_IMAGES = 45_000   # the training split (50,000 - 5,000 validation)
TARGET = 0.75           # accuracy the time-to-accuracy figure is taken at


def recipe_dtype(cfg, device, kwargs) -> tuple[object, str]:
    dtype, rec = precision.resolve(cfg, device, cfg.model, kwargs, [3, 32, 32], True)
    return dtype, rec["used"]


def floor_seconds(cfg, device, kwargs, used: str, rounds: int = 7, round_seconds: float = 1.0) -> float:
    """Seconds per EPOCH_IMAGES of pure training steps (model, batch size and precision of `cfg`)."""
    timer = precision.step_timer(cfg.model, kwargs, [3, 32, 32], cfg.batch_size, True, device, cfg)
    timer(used, 3)                                                    # warm-up
    steps = max(2, round(round_seconds / timer(used, 1)))
    per_image = statistics.median(timer(used, steps) / (steps * cfg.batch_size) for _ in range(rounds))
    return per_image * EPOCH_IMAGES


def recipe_epoch(splits: dict, cfg, device, dtype) -> float:
    """Seconds of one epoch of `cfg` through cnnlib's training loop (no validation)."""
    x, y = splits["train"]
    mean, std = data_mod.channel_stats(x)
    ctx = {"device": device, "dtype": dtype, "mean": torch.tensor(mean).view(1, -1, 1, 1),
           "std": torch.tensor(std).view(1, -1, 1, 1), "channels_last": True, "rank": 0, "world": 1,
           "order_gen": torch.Generator().manual_seed(0), "aug_gen": torch.Generator().manual_seed(1),
           "flip_bits": torch.rand(len(x), generator=torch.Generator().manual_seed(7)).lt(0.5), "after_step": []}
    torch.manual_seed(0)
    model = get_model(cfg.model, num_classes=10, dropout=cfg.dropout).to(memory_format=torch.channels_last)
    opt, sched = train_mod.build_optimizer(model, cfg, -(-len(x) // cfg.batch_size))
    if cfg.ema > 0:                                                   # count the EMA update's cost too
        from cnnlib.training.optim import WeightEMA
        ema = WeightEMA(model, cfg.ema)
        ctx["after_step"].append(lambda: ema.update(model))
    return train_mod.train_one_epoch(model, opt, sched, x, y, cfg, ctx, 1)["seconds"]


def seed_style_epoch(folder: str, train_idx: torch.Tensor, mean, std, workers: int) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = torch.utils.data.Subset(ImageFolder(os.path.join(folder, "train"), transform=tf), train_idx.tolist())
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers)
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


def time_to_target(recipe: str, data: str, machine: str, seed: int = 0) -> None:
    out = os.path.join(".cache", "bench", f"{recipe}_recipe.pt")
    t0 = time.perf_counter()
    ckpt = train_mod.run(make_config(recipe, data=data, out=out, progress=False, seed=seed))
    wall = time.perf_counter() - t0
    print(f"\n[{machine}] --recipe {recipe}, seed {seed}: validation accuracy per epoch")
    for h in ckpt["history"]:
        print(f"  epoch {h['epoch']:2d}  val {100 * h['val_acc']:6.2f}%  {h['seconds']:6.1f} s  "
              f"({h.get('elapsed', float('nan')):6.1f} s since start)")
    hit = next((h for h in ckpt["history"] if h["val_acc"] >= TARGET), None)
    reach = (f"validation >= {100 * TARGET:.0f}% after {hit['epoch']} epochs, {hit['elapsed']:.1f} s wall from start"
             if hit else f"validation never reached {100 * TARGET:.0f}%")
    print(f"[{machine}] --recipe {recipe}: {reach}; test accuracy {100 * ckpt['metrics']['test_acc']:.2f}% "
          f"(best val {100 * ckpt['metrics']['val_acc']:.2f}%, epoch {ckpt['best_epoch']}), "
          f"{ckpt['config']['epochs']} epochs in {wall:.1f} s wall, {ckpt['precision']['used']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".cache/cifar10-jpeg", help="CIFAR-10 as an ImageFolder tree")
    p.add_argument("--full", action="store_true", help="also train the fast recipe to the end: epochs and s to 75%%")
    p.add_argument("--full-default", action="store_true", help="also train the default recipe (10 epochs)")
    p.add_argument("--seed-style", action="store_true", help="also time the original tutorial's pipeline (slow)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for --seed-style")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 -> torch's default")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(args.data, "train")):
        sys.exit(f"{args.data} has no train/ folder: unpack ../shared/datasets/cifar10-jpeg.tar.gz there first")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    machine = precision.machine_name(device)
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}")

    t0 = time.perf_counter()
    splits = data_mod.load_dataset(args.data, val_size=5000, split_seed=0)
    n = splits["sizes"]["train"]
    splits["train"] = tuple(torch.as_tensor(t).clone() for t in splits["train"])     # in memory, as training has it
    print(f"data: {args.data}, {n} training images, loaded in {time.perf_counter() - t0:.2f}s")

    print(f"\n{'':<52} {'floor s':>8} {'epoch s':>8} {'img/s':>7} {'epoch/floor':>11}   (per {EPOCH_IMAGES:,} images)")
    kwargs = {"num_classes": 10, "in_channels": 3, "image_size": 32}
    for recipe in ("default", "fast"):
        cfg = make_config(recipe, data=args.data, progress=False, epochs=1)
        dtype, used = recipe_dtype(cfg, device, {**kwargs, "dropout": cfg.dropout})
        floor = floor_seconds(cfg, device, {**kwargs, "dropout": cfg.dropout}, used)
        epoch = recipe_epoch(splits, cfg, device, dtype) * EPOCH_IMAGES / n
        name = f"{recipe} recipe: batch {cfg.batch_size}, {cfg.optimizer}, {used}"
        print(f"{name:<52} {floor:8.1f} {epoch:8.1f} {EPOCH_IMAGES / epoch:7.0f} {epoch / floor:10.2f}x   [{machine}]",
              flush=True)

    if args.seed_style:
        train_idx = data_mod._split(n + splits["sizes"]["val"], [splits["sizes"]["val"], n], 0)[1]
        mean, std = data_mod.channel_stats(splits["train"][0])
        secs = seed_style_epoch(args.data, train_idx, mean, std, args.workers)
        print(f"{'seed-style: PIL transforms, DataLoader, batch 32, Adam, fp32':<52} {'':>8} {secs:8.1f} "
              f"{n / secs:7.0f} {'':>11}   [{machine}]")
        cfg = make_config("seed", progress=False, epochs=1)
        secs = recipe_epoch(splits, cfg, device, None)
        print(f"{'cnnlib pipeline, seed recipe: batch 32, Adam, fp32':<52} {'':>8} {secs:8.1f} "
              f"{n / secs:7.0f} {'':>11}   [{machine}]", flush=True)

    if args.full_default:
        time_to_target("default", args.data, machine)
    if args.full:
        time_to_target("fast", args.data, machine)


if __name__ == "__main__":
    main()
