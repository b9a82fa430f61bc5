"""Robustness sweep on CIFAR-10: accuracy under the 15 corruptions x 5 severities, and how long it takes.

    python bench/bench_robustness.py [--checkpoint checkpoints/resnet9.pt] [--images 1000] [--seed 0]
                                     [--precision fp32 bf16] [--old 50]

On a random sample of the checkpoint's test images, in one run (so the ratios compare like with like on a
shared machine):
  1. the forward-pass floor: the model alone classifying the sample (median of 3): PyTorch fp32, PyTorch bf16
     autocast and ONNX Runtime fp32 (what fp32 sweeps of 20,000 corrupted images or more use when it is
     installed); 75 times that is the least any sweep of the sample can take;
  2. each corruption alone, batched as the sweep batches it (cnnlib.diagnose.corruptions.corrupt_batch), in ms
     per image per severity, and with --old N the per-image implementation before batching (the reference kept
     in tests/test_robustness.py) on N of the images, for the speed-up, and the sweep as it ran before
     (those per-image corruptions, then PyTorch fp32 at its measured floor) per corrupted image;
  3. the sweep itself, cnnlib.diagnose.robustness.robustness, cold (never cached here), per precision: its time,
     its ratio to the forward floor, its accuracy table (format_table for the first precision) and the time
     extrapolated linearly to 10,000 images x 15 x 5 (the issue's goal: under 10 minutes on 2 cores), and its
     CPU time (process_time: every thread), which another job on a shared machine inflates far less.
Exit code 1 when the first precision's extrapolation misses the goal.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402
from cnnlib.data.spec import load_checkpoint_split  # noqa: E402
from cnnlib.diagnose.corruptions import CORRUPTIONS, SEVERITIES, corrupt_batch  # noqa: E402
from cnnlib.diagnose.robustness import _onnx_predictor, _predictor, format_table, robustness  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402
from cnnlib.modelops import batch_size_for  # noqa: E402

GOAL_S = 600
FULL = 10000 * len(CORRUPTIONS) * len(SEVERITIES)          # corrupted images in the full sweep


def corruption_times(xs: np.ndarray, fn, batch: int) -> dict:
    """{corruption: [ms per image at severity 1..5]} for fn(images (B, H, W, C), name, severity, rng)."""
    out = {}
    for ci, name in enumerate(CORRUPTIONS):
        out[name] = []
        for s in SEVERITIES:
            rng = np.random.default_rng([0, ci, s])
            t = time.perf_counter()
            for i in range(0, len(xs), batch):
                fn(xs[i:i + batch], name, s, rng)
            out[name].append(1000 * (time.perf_counter() - t) / len(xs))
    return out


def table(times: dict, title: str) -> str:
    lines = [title, f"{'corruption':<18}" + "".join(f"{'s' + str(s):>8}" for s in SEVERITIES) + f"{'sum':>9}"]
    for name, row in times.items():
        lines.append(f"{name:<18}" + "".join(f"{v:8.3f}" for v in row) + f"{sum(row):9.3f}")
    total = sum(sum(r) for r in times.values())
    lines.append(f"{'all 75':<18}" + " " * 40 + f"{total:9.3f}  (ms per image: all 75 corrupted versions of one)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/resnet9.pt")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--old", type=int, default=0, metavar="N",
                   help="also time the per-image implementation before batching on N images")
    args = p.parse_args()
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = load_model(args.checkpoint)
    x, y = load_checkpoint_split(model.meta, "test")
    idx = np.sort(np.random.default_rng(args.seed).choice(len(y), min(args.images, len(y)), replace=False))
    xs = np.asarray(x[idx])
    n = len(xs)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__} (a shared machine: other work may run beside this; compare ratios)")
    print(f"checkpoint {args.checkpoint}, {n} test images\n")

    floor, cpu, engines = {}, {}, {"fp32": _predictor(model, "fp32"), "bf16": _predictor(model, "bf16")}
    fast = _onnx_predictor(model, xs, engines["fp32"](xs))
    if fast is not None:
        engines["fp32 onnxruntime"] = fast
    for name, predict in engines.items():            # 1. the model alone on the sample
        predict(xs[:256])
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            predict(xs)
            runs.append(time.perf_counter() - t)
        floor[name] = statistics.median(runs) / n
        c0 = time.process_time()
        predict(xs)
        cpu[name] = (time.process_time() - c0) / n                         # CPU s per image, all threads
        print(f"forward pass alone ({name}): {1000 * floor[name]:.3f} ms per image (median of 3 passes over {n}); "
              f"x 75 = {75 * floor[name] * n:.1f} s for this sample, {FULL * floor[name] / 60:.1f} min for 10,000")

    hwc = np.ascontiguousarray(xs.transpose(0, 2, 3, 1))       # 2. each corruption alone
    new = corruption_times(hwc, corrupt_batch, batch_size_for(xs.shape[1:]))
    print("\n" + table(new, f"corrupt_batch, ms per image (batches of {batch_size_for(xs.shape[1:])}, {n} images):"))
    if args.old:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from test_robustness import old_corrupt
        m = min(args.old, n)
        c0 = time.process_time()
        old = corruption_times(hwc[:m], lambda b, name, s, rng: [old_corrupt(im, name, s, rng) for im in b], m)
        old_cpu = (time.process_time() - c0) / (75 * m) + cpu["fp32"]     # CPU s per corrupted image, as before
        new_m = corruption_times(hwc[:m], corrupt_batch, m)
        print("\n" + table(old, f"per-image implementation before batching, ms per image ({m} images):"))
        before = sum(map(sum, old.values())) / 75 / 1000 + floor["fp32"]    # s per corrupted image, run serially
        print(f"\nthe sweep before batching (these per-image corruptions, then PyTorch fp32 at the floor above, one "
              f"after the other): {1000 * before:.3f} ms per corrupted image: {FULL * before / 60:.1f} min for "
              "10,000 x 15 x 5")
        print("speed-up on the same images: " + ", ".join(
            f"{c} {sum(old[c]) / max(sum(new_m[c]), 1e-9):.1f}x" for c in CORRUPTIONS)
            + f"; all 75: {sum(map(sum, old.values())) / sum(map(sum, new_m.values())):.1f}x")

    status = 0
    for k, prec in enumerate(args.precision):       # 3. the sweep
        t0, c0 = time.perf_counter(), time.process_time()
        res = robustness(model, x, y, images=n, seed=args.seed, progress=sys.stderr.isatty(), precision=prec)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        if k == 0:
            print("\n" + format_table(res, flips=5))
        full = total / (75 * n) * FULL
        eng = prec + (" onnxruntime" if res.get("engine") == "onnxruntime" else "")
        print(f"\nsweep ({prec}, engine {res.get('engine')}): {total:.1f} s for {n} images x 15 x 5 = "
              f"{1000 * total / (75 * n):.3f} ms per corrupted image; {total / (75 * floor[eng] * n):.2f}x the "
              f"forward-pass floor ({eng}) measured above; "
              f"clean {res['clean_accuracy']:.2%}, mean over corruptions "
              f"{np.mean(list(res['mean_accuracy'].values())):.2%}")
        print(f"extrapolated to 10,000 images x 15 x 5 ({prec}): {full / 60:.1f} min (goal: under 10 min on 2 cores)")
        full_cpu = total_cpu / (75 * n) * FULL
        print(f"  CPU time (user + system, all threads, less exposed to other work than the wall clock): "
              f"{total_cpu:.1f} s; for 10,000 x 15 x 5: {full_cpu / 60:.1f} CPU-min, so {full_cpu / 120:.1f} to "
              f"{full_cpu / 60:.1f} min on 2 free cores (both busy .. one busy)")
        if args.old:
            print(f"  {before / (total / (75 * n)):.1f}x faster than the sweep before batching (wall), "
                  f"{old_cpu / (total_cpu / (75 * n)):.1f}x less CPU, both timed in this run; before: "
                  f"{FULL * old_cpu / 60:.1f} CPU-min for 10,000 x 15 x 5")
        if k == 0 and full > GOAL_S:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
