"""Checkpoints: the files on offer, this session's uploads, the cached models, and `Ctx`, the checkpoint a
page looks at. Models are st.cache_resource (shared by every browser session), keyed by path + mtime +
size or by the upload's SHA-256."""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from cnnlib.errors import CNNLibError

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS_ENV = "CNNLENS_CHECKPOINTS"
TRAIN_COMMAND = "python -m cnnlib train --data cifar10 --model simple_cnn --epochs 10 --out checkpoints/simple_cnn.pt"
IMPORT_COMMAND = "python -m cnnlib import WEIGHTS --model NAME --data PATH --out checkpoints/NAME.pt"
_UPLOADS = "checkpoints.uploads"          # session state: {sha256: (file name, bytes)}


def checkpoint_dir() -> Path:
    """$CNNLENS_CHECKPOINTS, or checkpoints/ at the repository root (relative paths: from the repo root)."""
    p = Path(os.path.expanduser(os.environ.get(CHECKPOINTS_ENV) or "checkpoints"))
    return p if p.is_absolute() else REPO_ROOT / p


def list_checkpoints(folder: Path | None = None) -> list[Path]:
    """*.pt / *.pth files in the checkpoint folder, most recently trained first (resume states left out)."""
    folder = folder or checkpoint_dir()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    found = []
    for p in entries:
        if p.suffix not in (".pt", ".pth") or p.name.endswith(".resume.pt"):
            continue
        try:
            if p.is_file():
                s = p.stat()
                created = checkpoint_brief(str(p), s.st_mtime_ns, s.st_size).get("created", 0.0)
                found.append((created or s.st_mtime, s.st_mtime, p))
        except OSError:   # vanished while listing
            continue
    return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


@st.cache_data(show_spinner=False, max_entries=512)
def checkpoint_brief(path: str, mtime_ns: int, size: int) -> dict:
    """When a checkpoint was trained (its own `created` time, which survives a git clone) and its class
    names; {} for files that are not readable checkpoints (the picker lists them so choosing one says why)."""
    from cnnlib import checkpoint
    try:
        ckpt = checkpoint.load_checkpoint(path)
    except CNNLibError:
        return {}
    try:
        created = datetime.datetime.fromisoformat(str(ckpt.get("created", ""))).timestamp()
    except ValueError:
        created = 0.0
    return {"created": created, "classes": list(ckpt["classes"])}


def same_dataset(choices: list[str], classes: list[str]) -> list[str]:
    """The checkpoint files among `choices` trained on the same classes (the runs worth comparing)."""
    out = []
    for c in choices:
        try:
            s = os.stat(c)
        except OSError:
            continue
        if checkpoint_brief(c, s.st_mtime_ns, s.st_size).get("classes") == list(classes):
            out.append(c)
    return out


@st.cache_resource(show_spinner=False, max_entries=16)
def _model_from_path(path: str, mtime_ns: int, size: int):
    from cnnlib import inference
    return inference.load_model(path, "cpu")


@st.cache_resource(show_spinner=False, max_entries=8)
def _model_from_upload(sha: str, _blob: bytes):
    from cnnlib import inference
    return inference.load_model(_blob, "cpu")


@dataclass
class Ctx:
    """The checkpoint a page looks at."""
    key: str            # cache key: "<path>@<mtime_ns>" or "upload:<sha256>:<file name>"
    label: str          # what people read: the file name
    model: Any          # nn.Module in eval(), model.meta = checkpoint metadata
    data: str = ""      # the sidebar's Data folder, resolved ("" = the checkpoint's own dataset)

    @property
    def meta(self) -> dict:
        return self.model.meta

    @property
    def classes(self) -> list[str]:
        return list(self.model.meta["classes"])

    @property
    def has_history(self) -> bool:
        return bool(self.model.meta.get("history"))


# ----------------------------------------------------------------------------- uploads of this session

def uploads() -> dict:
    return st.session_state.setdefault(_UPLOADS, {})


def add_upload(name: str, blob: bytes) -> str:
    """Load an uploaded checkpoint (raises CNNLibError); returns its picker choice."""
    sha = hashlib.sha256(blob).hexdigest()
    _model_from_upload(sha, blob)
    uploads()[sha] = (name, blob)
    return upload_choice(sha, name)


def upload_choice(sha: str, name: str) -> str:
    return f"upload:{sha}:{name}"


def checkpoint_choices() -> list[str]:
    """Everything the picker offers: files newest first, then this session's uploads."""
    return [str(p) for p in list_checkpoints()] + [upload_choice(sha, n) for sha, (n, _) in uploads().items()]


def choice_label(choice: str) -> str:
    """What the picker shows: "name.pt · date" for files, "name.pt (uploaded)" for uploads."""
    if choice.startswith("upload:"):
        return f"{choice.split(':', 2)[2]} (uploaded)"
    p = Path(choice)
    try:
        s = p.stat()
        stamp = checkpoint_brief(str(p), s.st_mtime_ns, s.st_size).get("created") or s.st_mtime
        when = datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")
    except OSError:
        when = "gone"
    return f"{p.name} · {when}"


def open_choice(choice: str, data: str = "") -> Ctx:
    """A picker choice (a path or upload_choice()) -> Ctx; raises CNNLibError with a clear sentence."""
    if choice.startswith("upload:"):
        sha = choice.split(":", 2)[1]
        name, blob = uploads().get(sha, (None, None))
        if blob is None:
            raise CNNLibError("the uploaded checkpoint is no longer in this session; upload it again.")
        return Ctx(choice, name, _model_from_upload(sha, blob), data)
    try:
        s = os.stat(choice)
    except OSError:
        raise CNNLibError(f"checkpoint {Path(choice).name} does not exist any more.") from None
    return Ctx(f"{choice}@{s.st_mtime_ns}", Path(choice).name, _model_from_path(choice, s.st_mtime_ns, s.st_size),
               data)


def open_many(choices: list[str]) -> tuple[list[Ctx], list[str]]:
    """Open several picker choices: (the checkpoints that opened, one sentence for each that did not)."""
    import ui
    runs, problems = [], []
    for choice in choices:
        try:
            runs.append(open_choice(choice))
        except CNNLibError as e:
            problems.append(f"Cannot compare {choice_label(choice)}: {ui.one_sentence(str(e))}")
        except Exception as e:  # noqa: BLE001 - one unreadable run must not hide the others
            problems.append(f"Cannot compare {choice_label(choice)}: not a readable checkpoint ({type(e).__name__}).")
    return runs, problems


def summary(ctx: Ctx) -> dict:
    """cnnlib.checkpoint.checkpoint_summary of a loaded checkpoint (its state dict comes from the model)."""
    from cnnlib import checkpoint
    return checkpoint.checkpoint_summary({**ctx.meta, "state_dict": ctx.model.state_dict()})


def history(ctx: Ctx) -> list[dict]:
    """The per-epoch numbers (no filter snapshots); [] for imported models."""
    return [{k: v for k, v in row.items() if k != "first_layer"} for row in ctx.meta.get("history") or []]
