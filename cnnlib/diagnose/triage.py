"""A verdict for every misclassified test image, with the evidence that led to it.

    records = triage_for_checkpoint(model)                 # stored test predictions + cached feature indexes
    records = triage_for_checkpoint(model, data="copy/")   # another test folder (re-evaluated), same training images
    records = triage(meta, probs, targets, features_test, features_train, train_labels)   # the rule on any signals
    records = triage(meta, probs, targets, features_test)  # no training images: neighbours among the test images

One record per misclassified image, in test order: {"index", "label", "predicted" (class indices), "verdict",
"confidence" (in [0, 1]), "evidence"}; `to_json` adds the class names and the image file (`path`, a folder's
data only). The evidence (every number measured on the test set itself):

    label_quality          cleanlab's label quality of the given label (self-confidence: p(given label)), 0..1
    cleanlab_issue         cleanlab's find_label_issues flags the image (per-class thresholds)
    neighbors              the k nearest training images (cosine similarity of penultimate features): indices,
                           labels, agree_predicted / agree_given (fraction of the k with that label), among
                           ("train"; "test" when the data has no training images: the other test images, with
                           their given labels, leave-one-out, e.g. an imported model with only a test folder)
    margin                 top-1 minus top-2 probability; top2 [[class, prob], [class, prob]]
    distance               1 - mean cosine similarity to those k training images
    distance_percentile    fraction of the test images whose distance is smaller (1: farthest of all)
    confidence             top-1 probability; confidence_percentile: fraction of test images less confident
    rule                   the line of the decision list that decided

The rule (`Rule`, thresholds in one place) is a decision list, first match wins:

    1. out of distribution  distance_percentile >= ood_distance and confidence_percentile <= ood_confidence,
                            or distance_percentile >= ood_distance_alone
    2. label error          label_quality <= label_quality and agree_predicted >= label_agree and
                            agree_given <= label_given_agree
    3. ambiguous            margin <= ambiguous_margin and the neighbours are split (no class holds more than
                            ambiguous_split of them)
    4. model error          everything else

The defaults were set on CIFAR-10 (resnet9.pt, 300 flipped test labels, seed 0) and checked on other draws
(bench/bench_triage.py --seed 1, 2): flipped images sit among training images of their true class (small
distance, neighbours agree with the prediction, p(given label) tiny), real mistakes mostly do not.

Confidence of the verdict (0..1): out of distribution, the distance percentile; label error, the mean of
(1 - label quality), agree_predicted and the confidence percentile; ambiguous, 0.5 + 0.5 (1 - margin /
ambiguous_margin); model error, 0.5 when the given label keeps a probability above label_quality, plus half
the larger of agree_given and (1 - distance percentile).
CLI: python -m cnnlib triage CKPT [--data PATH] [--json] [--out FILE].
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np

from cnnlib.errors import CNNLibError

__all__ = ["Rule", "VERDICTS", "triage", "triage_for_checkpoint", "to_json", "format_table", "triage_main",
           "folder_test_files", "cached_test_predictions"]

VERDICTS = ("label error", "ambiguous", "out of distribution", "model error")


@dataclass(frozen=True)
class Rule:
    """The decision list's thresholds (see the module docstring for the order)."""
    k: int = 10                      # count: training images compared with each test image
    ood_distance: float = 0.98       # percentile 0..1 of feature distance among the test images: far ...
    ood_confidence: float = 0.25     # percentile 0..1 of top-1 probability among the test images: ... and unsure
    ood_distance_alone: float = 0.995  # percentile 0..1 of feature distance: this far is OOD whatever the confidence
    label_quality: float = 0.05      # probability 0..1 the model gives the given label: at most this
    label_agree: float = 0.5         # fraction 0..1 of the k neighbours labelled as predicted: at least this
    label_given_agree: float = 0.1   # fraction 0..1 of the k neighbours labelled as given: at most this
    ambiguous_margin: float = 0.2    # probability 0..1, top-1 minus top-2: at most this
    ambiguous_split: float = 0.7     # fraction 0..1: no class holds more than this of the k neighbours

    def check(self) -> "Rule":
        if self.k < 1:
            raise CNNLibError(f"the rule needs at least 1 neighbour, not k={self.k}")
        for name, v in asdict(self).items():
            if name != "k" and not 0.0 <= float(v) <= 1.0:
                raise CNNLibError(f"the rule's {name} must lie in [0, 1], not {v}")
        return self


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    """Fraction of the other values strictly smaller than each (0 .. 1), ties share the lower rank."""
    s = np.sort(values)
    return np.searchsorted(s, values, side="left") / max(len(values) - 1, 1)


