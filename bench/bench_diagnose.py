"""Timings of "why is the model wrong" (label issues, TracIn influence, neighbours, 2-D maps, CAM family,
faithfulness) on CPU.

    python bench/bench_diagnose.py [--model simple_cnn] [--repeats 5] [--faith-n 20] [--skip-maps]
    python bench/bench_diagnose.py --influence-only         # the influence rows alone (under a minute)

Uses the shipped checkpoints (checkpoints/<model>.pt, checkpoints/resnet9.pt) and their CIFAR-10 data when
it is on disk (.cache/cifar10-jpeg; rows that need pixels are skipped otherwise). The neighbour index and
the 2-D maps are cached in the data root's cnnlib-cache/ folder; this script times a cold build once (it
rebuilds on purpose), then the cached reads. Influence: one query over resnet9's training features (computed or
read from the cache first, not counted), the closed form against the old path (the query's features from
penultimate_features' folded copy, then Captum's TracInCPFast over a DataLoader of the features) in the same run,
and a synthetic 1,000-class head (45,000 x 512 features) whose gradients are too big to keep (chunked).
Exit code 1 when a target is missed.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_name, timed  # noqa: E402
from cnnlib.explain import attribution
from cnnlib.explain import faithfulness
from cnnlib.explain import influence
from cnnlib.diagnose import labels
from cnnlib.diagnose import neighbors
from cnnlib.diagnose import projection
from cnnlib.data.spec import checkpoint_data_spec, load_checkpoint_split
from cnnlib.data.cache import cache_dir
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model
from cnnlib.models.anatomy import penultimate_features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def once(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt(t: float) -> str:
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def knn_accuracy(xy: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """3-fold k-nearest-neighbour accuracy in the 2-D map: how well it separates the classes."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    return float(cross_val_score(KNeighborsClassifier(k), xy, y, cv=3).mean())


