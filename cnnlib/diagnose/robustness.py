"""Robustness: accuracy under the 15 common corruptions of CIFAR-10-C / ImageNet-C at 5 severities.

    res = robustness(model, x_uint8, y, images=1000, seed=0)     # x (N, C, H, W) uint8, y (N,)
    res = robustness_for_checkpoint(model, images=1000)          # its test split, cached per checkpoint
    res["accuracy"]        {corruption: [acc at severity 1..5]};   res["clean_accuracy"]
    res["per_class"]       {corruption: [[acc of class k] per severity]} (None where a class has no image)
    res["first_flip"]      [{"index", "corruption", "severity"}]: clean-right images, lowest flipping severity first
    corrupt(x_hwc_uint8, "fog", 3, rng)                          # one image (H, W, C) uint8 -> the same shape

The corruptions themselves (CIFAR-10-C's definitions, batched) are in cnnlib.diagnose.corruptions; corrupt,
CORRUPTIONS, SEVERITIES and P are importable from here too. The sweep corrupts a batch of images (256 at 32 px) in
a worker thread while the model classifies the batch before it (numpy, scipy, OpenCV, PIL and PyTorch release the
GIL in their C code, so both cores work), through ONE inference copy of the model (BatchNorm folded). Each
(corruption, severity) draws from its own seeded generator, image after image: results are reproducible and do
not depend on the batch size. precision "fp32" (the default) is the model's own arithmetic: sweeps of 20,000
corrupted images or more classify through ONNX Runtime when it is installed and gives exactly PyTorch's
predictions on the clean images (res["engine"] says which ran); "bf16" classifies under PyTorch's bfloat16
autocast (faster on CPUs with AVX512-BF16 or AMX; a few borderline predictions change, so it is recorded in the
settings and the cache key).
CLI: python -m cnnlib robustness CKPT [--data PATH] [--images N] [--precision fp32|bf16] [--json]
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os

import numpy as np

from cnnlib.diagnose.corruptions import CORRUPTIONS, P, SEVERITIES, corrupt, corrupt_batch  # noqa: F401
from cnnlib.errors import CNNLibError
from cnnlib.io.files import atomic_write

__all__ = ["CORRUPTIONS", "corrupt", "robustness", "robustness_for_checkpoint", "format_table", "robustness_main",
           "cache_key"]

CACHE_VERSION = 2          # 2: batched corruptions (zoom blur by two-tap interpolation, not a dense matrix product)
PRECISIONS = ("fp32", "bf16")
ORT_MIN_IMAGES = 20000     # corrupted images from which fp32 goes through ONNX Runtime (its export takes seconds)
AHEAD = 2                  # corrupted batches made ahead of the model by the worker thread


# ----------------------------------------------------------------------------- accuracy under corruption

def cache_key(model, xs: np.ndarray, ys: np.ndarray, settings: dict) -> str:
    """The name of a result in the cache: the weights, the settings and the images' bytes and labels."""
    from cnnlib.diagnose.neighbors import model_key
    h = hashlib.sha1(json.dumps({"v": CACHE_VERSION, "model": model_key(model), **settings}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(xs).data)
    h.update(np.ascontiguousarray(ys, np.int64).data)
    return h.hexdigest()[:20]


def robustness(model, x, y, corruptions=CORRUPTIONS, severities=SEVERITIES, images: int | None = 1000,
               seed: int = 0, progress: bool | str = False, cache_dir: str | None = None,
               precision: str = "fp32") -> dict:
    """Accuracy of `model` on images x (N, C, H, W) uint8 with labels y (N,) under each corruption and severity
    (see the module docstring for the keys). images: a random sample of that many (None: all), drawn with `seed`;
    progress: a tqdm bar (a str: its label); cache_dir: the result is kept there as JSON under the weights' hash
    and these settings, and reused; precision: "fp32" or "bf16" (autocast) for the model's forward passes."""
    corruptions, severities = list(corruptions), sorted({int(s) for s in severities})
    bad = [c for c in corruptions if c not in CORRUPTIONS] + [str(s) for s in severities if s not in SEVERITIES]
    if bad or not corruptions or not severities:
        raise CNNLibError(f"unknown corruption or severity {bad[0] if bad else '(none given)'}: corruptions are "
                          f"{', '.join(CORRUPTIONS)}, severities 1 to 5")
    if precision not in PRECISIONS:
        raise CNNLibError(f"precision must be fp32 or bf16, not {precision!r}")
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(np.shape(x)) != 4 or len(x) != len(y) or len(y) == 0 or np.asarray(x[:1]).dtype != np.uint8:
        raise CNNLibError(f"robustness needs uint8 images (N, C, H, W) and N labels, got {tuple(np.shape(x))} "
                          f"and {y.shape}")
    if images is not None and images < 1:
        raise CNNLibError(f"the number of images must be at least 1 (--images 0: all of them), not {images}")
    n = len(y) if images is None else min(int(images), len(y))
    idx = np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False)) if n < len(y) else np.arange(n)
    xs, ys = np.asarray(x[idx]), y[idx]                                     # decoded once: (n, C, H, W) uint8
    settings = {"corruptions": corruptions, "severities": severities, "images": n, "seed": seed}
    if precision != "fp32":                     # fp32 results keep the key they always had
        settings["precision"] = precision
    path = os.path.join(cache_dir, f"robustness-{cache_key(model, xs, ys, settings)}.json") if cache_dir else None
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("settings") == settings:
                return {**cached, "cached": True}
        except (OSError, ValueError):
            pass                                                   # unreadable: computed again
    k = len((getattr(model, "meta", None) or {}).get("classes") or []) or int(ys.max()) + 1
    predict, engine = _predictor(model, precision), "torch"
    pred = predict(xs)
    clean = pred == ys
    if precision == "fp32" and n * len(corruptions) * len(severities) >= ORT_MIN_IMAGES:
        fast = _onnx_predictor(model, xs, pred)
        predict, engine = (fast, "onnxruntime") if fast is not None else (predict, engine)
    right = _sweep(predict, xs, ys, corruptions, severities, seed, progress)      # (corruptions, severities, n)
    acc = {c: [float(r.mean()) for r in right[ci]] for ci, c in enumerate(corruptions)}
    per_class = {c: [_per_class(r, ys, k) for r in right[ci]] for ci, c in enumerate(corruptions)}
    flip_at = np.zeros((len(corruptions), n), np.int64)             # lowest severity that turns right into wrong
    for si, s in reversed(list(enumerate(severities))):
        flip_at[clean & ~right[:, si]] = s
    first, which = np.where(flip_at > 0, flip_at, 99).min(0), np.where(flip_at > 0, flip_at, 99).argmin(0)
    order = np.lexsort((idx, first))
    flips = [{"index": int(idx[j]), "corruption": corruptions[which[j]], "severity": int(first[j])}
             for j in order if first[j] < 99]
    result = {"settings": settings, "n": n, "indices": idx.tolist(), "clean_accuracy": float(clean.mean()),
              "clean_per_class": _per_class(clean, ys, k), "accuracy": acc,
              "mean_accuracy": {c: float(np.mean(v)) for c, v in acc.items()}, "per_class": per_class,
              "first_flip": flips, "engine": engine, "cached": False}
    try:
        if path:
            atomic_write(path, lambda f: f.write(json.dumps(result).encode()))
    except OSError:
        pass                                                       # read-only or full: not cached
    return result


