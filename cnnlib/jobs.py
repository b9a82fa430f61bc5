"""Training runs in a background process, owned by a long-lived (dashboard) server: start, watch, cancel, reattach.

    from cnnlib.jobs import TrainingJobs
    jobs = TrainingJobs("checkpoints")              # one per checkpoint folder; cheap, holds no state of its own
    job = jobs.start("my_run", epochs=5, lr=1e-3, batch_size=64, recipe="default", data="cifar10", dropout=0.2)
    job = jobs.current()                             # after a page reload, in another browser tab or server process
    job.status, job.error                            # "running" | "finished" | "cancelled" | "interrupted" | "failed"
    job.progress()   # {"epoch", "epochs", "completed", "step", "steps", "fraction", "elapsed"}
    job.history()    # [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", ...}, ...]
    job.log_tail(20)                                 # the last lines of the run's output, as one str
    jobs.cancel()                                    # SIGINT, then SIGKILL after `cancel_timeout` s; returns the Job
    jobs.resume("my_run")                            # continue a cancelled or interrupted run where it stopped

API
---
``TrainingJobs(folder, *, progress_interval=0.5, cancel_timeout=10.0)``
    ``folder``: where checkpoints go (the dashboard lists its ``*.pt``). The state lives in ``<folder>/.jobs/``:
    ``lock`` (an fcntl.flock mutex holding the pid of the process inside it; the kernel drops it when that
    process dies, so a stale lock is reclaimed by itself), ``status.json`` (the current or last run) and
    ``<name>.log`` (the run's stdout + stderr). One run at a time per folder, across threads, browser sessions
    and server processes.

``start(name, *, overwrite=False, **settings) -> Job``
    ``settings``: any ``cnnlib.config.TrainConfig`` field (epochs, batch_size, lr, recipe, model, data,
    dropout, threads, ...); unset fields come from the recipe, then TrainConfig. Everything is checked
    BEFORE a process starts, and a problem raises ``CNNLibError`` (``DatasetError`` for data) with one
    sentence: an unknown field, a wrong type or an out-of-range value, an unknown recipe/model/optimizer,
    a weights file that does not exist, a dataset that is not on disk and cannot be downloaded, a name that
    is not a plain file name, ``<name>.pt`` already in the folder (pass ``overwrite=True``, or pick another
    name), ``<name>.pt.resume.pt`` left by an interrupted run (``resume``/``overwrite``), or a run already
    active: "a training run (NAME, started HH:MM) is already running; wait for it or cancel it".
    ``out`` is not a setting: the checkpoint is ``<folder>/<name>.pt``. ``resume=True`` continues the
    interrupted run of that name and needs the same settings (``resume(name)`` fills them in).
    The run is ``sys.executable -m cnnlib train ... --out <folder>/<name>.pt`` in its own process group.

``resume(name=None, **run_control) -> Job``
    Continue ``name`` (default: the current job) from ``<folder>/<name>.pt.resume.pt`` with its own settings;
    ``run_control`` may change TrainConfig.RUN_CONTROL fields only (threads, device, ...).

``current() -> Job | None``
    The running or last run of this folder, found again from the files (None when there was none).

``cancel(timeout=None) -> Job | None``
    Stops the active run: SIGINT (train saves nothing more and says how to resume), SIGKILL after
    ``timeout`` (default ``cancel_timeout``) seconds. The best checkpoint so far and the resume state stay.
    Returns the job, then "cancelled" (or already finished); None when there was no run.

``Job`` (a handle; its status is read again from the files on every access)
    ``name``, ``out`` (checkpoint path), ``log`` (log path), ``id``, ``started`` (datetime), ``config`` (the
    resolved TrainConfig as a dict), ``settings`` (what was passed to start), ``pid``;
    ``status``: "starting" | "running" | "finished" | "cancelled" | "interrupted" | "failed" (``running`` is
    True for the first two); "interrupted": the process stopped without finishing and without a cancel
    (the server stopped, or the process was signalled); ``error``: one sentence for "failed"/"interrupted"
    (for a failed run: the last error line of its log), else None; ``ended`` (datetime or None),
    ``returncode``; ``resumable``: True when a resume state is there and the run is not active.
    ``progress()``: {"epoch": the epoch in progress (1-based), or the last completed one once stopped,
    "epochs", "completed": epochs done, "step", "steps": batches done / in that epoch (steps None until the
    first progress-bar line; step 0 once stopped, since resume redoes a stopped epoch), "fraction": overall
    in [0, 1] (1.0 when finished; it reaches 1.0 while the test split is evaluated at the end), "elapsed":
    seconds}; parsed from train's tqdm bar ("epoch E/N: ...| step/steps") and its per-epoch lines in the
    log, which the bar redraws every ``progress_interval`` s.
    ``history()``: per-epoch dicts (as in a checkpoint's "history", with "first_layer" tensors) from
    ``<out>.resume.pt`` while running, from the final checkpoint afterwards; [] before the first epoch.
    ``log_tail(n=20)``: the last n lines of the log (progress-bar redraws collapsed to their last state).
    ``wait(timeout)``: block until the run is no longer active; returns the status. ``cancel(timeout)``.

A page (sketch): build ``TrainingJobs(folder)`` on every rerun (all state is in the files, so a reload or a
second tab sees the same run); ``try: jobs.start(name, **form) except CNNLibError as e: st.error(str(e))``;
draw ``jobs.current()`` in an ``@st.fragment(run_every=1)``: ``st.progress(job.progress()["fraction"])``,
curves from ``job.history()``, ``st.code(job.log_tail())``, a Cancel button calling ``jobs.cancel()`` (it
blocks until the process is gone: usually 1-3 s, at most ``cancel_timeout`` + 10 s), and, when
``job.resumable``, a Resume button calling ``jobs.resume(job.name)``. Passing ``threads`` (e.g. cores - 1)
keeps the server responsive; train's default uses every core.

Life cycle: the training process dies with the server. It is started from a dedicated thread of the
server that lives exactly as long as the child (PR_SET_PDEATHSIG is tied to the creating *thread*, so it
must not be a Streamlit script thread, which ends after every rerun); the child gets SIGTERM when the
server process dies (even by SIGKILL), and an atexit handler interrupts it (SIGINT, then SIGKILL) on a
normal server exit. What a killed run leaves is the resume state train writes after every epoch, so
``resume(name)`` continues it; ``current()`` then says "interrupted".
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import fcntl
import json
import math
import numbers
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

from .config import RECIPES, TrainConfig, make_config
from .errors import CNNLibError, DatasetError

__all__ = ["ACTIVE", "STATUSES", "Job", "TrainingJobs"]

STATUSES = ("starting", "running", "finished", "cancelled", "interrupted", "failed")
ACTIVE = ("starting", "running")
STATE_DIR = ".jobs"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# TrainConfig fields a start() may not set: the job decides them.
_FIXED = {"out": "the checkpoint path comes from the run's name ({folder}/NAME.pt), so do not pass out"}
# Value rules for TrainConfig fields, checked before anything starts: (test, what the value must be).
_RULES = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "eval_batch_size": (lambda v: v >= 1, "at least 1"),
    "val_size": (lambda v: v >= 0, "0 or more"),
    "test_fraction": (lambda v: 0 < v < 1, "between 0 and 1"),
    "split_seed": (lambda v: v >= 0, "0 or more"),
    "seed": (lambda v: v >= 0, "0 or more"),
    "image_size": (lambda v: v >= 0, "0 or more"),
    "resize": (lambda v: v >= 0, "0 or more"),
    "width": (lambda v: v >= 0, "0 or more"),
    "threads": (lambda v: v >= 0, "0 or more"),
    "crop_padding": (lambda v: v >= 0, "0 or more"),
    "dropout": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "lr": (lambda v: v > 0, "above 0"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "momentum": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "warmup": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "label_smoothing": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "grad_clip": (lambda v: v >= 0, "0 or more"),
}
_CHOICES = {"optimizer": ("adamw", "adam", "sgd"), "schedule": ("onecycle", "cosine", "constant"),
            "precision": ("auto", "fp32", "bf16")}
_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text"}

# ----------------------------------------------------------------------------- processes (Linux /proc)


def _proc_start(pid) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None when it is gone."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        if sys.platform.startswith("linux"):
            return None
        try:                                   # no /proc: the pid alone
            os.kill(int(pid), 0)
            return 0
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X", "x"):
        return None
    return int(fields[19])


def _alive(pid, start) -> bool:
    """The process `pid` exists, is not a zombie and (when `start` is known) is the same process."""
    now = _proc_start(pid)
    return now is not None and (not start or not now or now == start)


def _is_me(pid, start) -> bool:
    return pid == os.getpid() and (not start or start == _proc_start(os.getpid()))


def _signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group the run leads (start_new_session: pgid == pid), else to the pid."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# prctl and signal resolved once, in the parent: the forked child only calls them.
try:
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _PRCTL_ARGS = (1, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _PRCTL = _LIBC.prctl if _LIBC is not None else None       # prctl(PR_SET_PDEATHSIG=1, SIGTERM)
    _C_SIGNAL = _LIBC.signal if _LIBC is not None else None
    if _C_SIGNAL is not None:
        _C_SIGNAL.restype = ctypes.c_void_p
        _C_SIGNAL.argtypes = (ctypes.c_int, ctypes.c_void_p)
except (ImportError, OSError, AttributeError):  # pragma: no cover - non-Linux
    _PRCTL = _C_SIGNAL = None


def _child_setup(parent_pid: int):
    """preexec_fn: die with the server (SIGTERM), and take SIGINT (cancel) even if the server ignores it."""
    def setup():
        if _PRCTL is not None:
            _PRCTL(*_PRCTL_ARGS)
            if os.getppid() != parent_pid:    # the server died before prctl took effect
                os._exit(1)
        if _C_SIGNAL is not None:
            _C_SIGNAL(signal.SIGINT, None)     # SIG_DFL: Python then installs its KeyboardInterrupt handler
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    return setup


# Children of this process: id -> Popen, and the thread that started and waits for each.
_CHILDREN: dict[str, subprocess.Popen] = {}
_MONITORS: dict[str, threading.Thread] = {}
_REGISTRY_LOCK = threading.Lock()
_ATEXIT = []


def _stop_children(grace: float = 3.0) -> None:
    """atexit: interrupt every run this process started (SIGINT, then SIGKILL), so none outlives the server."""
    with _REGISTRY_LOCK:
        procs = [p for p in _CHILDREN.values() if p.poll() is None]
        threads = list(_MONITORS.values())
    for p in procs:
        _signal_group(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)
    for t in threads:                          # let each monitor record how its run ended
        t.join(0.5)


def _register_atexit() -> None:
    with _REGISTRY_LOCK:
        if not _ATEXIT:
            atexit.register(_stop_children)
            _ATEXIT.append(True)


# ----------------------------------------------------------------------------- small helpers

def _sentence(text: str) -> str:
    text = " ".join(str(text).split()).rstrip(". ")
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M")


def _atomic_json(path: str, obj: dict) -> None:
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _read_tail(path: str, nbytes: int = 256 * 1024, start: int = 0) -> str:
    """The last `nbytes` of a log, never before byte `start` (where this run's output begins)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - nbytes) if size >= start else 0)
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def _lines(text: str) -> list[str]:
    """Log lines with each progress-bar redraw ("...\\r...\\r") collapsed to its last visible state."""
    out = []
    for raw in text.split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        if parts:
            out.append(parts[-1].rstrip())
    return out


_BAR = re.compile(r"epoch (\d+)/(\d+):\s*\d+%\|[^|\n\r]*\|\s*(\d+)/(\d+)")
_EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s+train loss", re.M)
_RESUMING = re.compile(r"resuming .* after epoch (\d+) of (\d+)")
_FINISHED_LINE = re.compile(r"^test accuracy ", re.M)
_ERROR_PATTERNS = (re.compile(r"^error: (.+)$"),                                # cnnlib's CLI: one message
                   re.compile(r"^\S+: error: (.+)$"),                           # argparse
                   re.compile(r"^((?:[\w.]+\.)?\w*(?:Error|Exception|Exit)\b.*)$"))  # a traceback's last line


def _last_error(text: str) -> str | None:
    for line in reversed(_lines(text)):
        for pat in _ERROR_PATTERNS:
            m = pat.match(line.strip())
            if m:
                return _sentence(m.group(1))
    return None


_LOAD_CACHE: dict[str, tuple] = {}
_LOAD_LOCK = threading.Lock()


def _load_cached(path: str):
    """safe_torch_load(path), cached by (mtime, size): pages poll history() every second or two."""
    from .checkpoint import safe_torch_load
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    with _LOAD_LOCK:
        hit = _LOAD_CACHE.get(path)
    if hit and hit[0] == key:
        return hit[1]
    value = safe_torch_load(path, "resume state" if path.endswith(".resume.pt") else "checkpoint")
    with _LOAD_LOCK:
        _LOAD_CACHE[path] = (key, value)
    return value


def _can_download(name: str, timeout: float = 3.0) -> bool:
    """Whether one of torchvision's download hosts for dataset `name` answers (a TCP connection)."""
    import torchvision.datasets as tvd

    from .data import NAMED
    cls = getattr(tvd, NAMED[name])
    urls = [m for m in getattr(cls, "mirrors", [])] or [getattr(cls, "url", "")]
    hosts = []
    for u in urls:
        p = urlparse(u if "://" in u else "https://" + u)
        if p.hostname and (p.hostname, p.port or (80 if p.scheme == "http" else 443)) not in hosts:
            hosts.append((p.hostname, p.port or (80 if p.scheme == "http" else 443)))
    for host in hosts[:2]:
        try:
            socket.create_connection(host, timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


# ----------------------------------------------------------------------------- checks before a start

def _coerce(key: str, kind: str, value):
    bad = CNNLibError(f"{key} must be {_KIND_WORDS.get(kind, kind)}, not {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool) and kind in ("int", "float"):
        raise bad
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise bad
    if kind == "float":
        if isinstance(value, numbers.Real) and math.isfinite(float(value)):
            return float(value)
        raise bad
    if kind == "str":
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value
        raise bad
    return value


def _check_values(cfg: TrainConfig) -> None:
    for key, (ok, words) in _RULES.items():
        if not ok(getattr(cfg, key)):
            raise CNNLibError(f"{key} must be {words}, not {getattr(cfg, key)!r}")
    if cfg.schedule == "onecycle" and not 0 < cfg.warmup < 1:
        raise CNNLibError(f"warmup must be above 0 and below 1 with the onecycle schedule, not {cfg.warmup!r}")
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise CNNLibError(f"unknown {key} {getattr(cfg, key)!r}; use {', '.join(choices)}")
    from .models import list_models
    if cfg.model not in list_models():
        raise CNNLibError(f"unknown model {cfg.model!r}; choose one of {', '.join(list_models())}")
    from .inference import resolve_device
    resolve_device(cfg.device)                                        # CNNLibError with one sentence
    if cfg.weights and not os.path.isfile(os.path.expanduser(cfg.weights)):
        raise CNNLibError(f"the weights file {cfg.weights} does not exist")


def _check_data(cfg: TrainConfig, cwd: str) -> None:
    """DatasetError (one sentence) when the run's data is not on disk and cannot be downloaded."""
    from . import data as data_mod
    from .datacache import CACHE_VERSION, first_file, folder_layout, read_split

    key = str(cfg.data).strip().lower()
    root = data_mod.resolve_root(cfg.data_root or None)
    if key in data_mod.NAMED:
        if all(read_split(root, f"{key}-v{CACHE_VERSION}-{s}") is not None for s in ("train", "test")):
            return                                                    # decoded before
        if key == "fashion-mnist" and all(os.path.isfile(os.path.join(data_mod.DEBIAN_FASHION_MNIST, n + ".gz"))
                                          for n in data_mod.FASHION_FILES):
            return                                                    # train unpacks Debian's copy by itself
        import torchvision.datasets as tvd
        cls = getattr(tvd, data_mod.NAMED[key])
        try:
            for train in (True, False):
                cls(root, train=train, download=False)
            return
        except Exception:  # noqa: BLE001 - torchvision: "Dataset not found or corrupted"
            pass
        if not cfg.download:
            raise DatasetError(data_mod.missing_dataset_message(key, root, "downloads are turned off"))
        if not _can_download(key):
            raise DatasetError(data_mod.missing_dataset_message(key, root, "this machine cannot reach the "
                                                                            "download server"))
        return
    path = cfg.data if os.path.isabs(cfg.data) else os.path.join(cwd, cfg.data)
    if not os.path.isdir(path):
        raise DatasetError(f"--data {cfg.data!r} is neither a known dataset ({', '.join(data_mod.NAMED)}) nor an "
                           f"existing folder: pass one of those names or the path of an ImageFolder tree "
                           f"(train/<class>/*.jpg, optional test/<class>/*)")
    layout = folder_layout(path)                                      # DatasetError when it is no ImageFolder
    for split in ("train", "test"):
        if layout[split]:
            first_file(layout[split])                                 # DatasetError when it holds no images


# ----------------------------------------------------------------------------- jobs

class TrainingJobs:
    """Background training runs for one checkpoint folder (see the module docstring)."""

    def __init__(self, folder: str, *, progress_interval: float = 0.5, cancel_timeout: float = 10.0):
        self.folder = os.path.abspath(os.path.expanduser(str(folder)))
        self.state_dir = os.path.join(self.folder, STATE_DIR)
        self.status_path = os.path.join(self.state_dir, "status.json")
        self.lock_path = os.path.join(self.state_dir, "lock")
        self.progress_interval = float(progress_interval)
        self.cancel_timeout = float(cancel_timeout)

    # ------------------------------------------------------------------ state files

    @contextlib.contextmanager
    def _locked(self, timeout: float = 30.0):
        """The folder's mutex: an exclusive flock on .jobs/lock (released by the kernel if its holder dies)."""
        os.makedirs(self.state_dir, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CNNLibError(f"the job state in {self.state_dir} stayed locked for {timeout:.0f} s "
                                          f"(by process {self._lock_holder(fd)}); try again") from None
                    time.sleep(0.02)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)                                              # closing drops the flock

    @staticmethod
    def _lock_holder(fd: int) -> str:
        with contextlib.suppress(OSError, ValueError):
            return os.pread(fd, 32, 0).decode().strip() or "unknown"
        return "unknown"

    def _read(self) -> dict | None:
        try:
            with open(self.status_path, encoding="utf-8") as f:
                rec = json.load(f)
            return rec if isinstance(rec, dict) and "id" in rec else None
        except (OSError, ValueError):
            return None

    def _write(self, rec: dict) -> None:
        _atomic_json(self.status_path, rec)

    def _record(self) -> dict | None:
        """The current record, with the outcome of a run whose process is gone filled in."""
        rec = self._read()
        if rec is None or rec["status"] not in ACTIVE or not self._needs_settling(rec):
            return rec
        with self._locked():
            rec = self._read()
            if rec is not None and rec["status"] in ACTIVE and self._needs_settling(rec, patient=False):
                rec = self._settle(rec)
                self._write(rec)
        return rec

    def _needs_settling(self, rec: dict, patient: bool = True) -> bool:
        """True when an active record's process is gone and nobody else will record how it ended.

        `patient`: when another live server owns the run, give its monitor 2 s to record the exit status
        (never while holding the mutex: that monitor needs it)."""
        if _alive(rec.get("pid"), rec.get("pid_start")):
            return False
        if rec.get("pid") is None and rec["status"] == "starting" and _alive(rec["owner_pid"], rec["owner_start"]):
            return False                                              # start() is between its two writes
        if _is_me(rec["owner_pid"], rec["owner_start"]):
            t = _MONITORS.get(rec["id"])
            return not (t and t.is_alive())                           # the monitor writes in a moment
        if patient and _alive(rec["owner_pid"], rec["owner_start"]):  # another live server: wait for its monitor
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                time.sleep(0.05)
                now = self._read()
                if now is None or now["id"] != rec["id"] or now["status"] not in ACTIVE:
                    return False
        return True

    def _settle(self, rec: dict, returncode: int | None = None) -> dict:
        """How a run whose process has ended finished: from its exit status when known, else from its files."""
        rec = dict(rec, ended=time.time(), returncode=returncode)
        text = "\n".join(_lines(_read_tail(rec["log"], start=rec.get("log_offset", 0))))
        resume_exists = os.path.exists(rec["out"] + ".resume.pt")
        if rec.get("cancel_requested"):
            status, error = "cancelled", None
        elif returncode == 0 or (returncode is None and rec.get("pid") and not resume_exists
                                 and _FINISHED_LINE.search(text)):
            status, error = "finished", None
        elif rec.get("pid") is None:
            status, error = "failed", "The server stopped before the training process started."
        elif returncode is not None and returncode > 0 and returncode != 130:
            status = "failed"
            error = _last_error(text) or f"The training process exited with status {returncode}."
        elif returncode is None and _last_error(text) and not resume_exists:
            status, error = "failed", _last_error(text)
        else:
            status = "interrupted"
            how = (f"was stopped by {signal.Signals(-returncode).name}" if returncode is not None and returncode < 0
                   else "was interrupted" if returncode == 130 else "stopped (the server running it stopped)")
            error = _sentence(f"the training process {how} before finishing"
                              + ("; resume it to continue from its last completed epoch" if resume_exists else ""))
        rec.update(status=status, error=error)
        return rec

    # ------------------------------------------------------------------ public API

    def current(self) -> Job | None:
        """The running or last run of this folder (None when there was none)."""
        rec = self._record()
        return Job(self, rec) if rec else None

    def start(self, name: str, *, overwrite: bool = False, **settings) -> Job:
        """Check the settings, then start `python -m cnnlib train` for <folder>/<name>.pt in the background."""
        name = self._check_name(name)
        self._refuse_if_busy(self._record())
        out = os.path.join(self.folder, name + ".pt")
        cwd = os.getcwd()
        cfg, settings = self._check_settings(settings, out, cwd)
        resume_state = out + ".resume.pt"
        if cfg.resume:
            self._check_resume(cfg, resume_state, name)
        elif not overwrite:
            if os.path.exists(resume_state):
                raise CNNLibError(f"{name} has an interrupted run; resume it, choose another name, or overwrite it")
            if os.path.exists(out):
                raise CNNLibError(f"a checkpoint named {name}.pt is already in {self.folder}; choose another name "
                                  f"or overwrite it")
        os.makedirs(self.folder, exist_ok=True)
        with self._locked():
            prev = self._read()
            if prev is not None and prev["status"] in ACTIVE and self._needs_settling(prev, patient=False):
                prev = self._settle(prev)
                self._write(prev)
            self._refuse_if_busy(prev)
            if overwrite and not cfg.resume and os.path.exists(resume_state):
                os.unlink(resume_state)                               # an old run's state must not be resumed
            log = os.path.join(self.state_dir, name + ".log")
            offset = os.path.getsize(log) if cfg.resume and os.path.exists(log) else 0   # resume: log appended
            rec = {"id": f"{name}-{time.time_ns()}-{os.getpid()}", "name": name, "out": out, "log": log,
                   "log_offset": offset, "folder": self.folder, "cwd": cwd,
                   "started": time.time(), "status": "starting", "error": None, "pid": None, "pid_start": None,
                   "owner_pid": os.getpid(), "owner_start": _proc_start(os.getpid()), "cancel_requested": False,
                   "returncode": None, "ended": None, "settings": settings, "config": cfg.to_dict(),
                   "argv": self._argv(cfg)}
            self._write(rec)
            try:
                proc = self._launch(rec)
            except Exception as e:  # noqa: BLE001 - Popen's OSError and friends: one sentence
                rec.update(status="failed", ended=time.time(),
                           error=_sentence(f"the training process could not be started: {e}"))
                self._write(rec)
                raise CNNLibError(rec["error"].rstrip(".")) from None
            rec.update(status="running", pid=proc.pid, pid_start=_proc_start(proc.pid))
            self._write(rec)
        return Job(self, rec)

    def resume(self, name: str | None = None, **run_control) -> Job:
        """Continue the interrupted or cancelled run `name` (default: the current job) with its own settings."""
        if name is None:
            rec = self._record()
            if rec is None:
                raise CNNLibError(f"there is no run in {self.folder} to resume")
            name = rec["name"]
        name = self._check_name(name)
        state_path = os.path.join(self.folder, name + ".pt.resume.pt")
        if not os.path.exists(state_path):
            raise CNNLibError(f"{name} has no interrupted run to resume ({os.path.basename(state_path)} is not in "
                              f"{self.folder})")
        bad = sorted(set(run_control) - set(TrainConfig.RUN_CONTROL))
        if bad:
            raise CNNLibError(f"a resumed run keeps its settings; only {', '.join(TrainConfig.RUN_CONTROL)} may "
                              f"change, not {', '.join(bad)}")
        saved = _load_cached(state_path).get("config") or {}
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        settings = {k: v for k, v in saved.items() if k in fields and k not in ("out", "resume")}
        settings.update(run_control, resume=True)
        return self.start(name, **settings)

    def cancel(self, timeout: float | None = None) -> Job | None:
        """Stop the active run: SIGINT, then SIGKILL after `timeout` s. Returns the job (None if there is none)."""
        timeout = self.cancel_timeout if timeout is None else float(timeout)
        with self._locked():
            rec = self._read()
            if rec is None:
                return None
            if rec["status"] not in ACTIVE:
                return Job(self, rec)
            rec["cancel_requested"] = True
            self._write(rec)
        pid, start = rec.get("pid"), rec.get("pid_start")
        if pid and _alive(pid, start):
            _signal_group(pid, signal.SIGINT)
            if not _wait_gone(pid, start, timeout):
                _signal_group(pid, signal.SIGKILL)
                _wait_gone(pid, start, 5.0)
        t = _MONITORS.get(rec["id"])
        if t is not None:
            t.join(5.0)
        return self.current()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _refuse_if_busy(rec: dict | None) -> None:
        if rec is not None and rec["status"] in ACTIVE:
            raise CNNLibError(f"a training run ({rec['name']}, started {_clock(rec['started'])}) is already "
                              f"running; wait for it or cancel it")

    def _check_name(self, name) -> str:
        name = str(name).strip()
        if name.endswith(".pt"):
            name = name[:-3]
        if not NAME_RE.match(name) or name.endswith(".resume"):
            raise CNNLibError(f"{name!r} is not a usable run name; use letters, digits, '_', '-' and '.' "
                              f"(it becomes the checkpoint's file name)")
        return name

    def _check_settings(self, settings: dict, out: str, cwd: str) -> tuple[TrainConfig, dict]:
        kinds = {f.name: (f.type if isinstance(f.type, str) else f.type.__name__)
                 for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(k for k in settings if k not in kinds)
        if unknown:
            raise CNNLibError(f"unknown training setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                              f"the settings are the fields of cnnlib.config.TrainConfig")
        for key, why in _FIXED.items():
            if key in settings:
                raise CNNLibError(why.format(folder=self.folder))
        clean = {k: _coerce(k, kinds[k], v) for k, v in settings.items() if v is not None}
        recipe = clean.pop("recipe", "default")
        if recipe not in RECIPES:
            raise CNNLibError(f"unknown recipe {recipe!r}; known recipes: {', '.join(sorted(RECIPES))}")
        cfg = make_config(recipe, **{**clean, "out": out})
        _check_values(cfg)
        _check_data(cfg, cwd)
        return cfg, {**clean, "recipe": recipe}

    def _check_resume(self, cfg: TrainConfig, state_path: str, name: str) -> None:
        if not os.path.exists(state_path):
            raise CNNLibError(f"{name} has no interrupted run to resume ({os.path.basename(state_path)} is not in "
                              f"{self.folder})")
        saved = TrainConfig.from_dict(_load_cached(state_path).get("config") or {})
        for f in dataclasses.fields(TrainConfig):
            if f.name not in TrainConfig.RUN_CONTROL and f.name != "out" \
                    and getattr(saved, f.name) != getattr(cfg, f.name):
                raise CNNLibError(f"{f.name} was {getattr(saved, f.name)!r} in the interrupted run but is "
                                  f"{getattr(cfg, f.name)!r} now; resume with the same settings")

    @staticmethod
    def _argv(cfg: TrainConfig) -> list[str]:
        """`python -m cnnlib train` with every field of `cfg` as its flag (`--field-name=value`)."""
        argv = [sys.executable, "-m", "cnnlib", "train"]
        for f in dataclasses.fields(TrainConfig):
            value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            else:
                argv.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
        return argv

    def _launch(self, rec: dict) -> subprocess.Popen:
        """Popen from a thread of its own that lives exactly as long as the child and records how it ended."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL=str(self.progress_interval))
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + paths)   # this cnnlib, whatever the cwd
        _register_atexit()
        ready, box = threading.Event(), {}
        parent = os.getpid()

        def monitor():
            try:
                with open(rec["log"], "ab" if rec["config"]["resume"] else "wb") as log:
                    proc = subprocess.Popen(rec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=rec["cwd"], env=env, start_new_session=True, close_fds=True,
                                            preexec_fn=_child_setup(parent))
            except BaseException as e:  # noqa: BLE001 - handed to start()
                box["error"] = e
                ready.set()
                return
            with _REGISTRY_LOCK:
                _CHILDREN[rec["id"]] = proc
            box["proc"] = proc
            ready.set()
            try:
                rc = proc.wait()
            finally:
                with _REGISTRY_LOCK:
                    _CHILDREN.pop(rec["id"], None)
            with contextlib.suppress(Exception):
                with self._locked(timeout=60.0):
                    now = self._read()
                    if now is not None and now["id"] == rec["id"] and now["status"] in ACTIVE:
                        self._write(self._settle(now, rc))
            with _REGISTRY_LOCK:
                _MONITORS.pop(rec["id"], None)

        thread = threading.Thread(target=monitor, name=f"cnnlib-job-{rec['name']}", daemon=True)
        with _REGISTRY_LOCK:
            _MONITORS[rec["id"]] = thread
        thread.start()
        if not ready.wait(60.0):
            raise CNNLibError("the training process did not start within 60 s")
        if "error" in box:
            with _REGISTRY_LOCK:
                _MONITORS.pop(rec["id"], None)
            raise box["error"]
        return box["proc"]


def _wait_gone(pid: int, start, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Job:
    """A handle on one run; status fields are read again from <folder>/.jobs/ on every access."""

    def __init__(self, jobs: TrainingJobs, record: dict):
        self._jobs = jobs
        self._rec = dict(record)

    # ------------------------------------------------------------------ fixed facts
    id = property(lambda self: self._rec["id"])
    name = property(lambda self: self._rec["name"])
    out = property(lambda self: self._rec["out"])
    log = property(lambda self: self._rec["log"])
    config = property(lambda self: dict(self._rec["config"]))
    settings = property(lambda self: dict(self._rec["settings"]))
    started = property(lambda self: datetime.datetime.fromtimestamp(self._rec["started"]))

    def _fresh(self) -> dict:
        now = self._jobs._record()
        if now is not None and now["id"] == self.id:
            self._rec = now
        elif self._rec["status"] in ACTIVE:                           # replaced since: it has ended
            self._rec = self._jobs._settle(self._rec)
        return self._rec

    # ------------------------------------------------------------------ live facts
    status = property(lambda self: self._fresh()["status"])
    error = property(lambda self: self._fresh()["error"])
    pid = property(lambda self: self._fresh()["pid"])
    returncode = property(lambda self: self._fresh()["returncode"])
    running = property(lambda self: self._fresh()["status"] in ACTIVE)

    @property
    def ended(self) -> datetime.datetime | None:
        ts = self._fresh()["ended"]
        return datetime.datetime.fromtimestamp(ts) if ts else None

    @property
    def resumable(self) -> bool:
        return not self.running and os.path.exists(self.out + ".resume.pt")

    def __repr__(self) -> str:
        return f"Job({self.name!r}, status={self._rec['status']!r}, pid={self._rec['pid']})"

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run is no longer active (or `timeout` s pass); returns the status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
        return self.status

    def cancel(self, timeout: float | None = None) -> "Job":
        """Cancel this run if it is still the active one; returns self."""
        if self.running:
            self._jobs.cancel(timeout)
        return self

    def progress(self) -> dict:
        rec = self._fresh()
        epochs = int(rec["config"]["epochs"])
        raw = _read_tail(rec["log"], start=rec.get("log_offset", 0))
        text = "\n".join(_lines(raw))
        completed = max([int(m.group(1)) for m in _EPOCH_LINE.finditer(text)]
                        + [int(m.group(1)) for m in _RESUMING.finditer(text)] + [0])
        if completed == 0 and os.path.exists(rec["log"]) and \
                os.path.getsize(rec["log"]) - rec.get("log_offset", 0) > 256 * 1024:   # the tail missed them
            completed = len(self.history())
        step, steps = 0, None
        bars = list(_BAR.finditer(raw))                               # every redraw, not only a line's last
        if bars:
            e, _, s, n = (int(g) for g in bars[-1].groups())
            steps = n
            if e == completed + 1:
                step = s
        done, active = rec["status"] == "finished", rec["status"] in ACTIVE
        if done:
            completed, step = epochs, steps or 0
        elif not active:
            step = 0                                                  # a stopped epoch is lost: resume redoes it
        fraction = 1.0 if done else min(1.0, (completed + (step / steps if steps else 0.0)) / max(epochs, 1))
        end = time.time() if active or not rec.get("ended") else rec["ended"]
        return {"epoch": min(completed + 1, epochs) if active else completed, "epochs": epochs,
                "completed": completed, "step": step, "steps": steps, "fraction": fraction,
                "elapsed": max(0.0, end - rec["started"])}

    def history(self) -> list[dict]:
        """Per-epoch dicts: from <out>.resume.pt while it exists, else from the checkpoint this run wrote."""
        from .errors import CheckpointError
        for path in (self.out + ".resume.pt", self.out):
            try:
                if path == self.out and os.path.getmtime(path) < self._rec["started"] - 1:
                    continue                                          # an older file of the same name
                return list(_load_cached(path).get("history") or [])
            except (OSError, CheckpointError, AttributeError):
                continue
        return []

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(_lines(_read_tail(self.log, 64 * 1024))[-n:])

    def to_dict(self) -> dict:
        rec = self._fresh()
        return {k: rec[k] for k in ("id", "name", "out", "status", "error", "pid", "started", "ended", "returncode",
                                    "settings")}
