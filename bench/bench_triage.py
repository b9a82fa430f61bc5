"""How well triage finds planted label errors, and how long it takes, on CIFAR-10.

    python bench/bench_triage.py [--checkpoint checkpoints/resnet9.pt] [--flips 300] [--seed 0] [--copy DIR]

Makes a copy of the checkpoint's test folder (.cache/cifar10-jpeg/test) of symbolic links in which `--flips`
images, drawn with `--seed`, sit in another class's folder (a wrong label, the class drawn at random), then
runs cnnlib.diagnose.triage.triage_for_checkpoint on the copy (re-evaluated: its labels differ from the stored
predictions) and prints the precision and recall of the verdict "label error" on the planted images, the
verdict counts, and the time of a first run and of a second one (features cached). Exit code 1 when the
goal (recall >= 0.8 at precision >= 0.5) is missed. The copy holds links only; nothing made from the images
is written outside the cache folder of the data root.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name  # noqa: E402
from cnnlib.data.spec import checkpoint_data_spec  # noqa: E402
from cnnlib.data.cache import classes_of  # noqa: E402
from cnnlib.diagnose.triage import VERDICTS, to_json, triage_for_checkpoint  # noqa: E402
from cnnlib.inference import load_model  # noqa: E402


def flipped_copy(test_dir: str, out: str, flips: int, seed: int) -> set[str]:
    """out/<class>/<file> links to every image of test_dir; `flips` of them linked from another (random) class's
    folder instead, named flip-<true class>-<file>. Returns the paths of the flipped links."""
    if os.path.exists(out):
        shutil.rmtree(out)
    classes = classes_of(test_dir)
    files = [(c, n) for c in classes for n in sorted(os.listdir(os.path.join(test_dir, c)))]
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(files), size=flips, replace=False).tolist())
    flipped = set()
    for c in classes:
        os.makedirs(os.path.join(out, c))
    for i, (c, n) in enumerate(files):
        src = os.path.abspath(os.path.join(test_dir, c, n))
        if i in chosen:
            other = classes[(classes.index(c) + int(rng.integers(1, len(classes)))) % len(classes)]
            dst = os.path.join(out, other, f"flip-{c}-{n}")
            flipped.add(os.path.abspath(dst))
        else:
            dst = os.path.join(out, c, n)
        os.symlink(src, dst)
    return flipped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/resnet9.pt")
    p.add_argument("--flips", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copy", default=None, help="folder for the flipped copy (default: /tmp/cnnlens-flipped-SEED)")
    args = p.parse_args()
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = load_model(args.checkpoint)
    spec = checkpoint_data_spec(model.meta)
    test_dir = os.path.join(spec.source, "test")
    copy = os.path.abspath(args.copy or f"/tmp/cnnlens-flipped-{args.seed}")
    flipped = flipped_copy(test_dir, copy, args.flips, args.seed)

    t0 = time.perf_counter()
    result = triage_for_checkpoint(model, data=copy, progress=sys.stderr.isatty())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = triage_for_checkpoint(model, data=copy)
    second = time.perf_counter() - t0

    rows = to_json(result)
    said = {os.path.abspath(r["path"]) for r in rows if r["verdict"] == "label error"}
    wrong = {os.path.abspath(r["path"]) for r in rows}
    hit = len(said & flipped)
    precision = hit / max(len(said), 1)
    recall = hit / max(len(flipped), 1)
    n_test = len(result["paths"] or [])
    print(f"machine: {cpu_name()}, torch threads {torch.get_num_threads()}")
    print(f"checkpoint {args.checkpoint}, test copy {copy}: {n_test} images, {len(flipped)} labels flipped "
          f"(seed {args.seed}), {len(flipped & wrong)} of them misclassified")
    print(f"{len(rows)} misclassified: " + ", ".join(f"{v} {sum(r['verdict'] == v for r in rows)}" for v in VERDICTS))
    print(f"label error: precision {precision:.3f} ({hit} of {len(said)}), recall {recall:.3f} "
          f"({hit} of {len(flipped)} planted)")
    print(f"time: first run {first:.1f} s (features and predictions computed), second run {second:.1f} s (cached)")
    ok = recall >= 0.8 and precision >= 0.5
    print("goal (recall >= 0.8 at precision >= 0.5): " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