def _sweep(predict, xs, ys, corruptions, severities, seed, progress) -> np.ndarray:
    """right (corruptions, severities, n) bool: is the prediction on each corrupted image right? A worker thread
    corrupts batch j+1 (and j+2) while `predict` classifies batch j; each (corruption, severity) has its own
    generator, np.random.default_rng([seed, index in corruptions, severity]), used image after image."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from cnnlib.modelops import batch_size_for
    n, step = len(ys), batch_size_for(xs.shape[1:])
    hwc = np.ascontiguousarray(xs.transpose(0, 2, 3, 1))                   # (n, H, W, C): corrupted as is
    jobs = [(ci, si, i) for ci in range(len(corruptions)) for si in range(len(severities)) for i in range(0, n, step)]
    rngs = {}

    def work(ci, si, i):                          # the worker thread; jobs of one generator run in order
        rng = rngs.setdefault((ci, si), np.random.default_rng([seed, ci, severities[si]]))
        return corrupt_batch(hwc[i:i + step], corruptions[ci], severities[si], rng)

    right = np.zeros((len(corruptions), len(severities), n), bool)
    bar = tqdm(total=len(corruptions) * len(severities) * n, unit="img", dynamic_ncols=True,
               leave=False, desc=progress if isinstance(progress, str) else "corruptions", disable=not progress)
    pool = ThreadPoolExecutor(1, thread_name_prefix="corrupt")
    try:
        pending = collections.deque(pool.submit(work, *j) for j in jobs[:AHEAD])
        for j, (ci, si, i) in enumerate(jobs):
            xc = pending.popleft().result()                                # (B, H, W, C) uint8
            if j + AHEAD < len(jobs):
                pending.append(pool.submit(work, *jobs[j + AHEAD]))
            right[ci, si, i:i + len(xc)] = predict(xc.transpose(0, 3, 1, 2)) == ys[i:i + len(xc)]
            bar.set_postfix_str(f"{corruptions[ci]} {severities[si]}", refresh=False)
            bar.update(len(xc))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return right


def _predictor(model, precision: str = "fp32"):
    """images (n, C, H, W) uint8 -> predicted classes (n,), through ONE inference copy (BatchNorm folded once,
    not once per corruption and severity) and cnnlib.modelops' batched path. A (B, H, W, C) array seen as
    (B, C, H, W) (a transposed view) is already channels_last: it goes in without a copy."""
    import torch

    from cnnlib.modelops import forward_batches, inference_copy, model_device, norm_stats
    net, channels_last = inference_copy(model)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    dtype = torch.bfloat16 if precision == "bf16" else None

    def predict(x) -> np.ndarray:
        x = torch.from_numpy(x) if isinstance(x, np.ndarray) and x.flags.writeable else x
        out = np.empty(len(x), np.int64)
        for i, z in forward_batches(net, x, mean, std, dtype=dtype, channels_last=channels_last):
            out[i:i + len(z)] = z.argmax(1).cpu().numpy()
        return out
    return predict


def _onnx_predictor(model, xs: np.ndarray, want: np.ndarray):
    """predict as _predictor's, through ONNX Runtime in fp32 (about twice PyTorch's CPU speed on small convnets
    measured on a 2-core EPYC), or None where onnxruntime is missing, the export fails, or its predictions on the
    clean images xs are not exactly PyTorch's (want)."""
    import tempfile
    import warnings

    import torch
    try:
        import onnxruntime as ort

        from cnnlib.io.export import export_onnx
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, os.path.join(d, "model.onnx"))             # raw [0, 1] images in, logits out
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # leave the corrupting thread its core
            session = ort.InferenceSession(os.path.join(d, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any failure: PyTorch classifies, as always
        return None
    from cnnlib.modelops import batch_size_for
    step = batch_size_for(xs.shape[1:])

    def predict(x) -> np.ndarray:
        out = np.empty(len(x), np.int64)
        for i in range(0, len(x), step):                                    # (B, C, H, W) float32 in [0, 1]
            xb = np.ascontiguousarray(x[i:i + step], dtype=np.float32) / np.float32(255)
            out[i:i + len(xb)] = session.run(None, {session.get_inputs()[0].name: xb})[0].argmax(1)
        return out
    try:
        return predict if np.array_equal(predict(xs), want) else None
    except Exception:  # noqa: BLE001
        return None


def _per_class(right: np.ndarray, ys: np.ndarray, k: int) -> list:   # accuracy per class, None: no image
    count = np.bincount(ys, minlength=k)
    hits = np.bincount(ys, weights=right.astype(np.float64), minlength=k)
    return [float(h / c) if c else None for h, c in zip(hits, count)]


def robustness_for_checkpoint(model, data: str | None = None, root: str | None = None, **kw) -> dict:
    """robustness on a checkpoint's test split (`data`: another dataset name or folder), cached in the data
    root's cnnlib-cache/ folder; adds "classes"."""
    from cnnlib.data.cache import cache_dir
    from cnnlib.data.spec import checkpoint_data_spec, load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    x, y = load_checkpoint_split(meta, "test", data, root)
    res = robustness(model, x, y, cache_dir=cache_dir(checkpoint_data_spec(meta, data or "", root).root), **kw)
    return {**res, "classes": list(meta.get("classes") or [])}


def format_table(res: dict, flips: int = 10) -> str:
    sev = res["settings"]["severities"]
    lines = [f"accuracy on {res['n']} test images: clean {res['clean_accuracy']:.1%}", "",
             f"{'corruption':<18}" + "".join(f"{'s' + str(s):>8}" for s in sev) + f"{'mean':>8}"]
    for c, row in res["accuracy"].items():
        lines.append(f"{c:<18}" + "".join(f"{a:8.1%}" for a in row) + f"{res['mean_accuracy'][c]:8.1%}")
    mean = float(np.mean(list(res["mean_accuracy"].values())))
    lines += [f"{'all corruptions':<18}" + " " * 8 * len(sev) + f"{mean:8.1%}", "",
              f"first to flip ({len(res['first_flip'])} of the images right when clean flip at some severity):"]
    lines += [f"  index {f['index']:>6}  {f['corruption']} severity {f['severity']}" for f in res["first_flip"][:flips]]
    return "\n".join(lines)


def robustness_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib robustness",
                                description="Accuracy under the 15 common corruptions (CIFAR-10-C's definitions) at "
                                            "severities 1-5, per class, and the images that flip first.")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, metavar="PATH", help="test images (default: the checkpoint's own)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--images", type=int, default=1000, metavar="N",
                   help="random sample of N test images (default 1000; 0: all of them)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), metavar="NAME", help="default: all 15")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the model's arithmetic: fp32 (default) or bf16 autocast (faster on CPUs with AVX512-BF16 "
                        "or AMX; a few borderline predictions change)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    from cnnlib.inference import load_model
    model = load_model(args.checkpoint, "cpu")
    res = robustness_for_checkpoint(model, args.data, args.data_root, corruptions=args.corruptions,
                                    images=args.images or None, seed=args.seed, progress="corruptions",
                                    precision=args.precision)
    print(json.dumps(res) if args.json else format_table(res))
    return 0
