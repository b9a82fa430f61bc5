"""The full fuzz run: thousands of mutated images and checkpoints through CNN Lens's loaders.

    python bench/fuzz.py [--images 10000] [--flips 1000] [--seed 0]

Images come from tests/fuzzcases.py's hypothesis strategy (six formats, every writable mode, animated,
EXIF orientations in and out of range, then bit flips, truncation, absurd declared sizes, inserted bytes);
checkpoints are one freshly trained tiny checkpoint mutated every way tests/fuzzcases.py knows (truncated
at every 1/100th, `--flips` random byte flips, dtypes, shapes, NaN/Inf, other architectures, nesting, zip
members, code). Prints cases tried, outcomes by kind, the slowest case and the peak resident memory.
Exit code 1 when any case ends in anything but a correct result or the project's own one-line error,
takes over 2 s, or memory passes 1 GiB above the start.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests"), os.path.dirname(os.path.abspath(__file__))]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--flips", type=int, default=1_000, help="random byte-flip mutations of the checkpoint")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import numpy as np
    from hypothesis import HealthCheck, given, settings

    import fuzzcases
    from conftest import train_tiny, write_image_folder
    from machine import machine

    start_rss = rss_mib()
    failures, outcomes, slowest = [], collections.Counter(), ("", 0.0)

    def record(kind: str, name: str, fn):
        nonlocal slowest
        t0 = time.perf_counter()
        try:
            outcome = fn()
        except Exception as e:  # noqa: BLE001 - anything else is a bug to report
            outcome = f"BUG {type(e).__name__}"
            failures.append(f"{kind} {name}: {type(e).__name__}: {str(e)[:200]}")
        dt = time.perf_counter() - t0
        if dt > slowest[1]:
            slowest = (f"{kind} {name}", dt)
        if dt > 2.0:
            failures.append(f"{kind} {name}: took {dt:.2f} s")
        outcomes[(kind, outcome)] += 1

    @settings(max_examples=args.images, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzzcases.image_case())
    def images(case):
        name, blob = case
        record("image", name, lambda: fuzzcases.check_image(blob))

    t0 = time.perf_counter()
    images()
    t_images = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_image_folder(os.path.join(tmp, "data"), n_train=64, n_test=16, size=16)
        ckpt = train_tiny(pathlib.Path(tmp), folder, epochs=3, progress=False)
        blob = open(ckpt, "rb").read()
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for name, mutated in fuzzcases.checkpoint_cases(blob, np.random.default_rng(args.seed), flips=args.flips):
        record("checkpoint", name, lambda: fuzzcases.check_checkpoint(mutated, image))
    t_ckpt = time.perf_counter() - t0
    peak = rss_mib()

    print(f"fuzz run on {machine()}")
    n_img = sum(v for (k, _), v in outcomes.items() if k == "image")
    n_ck = sum(v for (k, _), v in outcomes.items() if k == "checkpoint")
    print(f"images:      {n_img:,} cases in {t_images:.0f} s")
    print(f"checkpoints: {n_ck:,} cases in {t_ckpt:.0f} s")
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"  {kind:<11} {outcome:<16} {n:>7,}")
    print(f"slowest case: {slowest[0]} ({slowest[1]:.2f} s)")
    print(f"peak resident memory: {peak:.0f} MiB ({peak - start_rss:+.0f} MiB over the start)")
    if peak - start_rss > 1024:
        failures.append(f"memory grew by {peak - start_rss:.0f} MiB")
    print(f"code executed: {'YES' if os.path.exists('/tmp/cnnlib-fuzz-pwned') else 'no'}")
    for f in failures[:20]:
        print("FAIL", f)
    return 1 if failures or os.path.exists("/tmp/cnnlib-fuzz-pwned") else 0


if __name__ == "__main__":
    sys.exit(main())
