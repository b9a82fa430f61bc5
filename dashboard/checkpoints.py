"""Checkpoints: the files on offer, this session's uploads, the cached models, and `Ctx`, the checkpoint a
page looks at. Models are st.cache_resource (shared by every browser session), keyed by path + mtime +
size or by the upload's SHA-256."""
from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

import streamlit as st

from cnnlib.errors import CheckpointError, CNNLibError

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS_ENV = "CNNLENS_CHECKPOINTS"
TRAIN_COMMAND = "python -m cnnlib train --data cifar10 --model simple_cnn --epochs 10 --out {folder}/simple_cnn.pt"
IMPORT_COMMAND = "python -m cnnlib import WEIGHTS --model NAME --data PATH --out {folder}/NAME.pt"
_UPLOADS = "checkpoints.uploads"          # session state: {sha256: (file name, bytes)}


def checkpoint_dir() -> Path:
    """$CNNLENS_CHECKPOINTS (`cnnlib dashboard --checkpoints DIR` sets it), or checkpoints/ at the repository
    root (relative paths: from the repo root)."""
    p = Path(os.path.expanduser(os.environ.get(CHECKPOINTS_ENV) or "checkpoints"))
    return p if p.is_absolute() else REPO_ROOT / p


def _shown_folder() -> str:
    """The checkpoint folder as a command should name it: relative to the working folder when inside it."""
    folder = checkpoint_dir()
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(folder)


def train_command() -> str:
    """`python -m cnnlib train ...` writing into the dashboard's checkpoint folder, wherever it was started."""
    return TRAIN_COMMAND.format(folder=_shown_folder())


def import_command() -> str:
    """`python -m cnnlib import ...` writing into the dashboard's checkpoint folder."""
    return IMPORT_COMMAND.format(folder=_shown_folder())


def list_checkpoints(folder: Path | None = None) -> list[Path]:
    """*.pt / *.pth files in the checkpoint folder (resume states left out), in the order a newcomer should meet
    them: finished training runs (a history and a test accuracy) first, then unfinished runs, then imported
    models and unreadable files; most recently trained first within each group. So an imported model with
    random or foreign weights never becomes the default over a trained one. A folder that is missing, not a
    folder or not readable gives [] (folder_problem() says why)."""
    folder = folder or checkpoint_dir()
    try:
        with os.scandir(folder) as it:
            entries = [Path(e.path) for e in it]
    except OSError:
        return []
    found = []
    for p in entries:
        if p.suffix not in (".pt", ".pth") or p.name.endswith(".resume.pt"):
            continue
        try:
            if p.is_file():
                s = p.stat()
                brief = checkpoint_brief(str(p), s.st_mtime_ns, s.st_size)
                found.append((brief.get("rank", 0), brief.get("created", 0.0) or s.st_mtime, s.st_mtime, p))
        except OSError:   # vanished while listing
            continue
    return [t[-1] for t in sorted(found, key=lambda t: t[:3], reverse=True)]


def folder_problem(folder: Path | None = None) -> str | None:
    """One sentence when the checkpoint folder cannot be listed (missing, a file, no permission), else None."""
    folder = folder or checkpoint_dir()
    try:
        with os.scandir(folder) as it:
            next(it, None)
    except FileNotFoundError:
        return f"The checkpoint folder {folder} does not exist."
    except NotADirectoryError:
        return f"The checkpoint folder {folder} is a file, not a folder."
    except PermissionError:
        return f"The checkpoint folder {folder} cannot be read (permission denied)."
    except OSError as e:
        return f"The checkpoint folder {folder} cannot be read ({e.strerror or type(e).__name__})."
    return None


def _meta(path: str) -> dict:
    """The checkpoint's contents without PyTorch (cnnlib.io.metadata: tensors as shapes); CheckpointError when it
    is not a readable checkpoint. The rare legacy-format file goes through torch."""
    from cnnlib.io import metadata as ckptmeta
    try:
        return ckptmeta.read_meta(path)
    except ckptmeta.NeedsTorch:
        from cnnlib.io import checkpoint
        return checkpoint.load_checkpoint(path)


def checkpoint_brief(path: str, mtime_ns: int, size: int) -> dict:
    """When a checkpoint was trained (its own `created` time, which survives a git clone), its class names and
    its rank in the picker (2: a finished training run, 1: an unfinished one, 0: imported, no history); {} for
    files that are not readable checkpoints (the picker lists them so choosing one says why).
    Read without PyTorch and cached by cnnlib.io.metadata (path, mtime, size)."""
    try:
        ckpt = _meta(path)
    except CNNLibError:
        return {}
    except Exception:  # noqa: BLE001 - an unreadable file is listed; choosing it says why
        return {}
    try:
        created = datetime.datetime.fromisoformat(str(ckpt.get("created", ""))).timestamp()
    except ValueError:
        created = 0.0
    trained = bool(ckpt.get("history"))
    finished = trained and (ckpt.get("metrics") or {}).get("test_acc") is not None
    return {"created": created, "classes": list(ckpt["classes"]), "rank": 2 if finished else int(trained)}


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


