"""What does a channel want to see? Feature visualisation by optimisation (Olah et al., Distill 2017,
"Feature Visualization"), and the real images that excite a channel most.

    r = visualize_channel(model, "conv2", channel=5)        # or target_class=3 (a class logit)
    r["image"]   float32 (C, H, W) in [0, 1]               r["objective_history"]  [float] one per step

    top_activating(model, x_test, "relu2", 5, k=9)          int64 (k,) indices of x_test, most active first

The image is optimised from noise to maximise the channel's mean activation (or the logit), with the usual
regularisers that keep it from turning into high-frequency adversarial noise:

  * parametrisation: the image is the sigmoid of a colour-decorrelated inverse FFT of a learned spectrum whose
    frequencies are scaled by 1 / |f| (Lucid's `fft_image` + `to_valid_rgb`), so gradient steps favour smooth,
    natural-coloured patterns; fft=False / decorrelate=False switch either off (to show why they matter);
  * transformation robustness: every step scores a batch of randomly jittered, scaled and slightly rotated
    copies (one affine grid_sample each), so the pattern must work wherever it lands;
  * blur (optional): a Gaussian low-pass of `blur` pixels sigma applied in frequency space;
  * ReLU gradient redirection (Lucid): a channel that is 0 everywhere on the noise start still gets a gradient.

The checkpoint's normalization runs inside `modelops.Normalized`, so the optimised image is a raw [0, 1]
picture. Everything runs on a private `modelops.analysis_copy` with gradients taken only with respect to the
image (torch.autograd.grad: no parameter .grad is written), from a private generator: the same seed gives
the same image, and the given model is left exactly as found.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib.modelops import (Normalized, analysis_copy, capture, forward_batches, get_layer, input_shape, model_device,
                       norm_stats)

# Lucid's square root of ImageNet's colour correlation (columns: decorrelated -> RGB), normalised by its
# largest column norm: a step in the learned space moves along natural colour directions.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class _RedirectedReLU(torch.autograd.Function):
    """relu(x) whose backward, where the ordinary ReLU gradient is zero for a whole image (a dead unit at the
    noise start), lets through the gradient that would push negative inputs up (Lucid's `redirected_relu_grad`).
    Without it an objective on a ReLU (or on a pool after one) that starts at 0 never moves."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x > 0, g, torch.zeros_like(g))
        redirected = torch.where((x < 0) & (g > 0), torch.zeros_like(g), g)    # never push a negative lower
        alive = relu_grad.flatten(1).abs().amax(1) > 0                             # (B,) any gradient through?
        return torch.where(alive.view(-1, *[1] * (g.dim() - 1)), relu_grad, redirected)


class RedirectedReLU(nn.Module):
    def forward(self, x):
        return _RedirectedReLU.apply(x)


def _redirect_relus(net: nn.Module) -> None:
    """Swap every nn.ReLU of a private copy for RedirectedReLU (same forward values)."""
    for name, m in list(net.named_modules()):
        if type(m) is nn.ReLU:
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, RedirectedReLU())


class _Stop(Exception):
    """Raised by the objective's hook: the layers after the chosen one need not run."""