def _unit(f) -> np.ndarray:
    f = np.asarray(f, np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def _nearest(features_test, features_train, k: int, chunk: int = 1024, leave_one_out: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 (N, k), cosine similarities float32 (N, k)) of the k nearest training rows, exact.
    leave_one_out: the reference rows are the queries themselves (N == M) and row i is never its own neighbour."""
    from cnnlib.diagnose.neighbors import Index
    train = _unit(features_train)
    index = Index(train, np.zeros(len(train), np.int64))
    q = _unit(features_test)
    extra = int(leave_one_out)                      # one more, then drop row i itself from row i's list
    idx = np.empty((len(q), k), np.int64)
    sim = np.empty((len(q), k), np.float32)
    for i in range(0, len(q), chunk):               # (chunk, M) similarities at a time: bounded memory
        ii, ss = index.query(q[i:i + chunk], k + extra)                   # (B, k + extra)
        if extra:
            keep = ii != np.arange(i, i + len(ii))[:, None]               # (B, k + 1): False at row i itself
            keep[keep.all(1), k] = False            # itself not in the list (ties of duplicates): drop the last
            ii, ss = ii[keep].reshape(len(ii), k), ss[keep].reshape(len(ii), k)
        idx[i:i + chunk], sim[i:i + chunk] = ii, ss
    return idx, sim


def triage(meta: dict, probs, targets, features_test, features_train=None, train_labels=None,
           rule: Rule | None = None, preds=None) -> list[dict]:
    """Verdicts for the misclassified rows of probs (N, K) / targets (N,), given penultimate features of the
    test images (N, D) and of the training images (M, D) with their labels (M,); features_train None: the
    neighbours are the other test images with their given labels. meta: the checkpoint's (only "classes" is
    read, to check K). Records as in the module docstring, class indices."""
    from cnnlib.diagnose.labels import label_issues
    rule = (rule or Rule()).check()
    p = np.asarray(probs, np.float64)
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    among = "test" if features_train is None else "train"
    f_test = np.asarray(features_test)
    f_train = f_test if among == "test" else np.asarray(features_train)
    y_train = y if among == "test" else np.asarray(train_labels).astype(np.int64).reshape(-1)
    n = len(y)
    if p.ndim != 2 or len(p) != n or n < 2:
        raise CNNLibError(f"triage needs N >= 2 labels and (N, K) probabilities, got {y.shape} and {p.shape}")
    k_cls = p.shape[1]
    classes = list((meta or {}).get("classes") or range(k_cls))
    if len(classes) != k_cls:
        raise CNNLibError(f"the probabilities have {k_cls} columns but the checkpoint has {len(classes)} classes")
    if f_test.ndim != 2 or len(f_test) != n or f_train.ndim != 2 or f_train.shape[1] != f_test.shape[1]:
        raise CNNLibError(f"triage needs test features (N, D) and training features (M, D), got "
                          f"{f_test.shape} and {f_train.shape}")
    if len(y_train) != len(f_train) or len(y_train) == 0:
        raise CNNLibError(f"triage needs one label per training image, got {len(y_train)} for {len(f_train)}")
    pred = p.argmax(1) if preds is None else np.asarray(preds).astype(np.int64)

    issues = label_issues(y, p)                                       # cleanlab on the whole test set
    quality, flagged = issues["quality"], issues["is_issue"]
    k = min(rule.k, len(y_train) - (among == "test"))
    nn_idx, nn_sim = _nearest(f_test, f_train, k, leave_one_out=among == "test")   # (N, k)
    nn_lab = y_train[nn_idx]                                          # (N, k)
    distance = 1.0 - nn_sim.mean(1)                                   # (N,)
    dist_pct = _percentile_rank(distance)
    rows = np.arange(n)
    conf = p[rows, pred]
    conf_pct = _percentile_rank(conf)
    top2 = np.argsort(-p, axis=1, kind="stable")[:, :2]
    margin = p[rows, top2[:, 0]] - p[rows, top2[:, 1]]

    records = []
    for i in np.flatnonzero(pred != y):
        counts = np.bincount(nn_lab[i], minlength=k_cls) / k
        ev = {"label_quality": float(quality[i]), "cleanlab_issue": bool(flagged[i]),
              "neighbors": {"k": int(k), "indices": nn_idx[i].tolist(), "labels": nn_lab[i].tolist(),
                            "agree_predicted": float(counts[pred[i]]), "agree_given": float(counts[y[i]]),
                            "largest_share": float(counts.max()), "among": among},
              "margin": float(margin[i]), "top2": [[int(c), float(p[i, c])] for c in top2[i]],
              "distance": float(distance[i]), "distance_percentile": float(dist_pct[i]),
              "confidence": float(conf[i]), "confidence_percentile": float(conf_pct[i])}
        verdict, confidence, why = _decide(ev, rule)
        ev["rule"] = why
        records.append({"index": int(i), "label": int(y[i]), "predicted": int(pred[i]), "verdict": verdict,
                        "confidence": round(float(confidence), 4), "evidence": ev})
    return records


def _decide(ev: dict, r: Rule) -> tuple[str, float, str]:
    """(verdict, confidence in [0, 1], the rule line that matched) for one image's evidence."""
    nb, dp, cp = ev["neighbors"], ev["distance_percentile"], ev["confidence_percentile"]
    if dp >= r.ood_distance_alone or (dp >= r.ood_distance and cp <= r.ood_confidence):
        why = (f"distance percentile {dp:.3f} >= {r.ood_distance_alone}" if dp >= r.ood_distance_alone else
               f"distance percentile {dp:.3f} >= {r.ood_distance} and confidence percentile {cp:.3f} "
               f"<= {r.ood_confidence}")
        return "out of distribution", dp, why
    if (ev["label_quality"] <= r.label_quality and nb["agree_predicted"] >= r.label_agree
            and nb["agree_given"] <= r.label_given_agree):
        conf = (1 - ev["label_quality"] + nb["agree_predicted"] + cp) / 3
        return "label error", conf, (f"label quality {ev['label_quality']:.3f} <= {r.label_quality}, "
                                     f"{nb['agree_predicted']:.0%} of neighbours agree with the prediction, "
                                     f"{nb['agree_given']:.0%} with the label")
    if ev["margin"] <= r.ambiguous_margin and nb["largest_share"] <= r.ambiguous_split:
        conf = 0.5 + 0.5 * (1 - ev["margin"] / max(r.ambiguous_margin, 1e-9))
        return "ambiguous", conf, (f"margin {ev['margin']:.3f} <= {r.ambiguous_margin} and neighbours split "
                                   f"(largest share {nb['largest_share']:.0%} <= {r.ambiguous_split:.0%})")
    # model error: the label is plausible (its neighbours or its probability support it) and the image is typical
    conf = (ev["label_quality"] > r.label_quality) * 0.5 + 0.5 * max(nb["agree_given"], 1 - dp)
    return "model error", min(conf, 1.0), "no other line matched"


