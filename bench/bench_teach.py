"""Timings of the teaching functions (cnnlib.teach, cnnlib.explain) on the shipped checkpoints (CPU).

    python bench/bench_teach.py [--repeats 3] [--threads N] [--channels 3]

Target: visualize_channel under 10 s per channel for simple_cnn at 32x32 (default settings). Also times
unit_arithmetic, head_arithmetic, layer_strip, training_batch_steps on simple_cnn and resnet9, and
sanity_check per attribution method on simple_cnn. Random images (speed does not depend on content).
Prints the CPU model and the load average (other processes slow every number). Exit 1 when the target is missed.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name, timed  # noqa: E402

from cnnlib.explain import featurevis, sanity  # noqa: E402
from cnnlib.teach import arithmetic, strip  # noqa: E402
from cnnlib.teach import batch as batch_steps  # noqa: E402
from cnnlib.explain.attribution import METHODS  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_FEATUREVIS_S = 10.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave the default)")
    p.add_argument("--channels", type=int, default=3, help="channels visualised (each timed once)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    models = {n: load_model(os.path.join(ROOT, "checkpoints", f"{n}.pt"), "cpu") for n in ("simple_cnn", "resnet9")}
    x01 = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ok = True
    rows = []
    for name, model in models.items():
        conv = "conv2" if name == "simple_cnn" else "layer1.residual"
        rows += [(f"{name}: unit_arithmetic({conv})",
                  timed(lambda m=model, c=conv: arithmetic.unit_arithmetic(m, x01, c, 3, 5, 6), args.repeats)),
                 (f"{name}: head_arithmetic", timed(lambda m=model: arithmetic.head_arithmetic(m, x01), args.repeats)),
                 (f"{name}: layer_strip", timed(lambda m=model: strip.layer_strip(m, x01), args.repeats)),
                 (f"{name}: training_batch_steps (16 images)",
                  timed(lambda m=model: batch_steps.training_batch_steps(m.meta, batch, 0), args.repeats))]
    for label, t in rows:
        print(f"{label:<50s} {t * 1000:9.1f} ms")

    model = models["simple_cnn"]
    featurevis.visualize_channel(model, "conv1", 0, steps=4)                           # warm-up
    for layer, channel in [("conv1", 0), ("relu2", 5), ("pool2", 11), ("fc1", 7)][:max(1, args.channels)]:
        t0 = time.perf_counter()
        r = featurevis.visualize_channel(model, layer, channel)
        dt = time.perf_counter() - t0
        verdict = "ok" if dt < TARGET_FEATUREVIS_S else "MISSED"
        ok &= dt < TARGET_FEATUREVIS_S
        print(f"simple_cnn: visualize_channel({layer}, {channel}), {r['steps']} steps {dt:8.2f} s "
              f"(target < {TARGET_FEATUREVIS_S:.0f} s: {verdict}); objective {r['start_objective']:.3f} -> "
              f"{r['final_objective']:.3f}")
    t0 = time.perf_counter()
    r = featurevis.visualize_channel(model, target_class=3)
    print(f"simple_cnn: visualize_channel(class 3)             {time.perf_counter() - t0:8.2f} s")

    for method in METHODS:
        t0 = time.perf_counter()
        steps = sanity.sanity_check(model, x01, method)
        dt = time.perf_counter() - t0
        print(f"simple_cnn: sanity_check({method}), {len(steps)} maps {dt:8.2f} s; Spearman trained vs "
              f"fully random {steps[-1]['spearman']:.3f}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average at the end {load[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
