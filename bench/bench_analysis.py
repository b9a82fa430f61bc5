"""Timings of the analysis functions against the issue's targets (CPU).

    python bench/bench_analysis.py [--repeats 5] [--threads N] [--all-methods]

Builds simple_cnn (random weights: speed does not depend on training) and 10,000
random uint8 CIFAR-sized images, then reports the median of several repeats after
a warm-up. Exit code 1 when a target is missed.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name, timed  # noqa: E402
from cnnlib.explain import attribution
from cnnlib.diagnose import evaluate

from cnnlib.models import anatomy as interpret  # noqa: E402
from cnnlib.models.registry import get_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave the default)")
    p.add_argument("--all-methods", action="store_true", help="also time every attribution method (no targets)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_model("simple_cnn").eval()
    model.meta = {"classes": [f"class{i}" for i in range(10)], "input_shape": [3, 32, 32],
                  "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}}
    x = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (10_000,))
    one = x[0].float() / 255

    def evaluation():
        out = evaluate.run_split(model, x, y)
        evaluate.compute_report(out["targets"], out["probs"], model.meta["classes"], out["losses"])

    layers = [r["name"] for r in interpret.list_layers(model)]
    rows = [  # (what, target seconds or None, function, repeats)
        ("evaluate 10,000 test images (run_split + compute_report)", 3.0, evaluation, max(args.repeats // 2, 2)),
        ("Integrated Gradients, 50 steps, one 32x32 image", 0.5,
         lambda: attribution.attribute(model, one, "integrated_gradients", n_steps=50), args.repeats),
        ("Grad-CAM, one image", 0.05, lambda: attribution.attribute(model, one, "gradcam"), args.repeats * 4),
        (f"feature maps of all {len(layers)} layers, one image", 0.05,
         lambda: interpret.feature_maps(model, one, layers), args.repeats * 4),
        ("PCA embedding of 10,000 images", 3.0, lambda: interpret.embed(model, x, y), max(args.repeats // 2, 2)),
    ]
    if args.all_methods:
        rows += [(f"  {attribution.METHOD_LABELS[m]} (no target)", None,
                  lambda m=m: attribution.attribute(model, one, m), args.repeats)
                 for m in attribution.METHODS if m not in ("integrated_gradients", "gradcam")]
        rows += [("  list_layers", None, lambda: interpret.list_layers(model), args.repeats * 4)]

    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs{load}; "
          f"median of repeats after one warm-up\n")
    print(f"{'operation':<58} {'target':>9} {'measured':>10}  result")
    failed = 0
    for what, target, fn, repeats in rows:
        t = timed(fn, repeats)
        ok = target is None or t <= target
        failed += not ok
        tgt = "" if target is None else (f"{target * 1000:.0f} ms" if target < 1 else f"{target:.1f} s")
        got = f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"
        print(f"{what:<58} {tgt:>9} {got:>10}  {'' if target is None else ('pass' if ok else 'FAIL')}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