# -----------------------------------------------------------------------------
# from a checkpoint

def triage_for_checkpoint(model, data: str | None = None, root: str | None = None, rule: Rule | None = None,
                          progress: bool = False) -> dict:
    """Triage a checkpoint's test split: {"records", "paths" (files of a folder's test split, else None),
    "classes", "source" ("stored" or "computed" predictions), "rule", "among" ("train", or "test" when there are
    no training images)}. `data` replaces the checkpoint's test images (e.g. a copy with other labels); the
    training images stay the checkpoint's own unless `data` holds a train/ split; when neither has training
    images (an imported model with a test folder only), the neighbours are the other test images. Features
    come from the cached indexes (cnnlib.diagnose.neighbors), so a second run is fast."""
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import stored_predictions
    from cnnlib.diagnose.neighbors import index_for_checkpoint
    meta = getattr(model, "meta", None) or {}
    bar = (lambda s: s) if progress else (lambda s: None)
    test_index = index_for_checkpoint(model, "test", data, root, progress=bar("test features"))
    stored = stored_predictions(meta) if data is None else None
    if stored is not None and np.array_equal(stored["targets"], np.asarray(test_index.labels)):
        preds = stored
    else:
        x, y = load_checkpoint_split(meta, "test", data, root)      # other images may have the same labels:
        preds = cached_test_predictions(model, x, y, root, data, bar("test predictions"))   # never the stored ones
    train_index = None
    for d in ([data, None] if data is not None else [None]):      # `data`'s train/ split, else the checkpoint's
        try:
            if len(load_checkpoint_split(meta, "train", d, root)[1]) == 0:
                continue                                          # a test folder only: no training images
            train_index = index_for_checkpoint(model, "train", d, root, progress=bar("training features"))
            break
        except CNNLibError:
            if d is None:
                raise
    records = triage(meta, preds["probs"], preds["targets"], test_index.features,
                     None if train_index is None else train_index.features,
                     None if train_index is None else train_index.labels, rule, preds=preds["preds"])
    paths = folder_test_files(meta, data, root)
    paths = paths if paths is not None and len(paths) == len(preds["targets"]) else None
    return {"records": records, "paths": paths, "classes": list(meta.get("classes") or []),
            "source": preds["source"], "rule": asdict(rule or Rule()),
            "among": "test" if train_index is None else "train"}


