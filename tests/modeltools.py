"""Shared by the library tests: tiny models with a fake checkpoint `meta`, images, an independent forward,
and a snapshot of everything a function could change on a model."""
import io

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlib.models.registry import get_model

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def make_model(num_classes=4, in_channels=3, size=16, seed=0, name="simple_cnn", **kw):
    """A tiny network with non-trivial BatchNorm statistics and a fake checkpoint `meta`."""
    torch.manual_seed(seed)
    model = get_model(name, num_classes=num_classes, in_channels=in_channels, image_size=size, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.meta = {"classes": [f"c{i}" for i in range(num_classes)], "input_shape": [in_channels, size, size],
                  "normalization": {"mean": MEAN[:in_channels], "std": STD[:in_channels]}}
    return model.eval()



def images(n, c=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)



def logits_of(model, x01):
    """Independent forward: the model on [0, 1] images (B, C, H, W), normalized here by hand."""
    c = x01.shape[1]
    mean = torch.tensor(model.meta["normalization"]["mean"]).view(1, c, 1, 1)
    std = torch.tensor(model.meta["normalization"]["std"]).view(1, c, 1, 1)
    with torch.no_grad():
        return model((x01 - mean) / std)


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def snapshot(model):
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "params": [id(p) for p in model.parameters()],
            "training": [(n, m.training) for n, m in model.named_modules()],
            "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
            "grad_none": [p.grad is None for p in model.parameters()],
            "hooks": [(n, d, len(getattr(m, d, {}))) for n, m in model.named_modules() for d in HOOK_DICTS],
            "global_hooks": (len(nn.modules.module._global_forward_hooks),
                             len(nn.modules.module._global_backward_hooks))}


def assert_unchanged(model, snap):
    now = snapshot(model)
    for key in ("params", "training", "requires_grad", "grad_none", "hooks", "global_hooks"):
        assert now[key] == snap[key], key
    for k, v in snap["state"].items():
        assert torch.equal(now["state"][k], v), k



def normalized(x01, meta):
    """(x01 - mean) / std written out by hand (B, C, H, W): the reference the library is checked against."""
    c = x01.shape[1]
    mean = torch.tensor(meta["normalization"]["mean"], dtype=x01.dtype).view(1, c, 1, 1)
    std = torch.tensor(meta["normalization"]["std"], dtype=x01.dtype).view(1, c, 1, 1)
    return (x01 - mean) / std


def png_bytes(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
