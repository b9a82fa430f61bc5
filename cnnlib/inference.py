"""Load a trained checkpoint and classify images.

    model = load_model("checkpoints/simple_cnn.pt", "cpu")   # eval() mode; model.meta = checkpoint metadata
    predict(model, "cat.png", k=5)  -> [{"class": "cat", "prob": 0.81}, ...]
    visualize_predictions(model, "cat.png", "cpu")  -> matplotlib Figure (image + probability bars)

Like torchvision models, the network expects inputs normalized with the
checkpoint's statistics; `preprocess` does that (and `model.meta` carries
classes, input_shape and normalization).
"""
from __future__ import annotations

import torch
from torch import nn

from .checkpoint import build_model, load_checkpoint
from .errors import CNNLibError
from .images import to_model_input


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CNNLibError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def load_model(path_or_ckpt, device="cpu") -> nn.Module:
    """Checkpoint (path, bytes, file object or loaded dict) -> network in eval() on `device`.

    `model.meta` holds every checkpoint key except `state_dict` (classes, input_shape,
    normalization, history, metrics, test_predictions, ...).
    """
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    model = build_model(ckpt).to(resolve_device(device))
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval()


def normalize(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> normalized with the checkpoint's training statistics."""
    mean = torch.tensor(meta["normalization"]["mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(meta["normalization"]["std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def preprocess(model: nn.Module, image) -> torch.Tensor:
    """Any image -> (1, C, H, W) normalized tensor on the model's device."""
    x = to_model_input(image, model.meta["input_shape"]).unsqueeze(0)
    return normalize(x.to(next(model.parameters()).device), model.meta)


@torch.inference_mode()
def predict(model: nn.Module, image, k: int = 5) -> list[dict]:
    """Top-k classes with probabilities, most likely first."""
    classes = model.meta["classes"]
    if model.training:
        raise CNNLibError("predict() needs the model in eval() mode (load_model returns it so)")
    probs = torch.softmax(model(preprocess(model, image)).float(), dim=1)[0]
    top = torch.topk(probs, min(max(int(k), 1), len(classes)))
    return [{"class": classes[i], "prob": float(p)} for p, i in zip(top.values.tolist(), top.indices.tolist())]


def visualize_predictions(model: nn.Module, image_path, device=None, k: int = 5):
    """The original tutorial's view: the image beside a bar chart of its top-k probabilities."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if device is not None:
        model = model.to(resolve_device(device))
    shown = to_model_input(image_path, model.meta["input_shape"])  # (C, H, W) in [0, 1], what the model sees
    top = predict(model, shown, k=k)                                  # decoded once; the array path is exact
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 3.5))
    ax_img.imshow(shown.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if shown.shape[0] == 1 else None)
    ax_img.set_title(f"{top[0]['class']} ({top[0]['prob']:.0%})")
    ax_img.axis("off")
    names = [t["class"] for t in top][::-1]
    ax_bar.barh(names, [t["prob"] for t in top][::-1], color="tab:blue")
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    fig.tight_layout()
    return fig