def folder_test_files(meta: dict, data: str | None = None, root: str | None = None) -> list[str] | None:
    """The test split's image files, in order, when the data is a folder; else None."""
    from cnnlib.diagnose.compare import split_paths
    return split_paths(meta, "test", data, root)


def cached_test_predictions(model, x, y, root: str | None, data: str | None, progress: str | None) -> dict:
    """run_split on the test images, cached beside the feature indexes under (model, data spec, file list)."""
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec
    from cnnlib.diagnose.evaluate import MIN_PROB, run_split
    from cnnlib.diagnose.neighbors import _safe, model_key, read_entry, write_entry
    meta = getattr(model, "meta", None) or {}
    spec = checkpoint_data_spec(meta, data or "", root)
    files = hashlib.sha1(json.dumps(folder_test_files(meta, data, root)).encode()).hexdigest()[:16]
    key = f"{spec.key()}-test-{files}"
    expect = {"kind": "predictions", "model": model_key(model), "data": key, "n": len(y)}
    folder, name = cache_dir(spec.root), f"predictions-{expect['model']}-{_safe(key)}"
    y = np.asarray(y).astype(np.int64)
    hit = read_entry(folder, name, expect)
    if hit is not None and np.array_equal(hit[0]["targets"], y):
        probs = np.asarray(hit[0]["probs"], np.float32)
        losses = -np.log(np.maximum(probs[np.arange(len(y)), y], MIN_PROB)).astype(np.float32)
        return {"targets": y, "preds": probs.argmax(1), "probs": probs, "losses": losses, "source": "computed"}
    out = run_split(model, x, y, progress=progress)
    try:
        write_entry(folder, name, {"probs": out["probs"], "targets": y}, expect)
    except OSError:
        pass                                   # a read-only or full cache folder: computed again next time
    return out


def to_json(result: dict) -> list[dict]:
    """triage_for_checkpoint's result as the CLI's JSON list: class names, and the file when known."""
    classes, paths = result["classes"], result["paths"]
    name = (lambda c: classes[c]) if classes else str
    out = []
    for r in result["records"]:
        ev = json.loads(json.dumps(r["evidence"]))
        ev["neighbors"]["labels"] = [name(c) for c in ev["neighbors"]["labels"]]
        ev["top2"] = [[name(c), pr] for c, pr in ev["top2"]]
        out.append({"path": paths[r["index"]] if paths else None, "index": r["index"], "label": name(r["label"]),
                    "predicted": name(r["predicted"]), "verdict": r["verdict"], "confidence": r["confidence"],
                    "evidence": ev})
    return out


def format_table(rows: list[dict], n_test: int | None = None) -> str:
    """Text: a count per verdict, then one line per misclassified image (to_json's rows)."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    head = f"{len(rows)} misclassified" + (f" of {n_test} test images" if n_test else "") + ": " + \
        ", ".join(f"{c} {v}" for v, c in counts.items())
    w = max([len(str(r["label"])) for r in rows] + [5])
    lines = [head, "", f"{'index':>6}  {'label':<{w}}  {'predicted':<{max(w, 9)}}  {'verdict':<19}  conf  "
             "quality  agree  dist%  file"]
    for r in rows:
        ev = r["evidence"]
        lines.append(f"{r['index']:>6}  {str(r['label']):<{w}}  {str(r['predicted']):<{max(w, 9)}}  "
                     f"{r['verdict']:<19}  {r['confidence']:.2f}  {ev['label_quality']:7.3f}  "
                     f"{ev['neighbors']['agree_predicted']:5.0%}  {ev['distance_percentile']:5.3f}  "
                     f"{r['path'] or ''}")
    return "\n".join(lines)


def triage_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib triage",
                                description="A verdict (label error, ambiguous, out of distribution, model error) "
                                            "with its evidence for every misclassified test image.")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="test images to triage instead of the checkpoint's own (a dataset name or ImageFolder)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--json", action="store_true", help="a JSON list, one record per misclassified image")
    p.add_argument("--out", metavar="FILE", help="write the output to FILE instead of the terminal")
    args = p.parse_args(argv)
    from cnnlib.inference import load_model
    model = load_model(args.checkpoint, "cpu")
    result = triage_for_checkpoint(model, args.data, args.data_root, progress=sys.stderr.isatty())
    if result["among"] == "test":
        print("note: the data has no training images, so each image's neighbours are the other test images "
              "(with their given labels)", file=sys.stderr)
    rows = to_json(result)
    text = json.dumps(rows, indent=1) if args.json else format_table(rows)
    if args.out:
        from cnnlib.io.files import atomic_write
        atomic_write(args.out, lambda f: f.write((text + "\n").encode()))
        print(f"wrote {len(rows)} verdicts to {args.out}")
    else:
        print(text)
    return 0
