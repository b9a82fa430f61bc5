"""Evaluation: predictions for a split, the metrics a learner reads, and error queries.

    preds = predictions_for(model, "test")            # the checkpoint's stored test predictions, or
    preds = run_split(model, x_uint8, y)              # computed: targets, preds, probs (N, K), losses
    report = compute_report(preds["targets"], preds["probs"], model.meta["classes"], preds["losses"])
    query_misclassified(preds, true_class=3, sort="loss", images=x_uint8)

CLI: python -m cnnlib evaluate CKPT [--data NAME|PATH] [--data-root DIR] [--split test|val] [--json]
Everything returned is numpy arrays or plain JSON-serialisable dicts, never figures.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.modelops import forward_batches, inference_copy, model_device, norm_stats

MIN_PROB = 1e-7   # floor for probabilities when losses come from stored float16 probabilities (loss <= 16.1)


# -----------------------------------------------------------------------------
# predictions

def run_split(model: nn.Module, x, y, batch_size: int | None = None, progress: str | None = None) -> dict:
    """x (N, C, H, W) uint8 (or float in [0, 1]; a tensor, array or memmap), y (N,) -> targets, preds int64
    (N,), probs float32 (N, K), losses float32 (N,) (cross-entropy per sample). Streams batches through
    modelops.forward_batches on a private eval() copy with BatchNorm folded into the convs, so memory
    does not grow with N. Default batch: modelops.batch_size_for the image size (256 at 32 px keeps
    activations near cache size: on a 2-core CPU, 1000-image batches ran about 2x slower). `progress`: a
    tqdm label."""
    y = torch.as_tensor(np.asarray(y)).long()
    if len(np.shape(x)) != 4 or len(x) != len(y) or len(x) == 0:
        raise CNNLibError(f"run_split needs images (N, C, H, W) and N labels, "
                          f"got {tuple(np.shape(x))} and {tuple(y.shape)}")
    net, channels_last = inference_copy(model)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    # Results go into arrays allocated once: small per-batch tensors kept in a list pinned the heap between
    # the batches' freed activations, and resident memory grew by ~0.4 MB per 224-px image (glibc malloc).
    probs = losses = None
    for i, logits in forward_batches(net, x, mean, std, batch_size, channels_last=channels_last, progress=progress):
        logp = torch.log_softmax(logits, dim=1)                                        # (B, K)
        if probs is None:
            probs = np.empty((len(y), logp.shape[1]), np.float32)                       # (N, K)
            losses = np.empty(len(y), np.float32)                                       # (N,)
        yb = y[i:i + len(logp)].to(logp.device)
        losses[i:i + len(logp)] = (-logp.gather(1, yb[:, None])[:, 0]).cpu().numpy()
        probs[i:i + len(logp)] = logp.exp_().cpu().numpy()
    return {"targets": y.numpy().astype(np.int64), "preds": probs.argmax(1).astype(np.int64),
            "probs": probs, "losses": losses, "source": "computed"}


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def stored_predictions(meta: dict | None) -> dict | None:
    """The checkpoint's test_predictions as run_split's dict (losses from the stored probs), or None."""
    tp = (meta or {}).get("test_predictions")
    if not tp or not all(k in tp for k in ("targets", "probs")):
        return None
    targets = _np(tp["targets"]).astype(np.int64)
    probs = _np(tp["probs"]).astype(np.float32)
    preds = _np(tp["preds"]).astype(np.int64) if "preds" in tp else probs.argmax(1)
    k = len((meta or {}).get("classes", [])) or (probs.shape[1] if probs.ndim == 2 else 0)
    if (probs.ndim != 2 or probs.shape != (len(targets), k) or preds.shape != targets.shape
            or (len(targets) and (targets.min() < 0 or targets.max() >= k or preds.min() < 0 or preds.max() >= k))):
        raise CNNLibError(f"the checkpoint's stored test predictions are inconsistent (targets {targets.shape}, "
                          f"preds {preds.shape}, probs {probs.shape} for {k} classes); "
                          "re-evaluate it on the dataset instead")
    losses = -np.log(np.maximum(probs[np.arange(len(targets)), targets], MIN_PROB)).astype(np.float32)
    return {"targets": targets, "preds": preds, "probs": probs, "losses": losses, "source": "stored"}


def predictions_for(model: nn.Module, split: str = "test", x=None, y=None, batch_size: int | None = None,
                    recompute: bool = False, progress: str | None = None) -> dict:
    """Stored test predictions when they fit the request (split "test", and no data given or the
    labels match them exactly); otherwise run_split on x, y."""
    stored = None if recompute or split != "test" else stored_predictions(getattr(model, "meta", None))
    if stored is not None:
        if y is None and x is None:
            return stored
        if y is not None and np.array_equal(_np(y).astype(np.int64), stored["targets"]):
            return stored
    if x is None or y is None:
        why = "it has no stored test predictions" if split == "test" else f"the {split} split is not stored"
        raise CNNLibError(f"evaluating this checkpoint on the {split} split needs the dataset ({why}); "
                          "pass the images and labels (--data on the command line)")
    return run_split(model, x, y, batch_size, progress=progress)


# -----------------------------------------------------------------------------
# metrics

def confusion_matrix(targets, preds, k: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(targets) * k + np.asarray(preds), minlength=k * k).reshape(k, k).astype(np.int64)


def calibration(confidence, correct, n_bins: int = 15) -> dict:
    """Reliability-diagram bins (equal width, (lower, upper]) and expected / maximum calibration error.

    ECE = sum_b (n_b / N) |accuracy_b - confidence_b|. Empty bins have None confidence / accuracy.
    """
    conf = np.asarray(confidence)
    conf = conf if np.issubdtype(conf.dtype, np.floating) else conf.astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds (edges[b], edges[b+1]], edges compared in the confidences' own precision (0.6f lands in (.5, .6])
    idx = np.searchsorted(edges[1:-1].astype(conf.dtype), conf, side="left")
    conf, correct = conf.astype(np.float64), np.asarray(correct, np.float64)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    filled = count > 0
    conf_b = np.where(filled, conf_sum / np.maximum(count, 1), 0.0)
    acc_b = np.where(filled, acc_sum / np.maximum(count, 1), 0.0)
    gap = np.abs(acc_b - conf_b)
    return {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(),
            "confidence": [float(c) if f else None for c, f in zip(conf_b, filled)],
            "accuracy": [float(a) if f else None for a, f in zip(acc_b, filled)],
            "count": count.astype(int).tolist(),
            "ece": float((count / max(len(conf), 1) * gap).sum()),
            "mce": float(gap[filled].max()) if filled.any() else 0.0}


def compute_report(targets, probs, classes, losses=None, n_bins: int = 15, preds=None, top: int = 20) -> dict:
    """Every metric of a split as a JSON-serialisable dict (see the module docstring of the CLI output)."""
    targets, probs = _np(targets).astype(np.int64), _np(probs)
    probs = probs.astype(np.float32) if probs.dtype not in (np.float32, np.float64) else probs
    classes = list(classes)
    n, k = probs.shape if probs.ndim == 2 else (0, 0)
    if n == 0 or len(targets) != n:
        raise CNNLibError(f"need N targets and (N, K) probabilities with N > 0, got {targets.shape} and {probs.shape}")
    if k != len(classes):
        raise CNNLibError(f"the probabilities have {k} columns but there are {len(classes)} classes")
    if targets.min() < 0 or targets.max() >= k:
        raise CNNLibError(f"targets must be class indices in 0..{k - 1}")
    preds = probs.argmax(1) if preds is None else _np(preds).astype(np.int64)
    rows = np.arange(n)
    if losses is None:
        losses = -np.log(np.maximum(probs[rows, targets], MIN_PROB))
    losses = _np(losses).astype(np.float64)
    correct = preds == targets

    cm = confusion_matrix(targets, preds, k)
    support, predicted, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    cm_norm = np.divide(cm, support[:, None], out=np.zeros((k, k)), where=support[:, None] > 0)

    top_k = min(5, k)
    top5 = np.argpartition(-probs, top_k - 1, axis=1)[:, :top_k] if top_k < k else np.tile(np.arange(k), (n, 1))
    confidence = probs[rows, preds]
    cal = calibration(confidence, correct, n_bins)
    wrong = np.flatnonzero(~correct)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")]
    return {
        "n": int(n),
        "classes": classes,
        "accuracy": float(correct.mean()),
        "top5_accuracy": float((top5 == targets[:, None]).any(1).mean()),
        "top5_k": int(top_k),
        "mean_loss": float(losses.mean()),
        "confusion_matrix": cm.tolist(),
        "confusion_normalized": cm_norm.tolist(),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support)],
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "ece": cal.pop("ece"),
        "mce": cal.pop("mce"),
        "calibration": cal,
        "most_confused": _most_confused(cm, top),
        "most_confident_wrong": order[:top].tolist(),
        "hardest": np.argsort(-losses, kind="stable")[:top].tolist(),
    }


def _most_confused(cm: np.ndarray, top: int) -> list[dict]:
    """The off-diagonal cells with the most images, largest first: [{"true", "pred", "count"}] (count > 0)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    cells = [np.unravel_index(int(i), off.shape) for i in flat]
    return [{"true": int(t), "pred": int(p), "count": int(off[t, p])} for t, p in cells if off[t, p] > 0]


