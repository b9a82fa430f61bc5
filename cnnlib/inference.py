"""Load a checkpoint and classify images.

    model = load_model("checkpoints/simple_cnn.pt", "cpu")   # eval() mode; model.meta = checkpoint metadata
    predict(model, "cat.png", k=5)  -> [{"class": "cat", "prob": 0.81}, ...]
    visualize_predictions(model, "cat.png", "cpu")  -> matplotlib Figure (image + probability bars)
    ood_warning(model.meta, x01, probs)  -> a sentence when an image is unlike the training data, else None

Like torchvision models, the network expects inputs normalized with the checkpoint's statistics and
prepared with its preprocessing (resize, centre crop); `preprocess` does both, through the same
cnnlib.modelops path that evaluation and attribution use.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlib.io.checkpoint import build_model, load_checkpoint
from cnnlib.errors import CNNLibError
from cnnlib.data.images import to_model_input
from cnnlib.modelops import model_device, norm_stats, probabilities, to_input


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CNNLibError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CNNLibError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def load_model(path_or_ckpt, device="cpu") -> nn.Module:
    """Checkpoint (path, bytes, file object or loaded dict) -> network in eval() on `device`.

    `model.meta` holds every checkpoint key except `state_dict` (classes, input_shape,
    normalization, preprocessing, history, metrics, test_predictions, ...).
    """
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    model = build_model(ckpt).to(resolve_device(device))
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval()


def image01(model: nn.Module, image) -> torch.Tensor:
    """Any image (path, bytes, PIL, array) -> float (C, H, W) in [0, 1], prepared as the model expects
    (its channels, and its preprocessing: resize + centre crop, or a plain resize to input_shape)."""
    return to_model_input(image, model.meta["input_shape"], model.meta.get("preprocessing"))


def preprocess(model: nn.Module, image) -> torch.Tensor:
    """Any image -> (1, C, H, W) normalized tensor on the model's device (what the network takes)."""
    mean, std = norm_stats(model.meta, model_device(model))
    return to_input(image01(model, image).unsqueeze(0), mean, std)


def predict(model: nn.Module, image, k: int = 5, calibrated: bool = False) -> list[dict]:
    """Top-k classes with probabilities, most likely first. calibrated: the logits divided by the checkpoint's
    fitted temperature (cnnlib.diagnose.calibration; CNNLibError when it has none)."""
    classes = model.meta["classes"]
    probs = probabilities(model, image01(model, image))[0]
    if calibrated:    # softmax(logits / T) = softmax(log(probs) / T): what cnnlib.diagnose.calibration fitted
        t = (model.meta.get("temperature") or {}).get("T")
        if not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
            raise CNNLibError("this checkpoint has no fitted temperature: run `python -m cnnlib calibrate CKPT` first")
        logp = np.log(np.maximum(probs.astype(np.float64), 1e-300)) / t
        probs = np.exp(logp - logp.max())
        probs = (probs / probs.sum()).astype(np.float32)
    if not np.isfinite(probs).all():
        raise CNNLibError("the network's output for this image is not a number (its weights overflow): "
                          "the checkpoint is damaged")
    top = np.argsort(-probs, kind="stable")[:min(max(int(k), 1), len(classes))]
    return [{"class": classes[i], "prob": float(probs[i])} for i in top]


# How far an input may stray before ood_warning speaks.
OOD_QUANTILES = (0.005, 0.995)   # a statistic outside this range of the test images' is unusual
OOD_MARGIN = 0.05               # ... by more than this (in [0, 1] pixel units)
OOD_CONFIDENCE_QUANTILE = 0.01  # a top probability below this quantile of the test set's is unusual
STAT_NAMES = ("brightness", "contrast", "border brightness")


