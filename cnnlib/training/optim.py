"""Training helpers that sit beside the optimiser: weight EMA, Lookahead, a data-dependent first-layer init.

    ema = WeightEMA(model, decay)        after each step: ema.update(model); evaluate / store ema.module
    la = Lookahead(model, k, alpha)      after each step: la.step()  (every k steps: slow += alpha (fast - slow))
    whiten_init_(conv, x, mean, std)     first conv's kernels <- +-PCA-whitening filters of training patches

None of them changes the architecture: the EMA is a copy of the same network, Lookahead only moves the
weights, and whitening only chooses the first conv's starting values (it trains like any other layer).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from cnnlib.config import TrainConfig, check_choice


class WeightEMA:
    """Exponential moving average of every floating-point parameter AND buffer (BatchNorm running mean /
    var ride along, so the averaged network's BN statistics match its averaged weights).

    decay is per optimiser step; for the first steps it is capped at (1 + t) / (10 + t) so the average
    is not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _pairs(self, model: nn.Module):
        mine = self.module.state_dict()
        return [(mine[k], v) for k, v in model.state_dict().items()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        avg, new, ints = [], [], []
        for e, m in self._pairs(model):
            if e.is_floating_point():
                avg.append(e)
                new.append(m.detach().to(e.dtype))
            else:
                ints.append((e, m))          # num_batches_tracked: copied
        torch._foreach_lerp_(avg, new, 1.0 - d)
        for e, m in ints:
            e.copy_(m)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.module.load_state_dict(state["module"])


class Lookahead:
    """Lookahead (Zhang et al., 2019) around any optimiser, as a hook after its step: every k steps the
    slow weights move alpha of the way to the fast ones and the fast weights restart from them."""

    def __init__(self, model: nn.Module, k: int, alpha: float):
        self.k, self.alpha, self.steps = k, alpha, 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.steps % self.k:
            return
        fast = [p.data for p in self.params]
        torch._foreach_lerp_(self.slow, fast, self.alpha)   # slow += alpha * (fast - slow)
        for p, s in zip(fast, self.slow):
            p.copy_(s)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "slow": [s.clone() for s in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for s, v in zip(self.slow, state["slow"]):
            s.copy_(v)


@torch.no_grad()
def whiten_init_(conv: nn.Conv2d, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 n_images: int = 5000, eps: float = 5e-4) -> None:
    """Set `conv`'s kernels to PCA-whitening filters of the normalized training patches (airbench's idea,
    as an initialisation only): the top C_out/2 eigenvectors of the (C_in*k*k)-dim patch covariance,
    each scaled by 1/sqrt(eigenvalue + eps), and their negatives (so a ReLU keeps both signs).
    The kernels are then rescaled to the norm of PyTorch's default init, so the layer's effective
    learning rate is unchanged. x: uint8 (N, C, H, W); mean, std (1, C, 1, 1) in [0, 1] units.
    """
    c_out, c_in, kh, kw = conv.weight.shape
    xb = x[:n_images].float().div(255.0).to(mean.device)
    xb = (xb - mean) / std                                              # (n, C, H, W)
    patches = nn.functional.unfold(xb, (kh, kw)).transpose(1, 2)         # (n, L, C*kh*kw)
    patches = patches.reshape(-1, c_in * kh * kw).double()
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)                             # (D, D)
    evals, evecs = torch.linalg.eigh(cov)                                # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)                          # descending
    k = min(c_out // 2, evecs.shape[1])
    filt = (evecs[:, :k] / (evals[:k] + eps).sqrt()).T                   # (k, D)
    filt = torch.cat([filt, -filt])                                      # (2k, D)
    if len(filt) < c_out:                                                # odd C_out or D < C_out/2: keep the rest random
        filt = torch.cat([filt, conv.weight.reshape(c_out, -1)[len(filt):].double().to(filt.device)])
    target = conv.weight.reshape(c_out, -1).norm(dim=1).mean()          # default init's mean kernel norm
    filt = filt * (target / filt.norm(dim=1).mean())
    conv.weight.copy_(filt.reshape(c_out, c_in, kh, kw).to(conv.weight))
    if conv.bias is not None:
        conv.bias.zero_()


def build_optimizer(model, cfg: TrainConfig, steps_total: int):
    """(optimizer, per-step scheduler) of `cfg` for `steps_total` steps; no weight decay on biases and BN."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)           # no decay on biases and BatchNorm
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    else:
        check_choice("optimizer", cfg.optimizer)
    if cfg.schedule == "onecycle":
        # each phase needs at least two steps, or OneCycleLR divides by zero (a tiny dataset, one epoch)
        shortest = max(min(cfg.warmup, 1.0 - cfg.warmup), 1e-3)
        total = max(steps_total + 1, math.ceil(2 / shortest) + 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total,
                                                    pct_start=cfg.warmup, anneal_strategy="linear",
                                                    cycle_momentum=False, div_factor=cfg.lr_div_start,
                                                    final_div_factor=cfg.lr_div_end)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_total)
    elif cfg.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        check_choice("schedule", cfg.schedule)
    return opt, sched