def influence_rows(row, r9, repeats: int) -> None:
    """TracIn proponents / opponents of one resnet9 test image over its ~45,000 training images."""
    from torch import nn
    x_train, y_train = load_checkpoint_split(r9.meta, "train")
    x_test, _ = load_checkpoint_split(r9.meta, "test")
    t, f = once(lambda: influence.cached_train_features(r9, x_train, y_train))
    row(f"influence: resnet9 training features {f.shape[0]:,} x {f.shape[1]} (once; not counted)", t)
    imgs = iter([np.array(x_test[i]) for i in range(1000)])
    y = np.asarray(y_train)
    t, res = once(lambda: influence.proponents_opponents(r9, next(imgs), train_y=y, features=f, k=8))
    row("influence query, first (keeps the training-side gradients)", t, 5.0)
    new = timed(lambda: influence.proponents_opponents(r9, next(imgs), train_y=y, features=f, k=8), repeats)
    row("influence query, top 8 both ends (closed form)", new, 5.0)
    cap = timed(lambda: influence.proponents_opponents(r9, next(imgs), train_y=y, features=f, k=8,
                                                       engine="captum"), max(1, repeats // 2))
    row("influence query, engine='captum' (TracInCPFast scoring)", cap, None, f"{cap / new:.0f}x the closed form")

    def old():                                   # the path before the closed form, step by step
        out = penultimate_features(r9, torch.from_numpy(next(imgs))[None])          # folded copy of the network
        w, b, s = influence._head(r9, out["layer"], out["features"][0], out["logits"][0])
        scores = influence._captum(w, b, s, f, y, out["features"][0], int(out["preds"][0]), 4096)
        return torch.topk(torch.from_numpy(scores), 8)
    t_old = timed(old, max(1, repeats // 2))
    row("influence query, old path (penultimate_features + Captum)", t_old, None, f"{t_old / new:.0f}x the new one")

    torch.manual_seed(0)                         # 1,000 classes: G (45,000 x 1,000) is 180 MB, recomputed in chunks
    big = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 1000)).eval()
    big.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_shape": [3, 8, 8]}
    fb = np.abs(np.random.default_rng(0).normal(size=(45_000, 512))).astype(np.float32)
    yb = np.random.default_rng(1).integers(0, 1000, 45_000)
    qb = np.random.default_rng(2).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    t = timed(lambda: influence.proponents_opponents(big, qb, train_y=yb, features=fb, k=8), max(1, repeats // 2))
    row("influence query, 1,000 classes, 45,000 x 512 (chunks of 4,096)", t, 5.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="simple_cnn", help="checkpoints/<model>.pt for neighbours, maps and CAMs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--faith-n", type=int, default=20, help="test images averaged in the faithfulness table")
    p.add_argument("--map-n", type=int, default=10_000, help="points in the t-SNE / UMAP maps")
    p.add_argument("--skip-maps", action="store_true", help="skip t-SNE and UMAP (minutes on 2 cores)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave the default)")
    p.add_argument("--influence-only", action="store_true", help="only the TracIn influence rows")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs{load}")
    failed = 0

    def row(what, seconds, target=None, note=""):
        nonlocal failed
        ok = target is None or seconds <= target
        failed += not ok
        tgt = "" if target is None else fmt(target)
        print(f"{what:<60} {tgt:>9} {fmt(seconds):>10}  {'' if target is None else ('pass' if ok else 'FAIL')}"
              f"  {note}", flush=True)

    # 1. label issues from resnet9's stored test probabilities (no data needed)
    r9 = load_model(os.path.join(ROOT, "checkpoints", "resnet9.pt"))
    if args.influence_only:
        try:
            influence_rows(row, r9, args.repeats)
        except CNNLibError as e:
            print(f"(no CIFAR-10 pixels: {e}; the influence rows need them)")
            return 1
        return 1 if failed else 0
    labels.label_issues_for(r9.meta)                       # warm-up: cleanlab's lazy imports
    t, issues = once(lambda: labels.label_issues_for(r9.meta))
    row("label issues, resnet9, 10,000 test images (cleanlab)", t, 2.0, f"{issues['n_issues']} flagged")

    model = load_model(os.path.join(ROOT, "checkpoints", f"{args.model}.pt"))
    try:
        x_test, y_test = load_checkpoint_split(model.meta, "test")
        x_train, y_train = load_checkpoint_split(model.meta, "train")
    except CNNLibError as e:
        print(f"(no CIFAR-10 pixels: {e}; the rows below need them)")
        return 1 if failed else 0
    spec = checkpoint_data_spec(model.meta)
    influence_rows(row, r9, args.repeats)

    # 2. neighbour index of the training split
    folder, key = cache_dir(spec.root), f"{spec.key()}-train"
    t, index = once(lambda: neighbors.build_index(model, x_train, y_train, folder, key, rebuild=True))
    row(f"neighbour index: build, {len(index):,} training images (once)", t, None, f"D = {index.dim}, {index.path}")
    t = timed(lambda: neighbors.build_index(model, x_train, y_train, folder, key), args.repeats)
    row("neighbour index: open the cached file (header + CRC check)", t, 1.0)
    feats = penultimate_features(model, x_test[:200])["features"]
    qs = iter(np.concatenate([feats] * 10))
    t = timed(lambda: index.query(next(qs), k=9), min(50, args.repeats * 10))
    row(f"neighbour query, top 9 of {len(index):,} (matrix-vector product)", t, 0.1)
    half = neighbors.build_index(model, x_train, y_train, folder, key, dtype="float16")
    t = timed(lambda: half.query(next(qs), k=9), min(50, args.repeats * 10))
    row("neighbour query, float16 index", t, 0.1)
    one = x_test[0]
    t = timed(lambda: neighbors.neighbors_of(model, index, one, k=9), args.repeats)
    row("neighbors_of one test image (features + query)", t, 0.2)
    hits = neighbors.neighbors_of(model, index, x_test[:500], k=9)
    agree = float((hits["labels"][:, 0] == np.asarray(y_test[:500])).mean())
    print(f"    nearest training image has the test image's label for {agree:.1%} of 500 test images")

    # 3. 2-D maps of the test split's penultimate features
    if not args.skip_maps:
        n = min(args.map_n, len(y_test))
        idx = projection.subsample(len(y_test), n, 0)
        t, out = once(lambda: penultimate_features(model, x_test[idx]))
        row(f"penultimate features of {n:,} test images", t)
        y = np.asarray(y_test)[idx]
        for method in projection.METHODS:
            t, xy = once(lambda method=method: projection.project(out["features"], method, seed=0))
            row(f"{projection.METHOD_LABELS[method]} of {n:,} x {out['features'].shape[1]} features", t, None,
                f"2-D 10-NN accuracy {knn_accuracy(xy, y):.3f}")
        ckey = f"{neighbors.model_key(model)}-{spec.key()}-test"
        projection.embedding(out["features"], "tsne", folder, ckey)
        t = timed(lambda: projection.embedding(out["features"], "tsne", folder, ckey), args.repeats)
        row("t-SNE map read back from the cache", t, 0.5)

    # 4. CAM family and faithfulness on one 32x32 image, every method
    image = torch.from_numpy(np.array(x_test[3])).float() / 255
    print(f"\n{'method':<22} {'map':>10} {'del/ins 16 steps':>17}  deletion AUC  insertion AUC  (one image)")
    for m in attribution.METHODS:
        t_map = timed(lambda m=m: attribution.attribute(model, image, m), args.repeats)
        r = attribution.attribute(model, image, m)
        t_di = timed(lambda r=r: faithfulness.deletion_insertion(model, image, r["heatmap"], r["target"]), args.repeats)
        c = faithfulness.deletion_insertion(model, image, r["heatmap"], r["target"])
        print(f"{attribution.METHOD_LABELS[m]:<22} {fmt(t_map):>10} {fmt(t_di):>17}  {c['deletion_auc']:12.3f}"
              f"  {c['insertion_auc']:13.3f}", flush=True)

    # 5. faithfulness over several test images
    if args.faith_n:
        sel = np.random.default_rng(0).choice(len(y_test), args.faith_n, replace=False)
        for baseline in ("black", "blur"):
            t, rows = once(lambda baseline=baseline: faithfulness.faithfulness_table(model, np.array(x_test[np.sort(sel)]),
                                                                   attribution.METHODS, baseline=baseline))
            print(f"\nfaithfulness over {args.faith_n} test images, baseline {baseline} ({fmt(t)} in all)")
            print(f"{'method':<22} {'deletion AUC':>13} {'insertion AUC':>14} {'ins - del':>10}")
            for r in sorted(rows, key=lambda r: -r["score"]):
                print(f"{r['label']:<22} {r['deletion_auc']:7.3f} ±{r['deletion_auc_sem']:.3f}"
                      f" {r['insertion_auc']:8.3f} ±{r['insertion_auc_sem']:.3f} {r['score']:10.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