def image_statistics(x) -> np.ndarray:
    """Per-image statistics (N, 3) of images (N, C, H, W) (uint8 or [0, 1]): mean brightness, contrast
    (pixel std) and the mean of a 2-pixel border frame (objects centred on a plain background, as in
    MNIST and Fashion-MNIST, have a dark border)."""
    a = np.asarray(x)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    a = a[None] if a.ndim == 3 else a
    gray = a.mean(axis=1)                                                     # (N, H, W)
    b = max(1, min(2, gray.shape[1] // 8))
    frame = np.concatenate([gray[:, :b].reshape(len(a), -1), gray[:, -b:].reshape(len(a), -1),
                            gray[:, :, :b].reshape(len(a), -1), gray[:, :, -b:].reshape(len(a), -1)], 1)
    return np.stack([gray.mean(axis=(1, 2)), gray.std(axis=(1, 2)), frame.mean(1)], 1)


def reference_statistics(x_test, limit: int = 2000) -> dict:
    """The range of image_statistics over (up to `limit`, evenly spaced) test images: {"lo", "hi"} (3,)."""
    idx = np.linspace(0, len(x_test) - 1, min(limit, len(x_test))).astype(int)
    # 64 images at a time: 2,000 at 224 px as float32 at once were 1.2 GB
    stats = np.concatenate([image_statistics(np.asarray(x_test[part]) if not isinstance(x_test, torch.Tensor)
                                             else x_test[part].numpy()) for part in np.array_split(idx, max(1, len(idx) // 64))])
    lo, hi = np.quantile(stats, OOD_QUANTILES, axis=0)
    return {"lo": lo, "hi": hi}


def ood_warning(meta: dict, x01, probs=None, reference: dict | None = None) -> str | None:
    """A plain sentence when an image looks unlike the model's test images, else None.

    reference: reference_statistics of the test images (when they are on disk); without it the
    training split's pixel mean and std (meta["normalization"]) give a rough range. The confidence
    check compares the top probability with the checkpoint's stored test predictions.
    """
    x = np.asarray(x01, np.float32)
    if x.ndim != 3:
        return None
    reasons = []
    stats = image_statistics(x)[0]
    if reference is None:
        m = float(np.mean(meta["normalization"]["mean"]))
        s = float(np.mean(meta["normalization"]["std"]))
        reference = {"lo": np.array([m - 1.5 * s, 0.1 * s, -1.0]), "hi": np.array([m + 1.5 * s, 2.0 * s, 2.0])}
    off = [n for n, v, lo, hi in zip(STAT_NAMES, stats, reference["lo"], reference["hi"])
           if v < lo - OOD_MARGIN or v > hi + OOD_MARGIN]
    if off:
        reasons.append(f"its {' and '.join(off)} {'is' if len(off) == 1 else 'are'} outside the range of the "
                       "test images")
    tp = meta.get("test_predictions") or {}
    if probs is not None and tp.get("probs") is not None:
        test_top = torch.as_tensor(tp["probs"]).float().max(1).values.numpy()
        if len(test_top) and float(np.max(probs)) < np.quantile(test_top, OOD_CONFIDENCE_QUANTILE):
            reasons.append(f"the model is less sure of it ({float(np.max(probs)):.1%}) than of "
                           f"{1 - OOD_CONFIDENCE_QUANTILE:.0%} of its test images")
    if not reasons:
        return None
    data = (meta.get("data") or {}).get("name") or "the training data"
    return (f"This image looks unlike {data}: " + "; ".join(reasons)
            + ". The model has never seen anything like it, so treat the prediction with caution.")


def visualize_predictions(model: nn.Module, image_path, device=None, k: int = 5):
    """The original tutorial's view: the image beside a bar chart of its top-k probabilities."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if device is not None:
        model = model.to(resolve_device(device))
    shown = image01(model, image_path)               # (C, H, W) in [0, 1], what the model sees
    top = predict(model, shown, k=k)                 # decoded once; the array path is exact
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 3.5))
    ax_img.imshow(shown.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if shown.shape[0] == 1 else None)
    ax_img.set_title(f"{top[0]['class']} ({top[0]['prob']:.1%})")
    ax_img.axis("off")
    names = [t["class"] for t in top][::-1]
    ax_bar.barh(names, [t["prob"] for t in top][::-1], color="tab:blue")
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    fig.tight_layout()
    return fig