class ImageParam(nn.Module):
    """A learnable image (1, C, H, W) in [0, 1]: sigmoid(colour(irfft2(spectrum * 1/|f|))) or, fft=False,
    sigmoid(colour(pixels))."""

    def __init__(self, c: int, h: int, w: int, generator: torch.Generator, fft: bool = True,
                 decorrelate: bool = True, blur: float = 0.0, sd: float = 0.01, device=None):
        super().__init__()
        self.c, self.h, self.w, self.fft = c, h, w, fft
        self.decorrelate = decorrelate and c == 3
        if fft:
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            f = torch.sqrt(fx * fx + fy * fy)                                       # (h, w//2+1) cycles / pixel
            scale = 1.0 / f.clamp_min(1.0 / max(h, w)) * math.sqrt(h * w)           # 1/|f|: low frequencies first
            if blur > 0:
                scale = scale * torch.exp(-2 * (math.pi * blur * f) ** 2)          # Gaussian blur of sigma `blur` px
            self.register_buffer("scale", scale.to(device))
            shape = (2, c, h, w // 2 + 1)                                           # real and imaginary parts
        else:
            shape = (c, h, w)
        init = torch.randn(shape, generator=generator) * sd
        self.param = nn.Parameter(init.to(device))

    def forward(self) -> torch.Tensor:
        if self.fft:
            spec = torch.complex(self.param[0], self.param[1]) * self.scale         # (C, h, w//2+1)
            t = torch.fft.irfft2(spec, s=(self.h, self.w)) / 4.0                    # (C, H, W), Lucid's 1/4
        else:
            t = self.param
        if self.decorrelate:
            t = torch.einsum("ij,jhw->ihw", _COLOR.to(t), t)                       # decorrelated -> RGB
        return torch.sigmoid(t)[None]                                               # (1, C, H, W) in [0, 1]


def _random_views(img: torch.Tensor, n: int, g: torch.Generator, jitter: int, scale: tuple[float, float],
                  rotate: float) -> torch.Tensor:
    """n copies of img (1, C, H, W), each jittered by up to `jitter` px, scaled in `scale`, rotated by up to
    `rotate` degrees (one affine grid_sample, reflection at the borders) -> (n, C, H, W)."""
    _, _, h, w = img.shape
    r = torch.rand(n, 4, generator=g)
    s = scale[0] + (scale[1] - scale[0]) * r[:, 0]
    a = math.radians(rotate) * (2 * r[:, 1] - 1)
    tx = torch.round((2 * r[:, 2] - 1) * jitter) * 2 / w                           # whole pixels, grid units
    ty = torch.round((2 * r[:, 3] - 1) * jitter) * 2 / h
    theta = torch.stack([torch.stack([torch.cos(a) / s, -torch.sin(a) / s, tx], 1),
                         torch.stack([torch.sin(a) / s, torch.cos(a) / s, ty], 1)], 1).to(img)   # (n, 2, 3)
    grid = F.affine_grid(theta, [n, img.shape[1], h, w], align_corners=False)
    return F.grid_sample(img.expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def visualize_channel(model: nn.Module, layer: str | None = None, channel: int | None = None,
                      target_class: int | None = None, steps: int = 128, seed: int = 0, progress=None,
                      lr: float = 0.05, batch: int = 4, jitter: int | None = None,
                      scale: tuple[float, float] = (0.95, 1.05), rotate: float = 5.0, fft: bool = True,
                      decorrelate: bool = True, blur: float = 0.0, size=None, relu_redirect: bool = True) -> dict:
    """Optimise an image from noise to maximise `layer`'s `channel` (mean over the map) or, with
    `target_class`, that class's logit.

    steps: Adam steps (lr on the spectrum); batch: randomly transformed copies scored per step; jitter: the
    largest shift in pixels (default 6% of the side); size: (H, W) or an int (default: the checkpoint's);
    progress: called as progress(step, steps, objective) after every step; relu_redirect: let gradients
    through ReLUs that are dead for the whole image (see RedirectedReLU; forward values are unchanged).
    Returns {"image": float32 (C, H, W) in [0, 1], "start": the noise image it started from (same shape; close
    to a flat 0.5 grey, as the spectrum starts small), "start_contrast": that same noise stretched to [0, 1] so
    it can be seen, "start_gain": the stretch factor,
    "objective_history": [float] (mean objective over the transformed copies, per step), "start_objective",
    "final_objective" (on the untransformed start / final image), "layer", "channel", "target_class",
    "steps", "seed", "seconds"}.
    """
    if target_class is None and (layer is None or channel is None):
        raise CNNLibError("visualize_channel needs a layer and a channel, or a target_class")
    if steps < 1 or batch < 1:
        raise CNNLibError(f"steps and batch must be at least 1, got steps={steps}, batch={batch}")
    t0 = time.perf_counter()
    c, h, w = input_shape(model)
    if size is not None:
        h, w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    jitter = max(1, round(0.06 * min(h, w))) if jitter is None else int(jitter)
    with torch.inference_mode(False), torch.enable_grad():
        net = analysis_copy(model)
        if relu_redirect:
            _redirect_relus(net)
        device = model_device(net)
        wrapper = Normalized(net, getattr(model, "meta", None)).eval()
        if target_class is None:
            get_layer(net, layer)
        g = torch.Generator().manual_seed(int(seed))
        image = ImageParam(c, h, w, g, fft=fft, decorrelate=decorrelate, blur=blur, device=device)
        objective = _objective(wrapper, layer, channel, target_class)
        opt = torch.optim.Adam([image.param], lr=lr)
        with torch.no_grad():
            start = image().detach()
            start_value = float(objective(start))
        history = []
        for step in range(steps):
            views = _random_views(image(), batch, g, jitter, scale, rotate)             # (batch, C, H, W)
            value = objective(views)
            (grad,) = torch.autograd.grad(-value, [image.param])                        # only the image's gradient
            image.param.grad = grad
            opt.step()
            history.append(float(value.detach()))
            if progress is not None:
                progress(step + 1, steps, history[-1])
        with torch.no_grad():
            final = image().detach()
            final_value = float(objective(final))
    start = start[0].cpu().numpy().astype(np.float32)
    spread = float(start.max() - start.min())
    gain = 1.0 / spread if spread > 1e-8 else 1.0
    return {"image": final[0].cpu().numpy().astype(np.float32), "start": start,
            "start_contrast": np.clip((start - start.min()) * gain, 0, 1).astype(np.float32), "start_gain": gain,
            "objective_history": history, "start_objective": start_value, "final_objective": final_value,
            "layer": None if target_class is not None else layer, "channel": channel, "target_class": target_class,
            "steps": steps, "seed": seed, "seconds": time.perf_counter() - t0}


def _objective(wrapper: Normalized, layer: str | None, channel: int | None, target_class: int | None):
    """images (B, C, H, W) in [0, 1] -> scalar: the logit's or the channel's mean over the batch (and map)."""
    if target_class is not None:
        def logit(x):
            out = wrapper(x)
            if not 0 <= int(target_class) < out.shape[1]:
                raise CNNLibError(f"target class {target_class} is out of range (the model has {out.shape[1]} classes)")
            return out[:, int(target_class)].mean()
        return logit

    module = get_layer(wrapper.net, layer)

    def unit(x):
        store = {}

        def hook(m, args, out):          # keep the first call's output, then stop the forward pass
            store["out"] = out
            raise _Stop
        handle = module.register_forward_hook(hook)
        try:
            wrapper(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        out = store.get("out")
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise CNNLibError(f"layer {layer!r} did not produce a (B, C, ...) tensor")
        if not 0 <= int(channel) < out.shape[1]:
            raise CNNLibError(f"channel {channel} is out of range ({layer!r} has {out.shape[1]} channels)")
        return out[:, int(channel)].mean()
    return unit


def channel_scores(model: nn.Module, x, layer: str, channel: int, batch_size: int = 256) -> np.ndarray:
    """float32 (N,): `layer`'s `channel` mean activation for every image of x (N, C, H, W) (uint8 or [0, 1];
    tensor, array or memmap, streamed in batches)."""
    if len(np.shape(x)) != 4:
        raise CNNLibError(f"expected images (N, C, H, W), got shape {tuple(np.shape(x))}")
    net = analysis_copy(model)
    get_layer(net, layer)
    mean, std = norm_stats(getattr(model, "meta", None), model_device(net))
    scores = np.zeros(len(x), np.float32)                       # (N,), filled in place batch by batch
    with capture(net, [layer]) as store:
        for i, _ in forward_batches(net, x, mean, std, batch_size):
            a = store.pop(layer)
            if not 0 <= int(channel) < a.shape[1]:
                raise CNNLibError(f"channel {channel} is out of range ({layer!r} has {a.shape[1]} channels)")
            scores[i:i + len(a)] = a[:, int(channel)].flatten(1).float().mean(1).cpu().numpy()   # (B,)
    return scores


def top_activating(model: nn.Module, x_test, layer: str, channel: int, k: int = 9, batch_size: int = 256) -> np.ndarray:
    """int64 (min(k, N),): indices of the images of x_test (N, C, H, W) whose `layer` `channel` has the largest
    mean activation, largest first (ties: lower index first)."""
    scores = channel_scores(model, x_test, layer, channel, batch_size)
    order = np.argsort(-scores, kind="stable")
    return order[:max(0, int(k))].astype(np.int64)