# -----------------------------------------------------------------------------
# queries

def query_misclassified(preds: dict, true_class: int | None = None, pred_class: int | None = None,
                        sort: str = "confidence", limit: int | None = None, images=None,
                        only_wrong: bool = True) -> dict:
    """Samples (wrong ones unless only_wrong=False) filtered by true and/or predicted class, most
    confident (sort="confidence") or highest loss (sort="loss") first; sort="index" keeps data order.

    Returns indices int64 (M,), count (matches before `limit`), targets, preds, confidence float32
    (probability of the predicted class), losses float32, top3 [[(class, prob), ...] per sample],
    images uint8 (M, C, H, W) when `images` (N, C, H, W) is given, else None.
    """
    t, p = np.asarray(preds["targets"], np.int64), np.asarray(preds["preds"], np.int64)
    probs = np.asarray(preds["probs"], np.float32)
    losses = preds.get("losses")
    losses = (-np.log(np.maximum(probs[np.arange(len(t)), t], MIN_PROB)) if losses is None
              else np.asarray(losses)).astype(np.float32)
    mask = (t != p) if only_wrong else np.ones(len(t), bool)
    if true_class is not None:
        mask &= t == int(true_class)
    if pred_class is not None:
        mask &= p == int(pred_class)
    idx = np.flatnonzero(mask)
    confidence = probs[np.arange(len(t)), p]
    keys = {"confidence": confidence, "loss": losses, "index": None}
    if sort not in keys:
        raise CNNLibError(f"sort must be one of {list(keys)}, not {sort!r}")
    if keys[sort] is not None:
        idx = idx[np.argsort(-keys[sort][idx], kind="stable")]
    count = len(idx)
    if limit is not None:
        idx = idx[:max(int(limit), 0)]
    k3 = min(3, probs.shape[1])
    top3_idx = np.argsort(-probs[idx], axis=1, kind="stable")[:, :k3]
    top3 = [[(int(c), float(probs[i, c])) for c in row] for i, row in zip(idx, top3_idx)]
    out_images = None
    if images is not None:
        out_images = _np(images)[idx] if len(idx) else _np(images)[:0]
        out_images = np.ascontiguousarray(out_images).astype(np.uint8, copy=False)
    return {"indices": idx.astype(np.int64), "count": int(count), "targets": t[idx], "preds": p[idx],
            "confidence": confidence[idx], "losses": losses[idx], "top3": top3, "images": out_images}


