"""Training from the dashboard: cnnlib.training.jobs.TrainingJobs on the checkpoint folder (one run at a time per folder,
found again after a reload or in another tab), the form's choices, and the run's curves as a Plotly figure."""
from __future__ import annotations

import os

import ui

import checkpoints

DATASETS = ["cifar10", "fashion-mnist", "mnist", "stl10", "a folder (ImageFolder tree)"]
_SEEN = "train_live.seen_status"           # session state: {job id: last status drawn} (to notice the finish)


def jobs():
    """TrainingJobs for the sidebar's checkpoint folder: cheap, holds no state (it is all in <folder>/.jobs/)."""
    from cnnlib.training import jobs as cnnjobs
    return cnnjobs.TrainingJobs(str(checkpoints.checkpoint_dir()))


def current():
    """The running or last run of the checkpoint folder, or None."""
    return jobs().current()


def models() -> list[str]:
    from cnnlib.models import registry as cnnmodels
    return [m for m in ("simple_cnn", "resnet9") if m in cnnmodels.list_models()]


def recipes() -> list[str]:
    from cnnlib import config
    return list(config.RECIPES)


def recipe_defaults(recipe: str) -> dict:
    """The settings the form starts from: the recipe's values (TrainConfig's where it sets none)."""
    from cnnlib import config
    cfg = config.make_config(recipe)
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "dropout": cfg.dropout,
            "model": cfg.model}


def default_threads() -> int:
    """All cores but one for training, so the dashboard stays responsive."""
    return max(1, (os.cpu_count() or 2) - 1)


def dataset_value(choice: str, folder: str) -> str:
    """The `data` setting: a named dataset, or the typed folder (relative paths from the repository root)."""
    if choice in DATASETS[:-1]:
        return choice
    text = os.path.expanduser(folder.strip())
    return text if not text or os.path.isabs(text) else str(checkpoints.REPO_ROOT / text)


def start(name: str, recipe: str, form: dict, threads: int):
    """Start a run; every setting is checked by cnnlib before a process starts (CNNLibError: one sentence).
    Only settings that differ from the recipe are passed, so the recipe's own choices stay in force."""
    base = recipe_defaults(recipe)
    settings = {k: v for k, v in form.items() if k not in base or v != base[k]}
    return jobs().start(name.strip(), recipe=recipe, threads=int(threads), **settings)


def resume(name: str, threads: int):
    return jobs().resume(name, threads=int(threads))


def cancel():
    return jobs().cancel()


def progress_line(prog: dict, running: bool) -> str:
    """"epoch 1 of 3, batch 54 of 120 (running loss 1.932, accuracy 31.2%) · 12 s elapsed": the progress within
    an epoch too, so a one-epoch run shows it moving before its first curve point."""
    epoch, epochs = prog.get("epoch") or 0, prog.get("epochs") or 0
    line = f"epoch {epoch} of {epochs}"
    if running and prog.get("testing"):
        line = f"all {epochs} epochs done, testing the best one on the test split"
    elif running and prog.get("steps"):
        line += f", batch {prog['step']} of {prog['steps']}"
        if prog.get("loss") is not None:
            line += f" (running loss {prog['loss']:.3f}" + (f", accuracy {ui.pct(prog['acc'])})" if prog.get("acc")
                                                             is not None else ")")
    return f"{line} · {ui.duration(prog.get('elapsed'))} elapsed"


def one_sentence(e: Exception) -> str:
    return ui.capitalised(ui.one_sentence(str(e)))


def finished_now(job) -> bool:
    """True once per session when `job` has just been seen to finish (the page then reruns whole, so the
    sidebar's checkpoint picker lists the new file)."""
    import streamlit as st
    seen = st.session_state.setdefault(_SEEN, {})
    before, now = seen.get(job.id), job.status
    seen[job.id] = now
    return before is not None and before != now and now == "finished"


def curves(history: list[dict]):
    """Loss and accuracy per epoch (train solid, validation dashed) as one Plotly figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08)
    ep = [h["epoch"] for h in history]
    for col, key, dash, name, color in ((1, "train_loss", "solid", "train loss", "#1f77b4"),
                                        (1, "val_loss", "dash", "validation loss", "#ff7f0e"),
                                        (2, "train_acc", "solid", "train accuracy", "#1f77b4"),
                                        (2, "val_acc", "dash", "validation accuracy", "#ff7f0e")):
        fig.add_trace(go.Scatter(x=ep, y=[h.get(key) for h in history], mode="lines+markers", name=name,
                                 line=dict(color=color, dash=dash)), row=1, col=col)
    fig.update_xaxes(title_text="epoch", **ui.epoch_ticks(len(ep), panel_px=400))
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_layout(height=320, margin=dict(t=30, b=10), legend=dict(orientation="h", y=-0.25))
    return fig