MODEL_CACHE_ENTRIES, UPLOAD_CACHE_ENTRIES = 16, 8      # st.cache_resource bounds (bench/loadtest.py's memory bound)


@st.cache_resource(show_spinner=False, max_entries=MODEL_CACHE_ENTRIES)
def _model_from_path(path: str, mtime_ns: int, size: int):
    from cnnlib import inference
    return inference.load_model(path, "cpu")


@st.cache_resource(show_spinner=False, max_entries=UPLOAD_CACHE_ENTRIES)
def _model_from_upload(sha: str, _blob: bytes):
    from cnnlib import inference
    return inference.load_model(_blob, "cpu")


class Ctx:
    """The checkpoint a page looks at.

    key     cache key: "<path>@<mtime_ns>" or "upload:<sha256>:<file name>"
    label   what people read: the file name
    model   nn.Module in eval(), model.meta = checkpoint metadata; loaded (through the shared
            st.cache_resource) on first access, so a page that does not touch it never imports torch
    meta    the checkpoint's metadata: model.meta once the model is loaded, before that the same keys read
            without torch (cnnlib.io.metadata; tensors in it are TensorStubs with a shape). The frame loads the
            model before every page but Home, so those pages always see model.meta.
    data    the sidebar's Data folder, resolved ("" = the checkpoint's own dataset)
    """

    def __init__(self, key: str, label: str, model: Any = None, data: str = "", *, loader=None,
                 stored: dict | None = None):
        if model is None and loader is None:
            raise ValueError("Ctx needs a model or a loader")
        self.key, self.label, self.data = key, label, data
        self._model, self._loader, self._stored = model, loader, stored
        self._meta = None if stored is None else {k: v for k, v in stored.items() if k != "state_dict"}

    @property
    def model(self):
        if self._model is None:
            self._model = self._loader()
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    @property
    def loaded(self) -> bool:
        """Is the model loaded in this Ctx (so meta is model.meta)?"""
        return self._model is not None

    @property
    def meta(self) -> dict:
        return self._model.meta if self._model is not None or self._meta is None else self._meta

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def has_history(self) -> bool:
        return bool(self.meta.get("history"))

    def __repr__(self) -> str:
        return f"Ctx({self.key!r}, loaded={self.loaded}, data={self.data!r})"


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
    """Everything the picker offers: files (list_checkpoints' order), then this session's uploads."""
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
    """A picker choice (a path or upload_choice()) -> Ctx; raises CNNLibError with a clear sentence.
    A file is read without PyTorch (its model loads on first use of ctx.model); an upload is already loaded."""
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
    key = f"{choice}@{s.st_mtime_ns}"
    failed = _FAILED.get(key)
    if failed:                                   # its model failed to load before: say so without retrying
        raise CheckpointError(failed)
    return Ctx(key, Path(choice).name, data=data, stored=_meta(choice),
               loader=lambda: _load_or_note(key, choice, s.st_mtime_ns, s.st_size))


_FAILED: dict[str, str] = {}                   # "<path>@<mtime_ns>" -> why its model cannot be loaded


def _load_or_note(key: str, path: str, mtime_ns: int, size: int):
    """The cached model; a CNNLibError is remembered for the file version (weights for another architecture,
    NaN weights: what cnnlib.io.metadata cannot see), so every page names the problem without reloading."""
    try:
        return _model_from_path(path, mtime_ns, size)
    except CNNLibError as e:
        if len(_FAILED) > 256:
            _FAILED.clear()
        _FAILED[key] = str(e)
        raise


def choice_meta(choice: str) -> dict:
    """The full metadata of a picker choice without torch: read_meta's dict, state_dict as shapes."""
    return _meta(choice)


def open_many(choices: list[str]) -> tuple[list[Ctx], list[str]]:
    """Open several picker choices: (the checkpoints that opened, one sentence for each that did not)."""
    import ui
    runs, problems = [], []
    for choice in choices:
        try:
            run = open_choice(choice)
            run.model                     # noqa: B018 - load now: a run whose weights do not fit says so here
            runs.append(run)
        except CNNLibError as e:
            problems.append(f"Cannot compare {choice_label(choice)}: {ui.one_sentence(str(e))}")
        except Exception as e:  # noqa: BLE001 - one unreadable run must not hide the others
            problems.append(f"Cannot compare {choice_label(choice)}: not a readable checkpoint ({type(e).__name__}).")
    return runs, problems


def summary(ctx: Ctx) -> dict:
    """cnnlib.io.checkpoint.checkpoint_summary of the checkpoint, without torch for a file (the parameter count
    comes from the stored shapes); an upload (already loaded) counts its model's tensors."""
    from cnnlib.io import metadata as ckptmeta
    if ctx._stored is None:
        from cnnlib.io import checkpoint
        return checkpoint.checkpoint_summary({**ctx.meta, "state_dict": ctx.model.state_dict()})
    return ckptmeta.summary(ctx._stored)


def history(ctx: Ctx) -> list[dict]:
    """The per-epoch numbers (no filter snapshots); [] for imported models."""
    return [{k: v for k, v in row.items() if k != "first_layer"} for row in ctx.meta.get("history") or []]
