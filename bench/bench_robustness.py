"""Robustness sweep on CIFAR-10: accuracy under the 15 corruptions x 5 severities, and how long it takes.

    python bench/bench_robustness.py [--checkpoint checkpoints/resnet9.pt] [--images 200] [--seed 0]

Runs cnnlib.diagnose.robustness.robustness on a random sample of the checkpoint's test images (never cached here,
so the time is a cold sweep), prints the accuracy table (format_table), the time per image per (corruption,
severity), the time of each corruption alone on the sample, and the sweep time extrapolated linearly to 10,000
images x 15 x 5 (the issue's goal: under 10 minutes on 2 cores). Exit code 1 when the extrapolation misses it.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402
from cnnlib.data.spec import load_checkpoint_split  # noqa: E402
from cnnlib.diagnose.robustness import CORRUPTIONS, corrupt, format_table, robustness  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/resnet9.pt")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = load_model(args.checkpoint)
    x, y = load_checkpoint_split(model.meta, "test")
    t0 = time.perf_counter()
    res = robustness(model, x, y, images=args.images, seed=args.seed, progress=sys.stderr.isatty())
    total = time.perf_counter() - t0
    print(f"machine: {cpu_name()}, torch threads {torch.get_num_threads()}")
    print(f"checkpoint {args.checkpoint}\n")
    print(format_table(res))
    steps = len(CORRUPTIONS) * 5 * res["n"]
    print(f"\nsweep: {total:.1f} s for {res['n']} images x 15 x 5 ({1000 * total / steps:.2f} ms per corrupted image, "
          "corruption and forward pass)")
    sample = np.asarray(x[res["indices"][:50]]).transpose(0, 2, 3, 1)
    per = {}
    for name in CORRUPTIONS:
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for s in range(1, 6):
            for im in sample:
                corrupt(im, name, s, rng)
        per[name] = 1000 * (time.perf_counter() - t) / (5 * len(sample))
    print("corruption alone (ms per image): " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    full = total / steps * 10000 * 15 * 5
    print(f"extrapolated to 10,000 images x 15 x 5: {full / 60:.1f} min (goal: under 10 min on 2 cores)")
    return 0 if full <= 600 else 1


if __name__ == "__main__":
    sys.exit(main())
