"""Two models side by side on the same images, and selections that carry over to other tools.

    c = compare(targets, preds_a, preds_b, classes)          # or compare_checkpoints(meta_a, meta_b)
    c["table"]     [[both right, only a right], [only b right, both wrong]]  (ints)
    c["mcnemar"]   {"statistic", "p_value", "exact" (bool), "discordant" (only a + only b)}
    c["per_class"] [{"class", "acc_a", "acc_b", "diff" (acc_b - acc_a), "support"}]
    c["only_a"], c["only_b"]  int64 indices a got right and b wrong (and the reverse)
    c["acc_a"], c["acc_b"], c["n"]

McNemar's test asks whether the two models' error rates differ, using only the images where exactly one
of them is right (b = only a right, c = only b right). With fewer than 25 such images it is the exact
two-sided binomial test of b out of b + c at p = 1/2 (statistic: min(b, c)); otherwise the chi-square
statistic with continuity correction (|b - c| - 1)^2 / (b + c), 1 degree of freedom (scipy.stats).

    blob = selection_csv(indices, targets, preds, probs, classes, paths=split_paths(meta), scores=..., tag="")
    # bytes of a CSV: index, path, label, prediction, confidence, score, tag (st.download_button takes it)

`split_paths(meta, split)` gives the image files of an ImageFolder checkpoint's split in the order of
`load_checkpoint_split` (cnnlib.data.cache.scan: torchvision's ImageFolder / make_dataset order); None for
named datasets (CIFAR-10 from torchvision, MNIST: no files), so the CSV's path column is then empty.
"""
from __future__ import annotations

import csv
import io

import numpy as np
from cnnlib.errors import CNNLibError

EXACT_BELOW = 25   # discordant pairs under which McNemar uses the exact binomial test


def mcnemar(only_a: int, only_b: int) -> dict:
    """McNemar's test on the discordant counts: {"statistic", "p_value", "exact", "discordant"}."""
    from scipy import stats
    b, c = int(only_a), int(only_b)
    n = b + c
    if n < EXACT_BELOW:
        p = float(stats.binomtest(min(b, c), n, 0.5).pvalue) if n else 1.0
        return {"statistic": float(min(b, c)), "p_value": min(p, 1.0), "exact": True, "discordant": n}
    stat = (abs(b - c) - 1) ** 2 / n
    return {"statistic": float(stat), "p_value": float(stats.chi2.sf(stat, 1)), "exact": False, "discordant": n}


def compare(targets, preds_a, preds_b, classes) -> dict:
    """Where two models' predictions on the same images differ (see the module docstring)."""
    t = np.asarray(targets).astype(np.int64).reshape(-1)
    a = np.asarray(preds_a).astype(np.int64).reshape(-1)
    b = np.asarray(preds_b).astype(np.int64).reshape(-1)
    classes = list(classes)
    if not (len(t) == len(a) == len(b)) or len(t) == 0:
        raise CNNLibError(f"comparing needs the same images: got {len(t)} targets and {len(a)} / {len(b)} predictions")
    k = len(classes)
    if t.min() < 0 or t.max() >= k:
        raise CNNLibError(f"targets must be class indices in 0..{k - 1}")
    ra, rb = a == t, b == t                                                   # (N,) right or not
    table = [[int((ra & rb).sum()), int((ra & ~rb).sum())],
             [int((~ra & rb).sum()), int((~ra & ~rb).sum())]]
    support = np.bincount(t, minlength=k)
    acc_a = np.bincount(t, weights=ra, minlength=k) / np.maximum(support, 1)
    acc_b = np.bincount(t, weights=rb, minlength=k) / np.maximum(support, 1)
    per_class = [{"class": c, "acc_a": float(x), "acc_b": float(y), "diff": float(y - x), "support": int(s)}
                 for c, x, y, s in zip(classes, acc_a, acc_b, support)]
    return {"table": table, "mcnemar": mcnemar(table[0][1], table[1][0]), "per_class": per_class,
            "only_a": np.flatnonzero(ra & ~rb).astype(np.int64), "only_b": np.flatnonzero(~ra & rb).astype(np.int64),
            "acc_a": float(ra.mean()), "acc_b": float(rb.mean()), "n": len(t)}


def compare_checkpoints(meta_a: dict, meta_b: dict) -> dict:
    """compare() on two checkpoints' stored test predictions; CNNLibError when they are not the same images."""
    from cnnlib.diagnose.evaluate import stored_predictions
    pa, pb = stored_predictions(meta_a), stored_predictions(meta_b)
    if pa is None or pb is None:
        raise CNNLibError("both checkpoints need stored test predictions: evaluate them on their dataset first")
    if list(meta_a.get("classes") or []) != list(meta_b.get("classes") or []):
        raise CNNLibError("the two checkpoints have different classes, so their predictions cannot be compared")
    if not np.array_equal(pa["targets"], pb["targets"]):
        raise CNNLibError("the two checkpoints were tested on different images (their test labels differ)")
    return compare(pa["targets"], pa["preds"], pb["preds"], meta_a["classes"])


# -----------------------------------------------------------------------------
# selections

def split_paths(meta: dict, split: str = "test", data: str | None = None, root: str | None = None) -> list[str] | None:
    """Image files of a checkpoint's split, in load_checkpoint_split's order; None for named datasets.

    Follows cnnlib.data.datasets: test/ when the folder has one, else the test split carved from train/ with the
    checkpoint's split seed; val and train are the validation split and the rest of train/ (after carving)."""
    from cnnlib.data.datasets import NAMED, SPLITS
    from cnnlib.data.spec import checkpoint_data_spec, folder_split
    if split not in SPLITS:
        raise CNNLibError(f"unknown split {split!r}; use train, val or test")
    spec = checkpoint_data_spec(meta, data or "", root)
    if spec.source in NAMED:
        return None
    return [path for path, _ in folder_split(spec, split) or []]


def selection_csv(indices, targets, preds, probs, classes, paths=None, scores=None, tag: str = "") -> bytes:
    """A CSV (UTF-8 bytes) with one row per selected image: index, path, label, prediction, confidence
    (probability of the prediction), score (e.g. label quality or loss; empty when None), tag.

    indices: rows of the split; targets, preds (N,), probs (N, K), paths (N,) and scores (N,) are whole-split
    arrays indexed by them."""
    idx = np.asarray(indices).astype(np.int64).reshape(-1)
    t, p = np.asarray(targets).astype(np.int64), np.asarray(preds).astype(np.int64)
    probs = np.asarray(probs, np.float32)
    n, classes = len(t), list(classes)
    if len(p) != n or probs.shape != (n, len(classes)) or (paths is not None and len(paths) != n) \
            or (scores is not None and len(scores) != n):
        raise CNNLibError(f"selection_csv needs whole-split arrays of the same length (targets {n}, preds {len(p)}, "
                          f"probs {probs.shape} for {len(classes)} classes)")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise CNNLibError(f"selected indices must lie in 0..{n - 1}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "label", "prediction", "confidence", "score", "tag"])
    for i in idx.tolist():
        w.writerow([i, "" if paths is None else paths[i], classes[t[i]], classes[p[i]], f"{probs[i, p[i]]:.4f}",
                    "" if scores is None else f"{float(scores[i]):.6g}", tag])
    return buf.getvalue().encode("utf-8")
