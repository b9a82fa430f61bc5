"""Train a CNN and write a CNN Lens checkpoint (best by validation accuracy).

    python -m cnnlib train --data cifar10 --model simple_cnn --epochs 10 --out checkpoints/simple_cnn.pt
    torchrun --nproc_per_node=2 -m cnnlib train ...        # DistributedDataParallel, rank 0 writes

The whole training split sits on the device as one uint8 tensor; each step
gathers a batch, augments it with tensor ops, normalizes it and runs the
model (fp32 or bf16 autocast, whichever `cnnlib.training.precision` measured faster;
channels_last). Optional helpers after each optimiser step (cnnlib/training/optim.py):
Lookahead and a weight EMA; with the EMA on, validation, test and the stored
state_dict are the EMA's weights. After every epoch: validation, a summary
line, the best checkpoint (atomic), and a resume state beside it
(`<out>.resume.pt`, removed when the run finishes). The checkpoint also
records which precision was used and why (`"precision": {"used", "why"}`).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import re
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from cnnlib.data import datasets as data_mod
from cnnlib.io.checkpoint import atomic_torch_save, load_checkpoint, safe_torch_load, save_checkpoint
from cnnlib.config import RECIPES, TrainConfig, check_choice, make_config
from cnnlib.errors import TrainingError
from cnnlib.inference import resolve_device
from cnnlib.models.registry import first_conv, get_model, list_models
from cnnlib.training.optim import build_optimizer
from cnnlib.modelops import autocast, forward_batches, to_input
from cnnlib.training.optim import Lookahead, WeightEMA, whiten_init_
from cnnlib.training.precision import describe_device
from cnnlib.training.precision import resolve as resolve_precision


# ----------------------------------------------------------------------------- command line

def _field_help() -> dict[str, str]:
    """Help text for each TrainConfig field: the comment beside it in config.py."""
    import inspect
    from cnnlib import config
    src = inspect.getsource(config.TrainConfig)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): [^=]+=[^#\n]*#(.*)$", src, re.M)}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """One flag per TrainConfig field; unset flags fall back to the recipe, then the dataclass."""
    p = argparse.ArgumentParser(prog="python -m cnnlib train", add_help=add_help,
                                description="Train a CNN and write a CNN Lens checkpoint.")
    helps = _field_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "") + f" (default: {f.default!r})"
        if f.name == "recipe":
            p.add_argument(flag, default="default", choices=sorted(RECIPES), help=helps.get("recipe", ""))
        elif f.type in (bool, "bool"):
            p.add_argument(flag, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            extra = {"choices": list_models()} if f.name == "model" else {}
            p.add_argument(flag, type=kind, default=None, help=text, **extra)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k != "recipe"}
    return make_config(args.recipe, **values)


# ----------------------------------------------------------------------------- one epoch, evaluation

def train_one_epoch(model, optimizer, scheduler, x_train, y_train, cfg: TrainConfig, ctx: dict, epoch: int) -> dict:
    """One pass over the (sharded) training split. Returns mean loss/accuracy and seconds."""
    model.train()
    t0 = time.perf_counter()
    n = len(x_train)
    perm = torch.randperm(n, generator=ctx["order_gen"])                 # same order on every rank
    shard = perm[: n - n % ctx["world"]][ctx["rank"]::ctx["world"]]      # equal shards under DDP
    batches = torch.split(shard, cfg.batch_size)
    loss_sum = torch.zeros((), device=ctx["device"])
    correct = torch.zeros((), device=ctx["device"], dtype=torch.int64)
    seen = 0
    bar = None
    if cfg.progress and ctx["rank"] == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)
    for step, idx in enumerate(batches):
        idx = idx.to(ctx["device"])
        xb, yb = x_train[idx], y_train[idx]                              # (B, C, H, W) uint8, (B,)
        if cfg.augment:
            alternate = cfg.flip and cfg.flip_mode == "alternate"
            xb = data_mod.augment_batch(xb, cfg.crop_padding, cfg.flip and not alternate, generator=ctx["aug_gen"])
            if alternate:                                                # this image's coin, flipped every epoch
                mask = (ctx["flip_bits"][idx] ^ bool(epoch % 2))[:, None, None, None]
                xb = torch.where(mask, xb.flip(3), xb)
        xb = to_input(xb, ctx["mean"], ctx["std"], ctx["channels_last"])
        with autocast(ctx["device"], ctx["dtype"]):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        for hook in ctx.get("after_step", ()):                           # lookahead, weight EMA
            hook()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == yb).sum()
        seen += len(idx)
        if bar is not None and (step % 20 == 0 or step == len(batches) - 1):
            running = loss_sum.item() / seen
            if not math.isfinite(running):
                break
            bar.set_postfix(loss=f"{running:.3f}", acc=f"{correct.item() / seen:.3f}",
                            lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), torch.tensor(float(seen), device=loss_sum.device)])
    if ctx["world"] > 1:
        dist.all_reduce(totals)
    loss_sum, correct_n, seen_n = totals.tolist()
    return {"loss": loss_sum / seen_n, "acc": correct_n / seen_n, "seconds": time.perf_counter() - t0}


def evaluate(model, x, y, mean, std, batch_size: int, dtype=None, channels_last: bool = False) -> dict:
    """Loss, accuracy and probabilities (float32 (N, K)) of `model` on uint8 images x (N, C, H, W)."""
    was_training = model.training
    model.eval()
    probs, loss_sum = [], 0.0
    y = y.to(mean.device)
    for i, logits in forward_batches(model, x, mean, std, batch_size, dtype, channels_last):
        loss_sum += F.cross_entropy(logits, y[i:i + len(logits)], reduction="sum").item()
        probs.append(torch.softmax(logits, 1).cpu())
    model.train(was_training)
    probs = torch.cat(probs) if probs else torch.zeros(0)
    acc = (probs.argmax(1) == y.cpu()).float().mean().item() if len(y) else float("nan")
    return {"loss": loss_sum / max(len(y), 1), "acc": acc, "probs": probs}


# ----------------------------------------------------------------------------- the run

def model_kwargs(cfg: TrainConfig, splits: dict) -> dict:
    c, h, w = splits["train"][0].shape[1:]
    kwargs = {"num_classes": len(splits["classes"]), "in_channels": int(c), "image_size": int(h), "dropout": cfg.dropout}
    if cfg.width:
        kwargs["width"] = cfg.width
    return kwargs


def resume_path(out: str) -> str:
    return out + ".resume.pt"


def run(cfg: TrainConfig) -> dict:
    """Train according to `cfg`; returns the final checkpoint dict (rank 0) or {} (other ranks)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _run(cfg, device, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(cfg: TrainConfig, device: torch.device, rank: int, world: int) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    splits = data_mod.load_dataset(cfg.data, cfg.data_root or None, val_size=cfg.val_size, split_seed=cfg.split_seed,
                                   download=cfg.download, test_fraction=cfg.test_fraction,
                                   image_size=cfg.image_size, resize=cfg.resize)
    x_train, y_train = (t.to(device) for t in splits["train"])
    mean_l, std_l = data_mod.channel_stats(splits["train"][0])
    mean = torch.tensor(mean_l, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std_l, device=device).view(1, -1, 1, 1)
    channels_last = True  # faster on CUDA and, measured, on CPU (oneDNN) in bf16 and fp32
    kwargs = model_kwargs(cfg, splits)
    prec = [None, None]
    if rank == 0:                                             # one measurement; every rank uses its answer
        prec = list(resolve_precision(cfg, device, cfg.model, kwargs, list(x_train.shape[1:]), channels_last))
    if world > 1:
        dist.broadcast_object_list(prec, src=0)
    dtype, precision_record = prec

    torch.manual_seed(cfg.seed)
    model = get_model(cfg.model, **kwargs)                    # seeded: interpret.initial_first_layer relies on it
    if cfg.weights:
        from cnnlib.models.weights import load_weights_into
        load_weights_into(model, cfg.weights, cfg.model)
    elif cfg.init == "whiten":
        whiten_init_(first_conv(model)[1], x_train, mean.cpu(), std.cpu())
    else:
        check_choice("init", cfg.init)
    if cfg.bn_momentum > 0:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
    initial_filters = first_conv(model)[1].weight.detach().float().to(torch.float16).clone()  # epoch 0
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil((len(x_train) - len(x_train) % world) // world / cfg.batch_size)
    optimizer, scheduler = build_optimizer(model, cfg, steps_per_epoch * cfg.epochs)
    ctx = {"device": device, "dtype": dtype, "mean": mean, "std": std, "channels_last": channels_last,
           "rank": rank, "world": world,
           "order_gen": torch.Generator().manual_seed(cfg.seed),
           "aug_gen": torch.Generator().manual_seed(cfg.seed * 1000 + rank + 1),
           # flip_mode alternate: each image's flip in odd epochs; even epochs flip the others (bool (N,))
           "flip_bits": torch.rand(len(x_train), generator=torch.Generator().manual_seed(cfg.seed + 7)).lt(0.5)
                        .to(device),
           "after_step": []}
    lookahead = Lookahead(model, cfg.lookahead_k, cfg.lookahead_alpha) if cfg.lookahead_k > 0 else None
    if lookahead is not None:
        ctx["after_step"].append(lookahead.step)
    ema = WeightEMA(model, cfg.ema) if cfg.ema > 0 else None
    if ema is not None:
        ctx["after_step"].append(lambda: ema.update(model))
    averaged = ema.module if ema is not None else model       # the network validated, tested and stored
    history, best_acc, best_epoch, start_epoch, prior_seconds = [], -1.0, 0, 1, 0.0

    if cfg.resume:
        state = safe_torch_load(resume_path(cfg.out)) if os.path.exists(resume_path(cfg.out)) else None
        if state is None:
            raise TrainingError(f"--resume: no interrupted run to continue ({resume_path(cfg.out)} does not exist)")
        saved = TrainConfig.from_dict(state["config"])
        for key in (f.name for f in dataclasses.fields(TrainConfig) if f.name not in TrainConfig.RUN_CONTROL):
            if getattr(saved, key) != getattr(cfg, key):
                raise TrainingError(f"--resume: {key} was {getattr(saved, key)!r} in the interrupted run but is "
                                    f"{getattr(cfg, key)!r} now; resume with the same settings")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ctx["order_gen"].set_state(state["order_gen"])
        ctx["aug_gen"].set_state(state["aug_gen"][rank] if rank < len(state["aug_gen"]) else state["aug_gen"][0])
        torch.set_rng_state(state["torch_rng"])
        if lookahead is not None:
            lookahead.load_state_dict(state["lookahead"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, best_acc, best_epoch = state["history"], state["best_val_acc"], state["best_epoch"]
        start_epoch, prior_seconds = state["epoch"] + 1, state["train_seconds"]
        if rank == 0:
            print(f"resuming {cfg.out} after epoch {state['epoch']} of {cfg.epochs}", flush=True)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_base = {
        "model": {"name": cfg.model, "kwargs": kwargs},
        "classes": splits["classes"],
        "input_shape": list(splits["train"][0].shape[1:]),
        "normalization": {"mean": mean_l, "std": std_l},
        **({"preprocessing": {"resize": cfg.resize or cfg.image_size, "crop": cfg.image_size}}
           if cfg.image_size and splits["name"] not in data_mod.NAMED else {}),
        "data": {"name": splits["name"], "path": splits["path"], "split_seed": cfg.split_seed, "sizes": splits["sizes"]},
        "config": cfg.to_dict(),
        **({"initial_first_layer": initial_filters} if cfg.record_filters else {}),
        "device": describe_device(device, dtype) + (f" x{world} (DDP)" if world > 1 else ""),
        "precision": precision_record,
    }
    x_val, y_val = splits["val"]
    if rank == 0:
        print(f"{cfg.model} on {splits['name']}: {splits['sizes']} images, {len(splits['classes'])} classes, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters, {ckpt_base['device']} "
              f"({precision_record['why']})", flush=True)

    def save_state(epoch: int, elapsed: float) -> None:
        """The resume state after `epoch` (0: before the first, so a run stopped in its first epoch starts again
        with the same settings, weights and random streams). Reads best_acc, best_epoch and history at call time."""
        atomic_torch_save({"config": cfg.to_dict(), "epoch": epoch, "model": _cpu_state(model),
                           "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "order_gen": ctx["order_gen"].get_state(), "aug_gen": [ctx["aug_gen"].get_state()],
                           "torch_rng": torch.get_rng_state(), "history": history,
                           "best_val_acc": best_acc, "best_epoch": best_epoch, "train_seconds": elapsed,
                           **({"lookahead": lookahead.state_dict()} if lookahead is not None else {}),
                           **({"ema": ema.state_dict()} if ema is not None else {})},
                          resume_path(cfg.out))

    fresh = rank == 0 and not cfg.resume
    if fresh:
        save_state(0, 0.0)                      # a Cancel in the first epoch leaves something to resume
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            stats = train_one_epoch(net, optimizer, scheduler, x_train, y_train, cfg, ctx, epoch)
            if not math.isfinite(stats["loss"]):
                raise TrainingError(f"epoch {epoch}: the training loss became {stats['loss']} (not finite); stopping. "
                                    f"The last good checkpoint ({cfg.out}, epoch {best_epoch or 'none yet'}) is untouched. "
                                    f"Try a lower --lr (now {cfg.lr}) or --grad-clip 1.0.")
            val = evaluate(averaged, x_val, y_val, mean, std, cfg.eval_batch_size, dtype, channels_last)
            row = {"epoch": epoch, "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
                   "val_acc": val["acc"], "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - t_epoch,
                   "elapsed": prior_seconds + time.perf_counter() - t_start}   # s since the run started (data load on)
            if cfg.record_filters:
                row["first_layer"] = first_conv(averaged)[1].weight.detach().float().cpu().to(torch.float16).clone()
            history.append(row)
            improved = val["acc"] > best_acc
            if improved:
                best_acc, best_epoch = val["acc"], epoch
            elapsed = prior_seconds + time.perf_counter() - t_start
            if rank == 0:
                print(f"epoch {epoch:3d}/{cfg.epochs}  train loss {stats['loss']:.4f} acc {stats['acc']:.4f}  "
                      f"val loss {val['loss']:.4f} acc {val['acc']:.4f}  lr {row['lr']:.2e}  "
                      f"{row['seconds']:.1f}s{'  *best' if improved else ''}", flush=True)
                if improved:
                    save_checkpoint({**ckpt_base, "state_dict": _cpu_state(averaged), "history": history,
                                     "best_epoch": best_epoch,
                                     "metrics": {"val_acc": best_acc, "test_acc": None, "test_loss": None,
                                                 "train_seconds": elapsed}}, cfg.out)
                save_state(epoch, elapsed)
            if world > 1:
                dist.barrier()
    except KeyboardInterrupt:
        raise                                   # cancelled: the resume state stays
    except BaseException:
        if fresh and not history and os.path.exists(resume_path(cfg.out)):
            os.unlink(resume_path(cfg.out))     # failed before any epoch: nothing to resume
        raise

    if rank != 0:
        return {}
    import signal
    print(f"testing the best epoch ({best_epoch}) on the test split", flush=True)   # joblog.FINAL_PASS
    try:
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)   # every epoch is done: a Cancel now cannot undo that
    except ValueError:                                          # not the main thread
        before = None
    try:
        return _finish(cfg, averaged, splits, history, best_acc, best_epoch, prior_seconds, t_start, channels_last,
                       mean, std)
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


def _finish(cfg, averaged, splits, history, best_acc, best_epoch, prior_seconds, t_start, channels_last,
            mean, std) -> dict:
    """The final test pass on the best epoch's weights, written into the checkpoint with the history."""
    train_seconds = prior_seconds + time.perf_counter() - t_start
    best = load_checkpoint(cfg.out)
    averaged.load_state_dict(best["state_dict"])
    x_test, y_test = splits["test"]
    # fp32 here, so anyone re-evaluating the stored weights (cnnlib.diagnose.evaluate, the CI check) gets the same numbers
    test = evaluate(averaged, x_test, y_test, mean, std, cfg.eval_batch_size, None, channels_last)
    best["history"] = history
    best["metrics"] = {"val_acc": best_acc, "test_acc": test["acc"], "test_loss": test["loss"],
                       "train_seconds": train_seconds}
    best["test_predictions"] = {"targets": y_test.to(torch.int16), "preds": test["probs"].argmax(1).to(torch.int16),
                                "probs": test["probs"].to(torch.float16)}
    best["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    save_checkpoint(best, cfg.out)
    if os.path.exists(resume_path(cfg.out)):
        os.unlink(resume_path(cfg.out))
    from cnnlib.training.plots import save_training_plot
    plot = save_training_plot(history, os.path.join(os.path.dirname(os.path.abspath(cfg.out)), "training_results.png"),
                              title=f"{cfg.model} on {splits['name']}", best_epoch=best_epoch)
    print(f"test accuracy {test['acc']:.4f} (loss {test['loss']:.4f}) with the best epoch {best_epoch} "
          f"(val {best_acc:.4f}); trained in {train_seconds:.1f}s; wrote {cfg.out} and {plot}", flush=True)
    return best


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        run(cfg)
    except KeyboardInterrupt:
        held = (f"{cfg.out} holds the best epoch so far" if os.path.exists(cfg.out)
                else "no epoch had finished, so --resume starts again with the same settings")
        print(f"\ninterrupted; {held}. Continue with the same command plus --resume.", flush=True)
        return 130
    return 0