def query_cell(preds: dict, true_class: int, pred_class: int, sort: str = "confidence",
               limit: int | None = None, images=None) -> dict:
    """The samples of one confusion-matrix cell (diagonal cells too)."""
    return query_misclassified(preds, true_class, pred_class, sort=sort, limit=limit, images=images,
                               only_wrong=False)


# -----------------------------------------------------------------------------
# text report and CLI

def format_report(report: dict, top: int = 10) -> str:
    classes = report["classes"]
    width = max(8, max(len(c) for c in classes))
    lines = [f"samples        {report['n']}",
             f"accuracy       {report['accuracy']:.2%}",
             f"top-{report.get('top5_k', 5)} accuracy {report['top5_accuracy']:.2%}",
             f"mean loss      {report.get('mean_loss', float('nan')):.4f}",
             f"ECE            {report['ece']:.4f}  ({len(report['calibration']['count'])} bins)", "",
             f"{'class':<{width}}  precision  recall     f1  support"]
    row = "{:<{w}}  {:9.3f}  {:6.3f}  {:5.3f}  {:7d}"
    for r in report["per_class"]:
        lines.append(row.format(r["class"], r["precision"], r["recall"], r["f1"], r["support"], w=width))
    if "macro" in report:
        m = report["macro"]
        lines.append(row.format("macro avg", m["precision"], m["recall"], m["f1"], report["n"], w=width))
    short = [c[:6] for c in classes]
    cell = max(6, len(str(max(max(r) for r in report["confusion_matrix"]))))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * (width + 2) + " ".join(f"{s:>{cell}}" for s in short)]
    for c, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"{c:<{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    lines += ["", f"most confidently wrong (first {top} indices): {report['most_confident_wrong'][:top]}",
              f"hardest, highest loss (first {top} indices): {report['hardest'][:top]}"]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cnnlib evaluate",
                                description="Metrics of a checkpoint on its test (or validation) split.")
    p.add_argument("checkpoint", help="a .pt checkpoint written by `python -m cnnlib train`")
    p.add_argument("--data", default=None, help="dataset name or ImageFolder path (default: the checkpoint's own)")
    p.add_argument("--data-root", default=None, help="where named datasets live")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: by image size)")
    p.add_argument("--recompute", action="store_true", help="ignore the stored test predictions")
    p.add_argument("--bins", type=int, default=15, help="calibration bins")
    return p


def evaluate_main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        from cnnlib.inference import load_model
        model = load_model(args.checkpoint, args.device)
        x = y = None
        stored_ok = args.split == "test" and args.data is None and not args.recompute \
            and stored_predictions(model.meta) is not None
        if not stored_ok:
            from cnnlib.data import spec as data_spec
            x, y = data_spec.load_checkpoint_split(model.meta, split=args.split, data=args.data, root=args.data_root)
        preds = predictions_for(model, args.split, x, y, batch_size=args.batch_size, recompute=args.recompute,
                                progress=f"evaluating {args.split}" if sys.stderr.isatty() else None)
        report = compute_report(preds["targets"], preds["probs"], model.meta["classes"], preds["losses"],
                                n_bins=args.bins, preds=preds["preds"])
    except CNNLibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report.update(split=args.split, source=preds["source"])
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.checkpoint}: {args.split} split ({preds['source']} predictions)\n")
        print(format_report(report))
    return 0
