"""Calibration that can be fixed: temperature scaling (Guo et al., 2017) fitted on the validation split.

    info = fit_temperature(model)                       # fits T on the checkpoint's validation split
    info = fit_temperature(model, path="ckpt.pt")       # ... and stores it in the checkpoint (atomically)
    T = fit_temperature_logits(logits, targets)         # on any held-out logits (N, K) and labels (N,)
    scaled = apply_temperature(probs, T)                # probabilities as if the logits were divided by T

Dividing the logits by one number T > 0 changes no prediction (the order of the classes stays) but
softens (T > 1) or sharpens (T < 1) every probability. T minimises the negative log-likelihood (NLL, mean
cross-entropy in nats) of the held-out labels: L-BFGS on log T, so T stays positive. The checkpoint keeps

    meta["temperature"] = {"T", "ece_before", "ece_after", "nll_before", "nll_after", "fitted_on",
                           "n", "bins_before", "bins_after"}

ECE and the reliability bins are cnnlib.diagnose.evaluate.calibration's (15 equal-width bins of the top-1
probability). `cnnlib predict --calibrated` divides the logits by the stored T.
CLI: python -m cnnlib calibrate CKPT [--data PATH] [--data-root DIR] [--bins N].
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cnnlib.errors import CNNLibError

__all__ = ["fit_temperature_logits", "temperature_report", "apply_temperature", "fit_temperature",
           "save_temperature", "stored_temperature", "calibrate_main"]

T_RANGE = (0.05, 20.0)   # temperatures outside this range are clipped (a degenerate split, e.g. all correct)


def _check(logits, targets) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets).astype(np.int64).reshape(-1))
    if z.dim() != 2 or len(z) != len(y) or len(y) == 0 or z.shape[1] < 2:
        raise CNNLibError(f"temperature scaling needs N labels and (N, K >= 2) logits, got {tuple(y.shape)} "
                          f"and {tuple(z.shape)}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise CNNLibError(f"the labels must be class indices in 0..{z.shape[1] - 1}")
    if not bool(torch.isfinite(z).all()):
        raise CNNLibError("the logits must be finite numbers")
    return z, y


def _nll(z: torch.Tensor, y: torch.Tensor, t: float) -> float:
    return float(torch.nn.functional.cross_entropy(z / t, y))


def fit_temperature_logits(logits, targets, max_iter: int = 200) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (logits (N, K), targets (N,))."""
    z, y = _check(logits, targets)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, *T_RANGE)) if np.isfinite(t) else 1.0


def temperature_report(logits, targets, t: float | None = None, n_bins: int = 15) -> dict:
    """T (fitted unless given), NLL and ECE before (T = 1) and after, and the reliability bins of both."""
    from cnnlib.diagnose.evaluate import calibration
    z, y = _check(logits, targets)
    t = fit_temperature_logits(z, y) if t is None else float(t)
    out = {"T": t, "n": int(len(y))}
    for when, temp in (("before", 1.0), ("after", t)):
        p = torch.softmax(z / temp, dim=1)
        conf, pred = p.max(1)
        cal = calibration(conf.numpy(), (pred == y).numpy(), n_bins)
        out[f"nll_{when}"] = _nll(z, y, temp)
        out[f"ece_{when}"] = cal.pop("ece")
        cal.pop("mce")
        out[f"bins_{when}"] = cal
    return out


def apply_temperature(probs, t: float) -> np.ndarray:
    """softmax(log(probs) / T) (N, K) or (K,): the probabilities of logits / T (log p is the logits up to a
    per-row constant, which softmax ignores; probabilities that underflowed to 0 stay near 0)."""
    if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
        raise CNNLibError(f"the temperature must be a positive number, not {t!r}")
    logp = np.log(np.maximum(np.asarray(probs, np.float64), 1e-300)) / float(t)
    logp -= logp.max(-1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _logits(model, x) -> np.ndarray:
    """Logits float32 (N, K) of images x (N, C, H, W) through the one batched path (cnnlib.modelops)."""
    from cnnlib.modelops import forward_batches, inference_copy, model_device, norm_stats
    net, channels_last = inference_copy(model)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    out = None
    for i, z in forward_batches(net, x, mean, std, channels_last=channels_last):
        if out is None:
            out = np.empty((len(x), z.shape[1]), np.float32)
        out[i:i + len(z)] = z.cpu().numpy()
    return out


def fit_temperature(model, data: str | None = None, root: str | None = None, path: str | None = None,
                    split: str = "val", n_bins: int = 15) -> dict:
    """Fit T on a checkpoint's validation split (`data`: another dataset name or folder), put the report in
    model.meta["temperature"] and, when `path` is given, into that checkpoint file (written atomically)."""
    from cnnlib.data.spec import checkpoint_data_spec, load_checkpoint_split
    meta = getattr(model, "meta", None) or {}
    x, y = load_checkpoint_split(meta, split, data, root)
    if len(y) < 2:
        raise CNNLibError(f"this checkpoint's data has no {split} split to fit a temperature on (a folder with "
                          "only test images has none): pass --data with a train/ folder")
    info = temperature_report(_logits(model, x), y, n_bins=n_bins)
    spec = checkpoint_data_spec(meta, data or "", root)
    info["fitted_on"] = f"{split} split ({len(y)} images) of {spec.source}"
    model.meta = {**meta, "temperature": info}
    if path is not None:
        save_temperature(path, info)
    return info


def save_temperature(path: str, info: dict) -> None:
    """Write `info` as the checkpoint's "temperature" entry; every other entry stays as it was."""
    from cnnlib.io.checkpoint import atomic_torch_save, load_checkpoint
    ckpt = load_checkpoint(path)
    ckpt["temperature"] = info
    atomic_torch_save(ckpt, path)


def stored_temperature(meta: dict | None) -> float:
    """The checkpoint's fitted T; CNNLibError (one sentence) when it has none."""
    t = ((meta or {}).get("temperature") or {}).get("T")
    if not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
        raise CNNLibError("this checkpoint has no fitted temperature: run `python -m cnnlib calibrate CKPT` first")
    return float(t)


def format_report(info: dict) -> str:
    return (f"temperature T = {info['T']:.4f}, fitted on the {info['fitted_on']}\n"
            f"NLL {info['nll_before']:.4f} -> {info['nll_after']:.4f}\n"
            f"ECE {info['ece_before']:.4f} -> {info['ece_after']:.4f}")


def calibrate_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnlib calibrate",
                                description="Fit temperature scaling on the validation split and store T in the "
                                            "checkpoint (`predict --calibrated` then uses it).")
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, metavar="PATH", help="dataset name or ImageFolder (default: the "
                                                                 "checkpoint's own)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets and caches live")
    p.add_argument("--bins", type=int, default=15, help="reliability-diagram bins")
    args = p.parse_args(argv)
    if args.bins < 1:
        raise CNNLibError("--bins must be at least 1")
    from cnnlib.inference import load_model
    model = load_model(args.checkpoint, "cpu")
    info = fit_temperature(model, args.data, args.data_root, path=args.checkpoint, n_bins=args.bins)
    print(format_report(info))
    print(f"stored in {args.checkpoint}")
    return 0
