"""Training runs in a background process, owned by a long-lived (dashboard) server: start, watch, cancel, reattach.

    from cnnlib.training.jobs import TrainingJobs
    jobs = TrainingJobs("checkpoints")              # one per checkpoint folder; cheap, holds no state of its own
    job = jobs.start("my_run", epochs=5, lr=1e-3, batch_size=64, recipe="default", data="cifar10", dropout=0.2)
    job = jobs.current()                             # after a page reload, in another browser tab or server process
    job.status, job.error                            # "running" | "finished" | "cancelled" | "interrupted" | "failed"
    job.progress()   # {"epoch", "epochs", "completed", "step", "steps", "fraction", "elapsed", "loss", "acc", "testing"}
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
    A run in its final test pass (every epoch done) is not stopped: it finishes, and ends "finished".
    Returns the job, then "cancelled" (or still running into "finished"); None when there was no run.

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
    seconds, "loss", "acc": the running mean loss and accuracy of the epoch in progress (None before the bar
    shows them or once stopped), "testing": True during the final test pass}; parsed from train's tqdm bar
    ("epoch E/N: ...| step/steps [..., loss=L, acc=A, ...]") and its per-epoch lines in the log, which the bar
    redraws every ``progress_interval`` s. train writes a resume state before the first epoch too, so a run
    cancelled in its first epoch can be resumed (it starts again with the same settings).
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

Life cycle: the training process dies with the server (SIGTERM when it dies, SIGINT then SIGKILL on a normal
exit; see cnnlib.training.procs), leaving the resume state train writes after every epoch, so ``resume(name)`` continues
it and ``current()`` says "interrupted". The settings are checked by cnnlib.training.jobcheck, the log read by
cnnlib.training.joblog.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from cnnlib.training import procs
from cnnlib.config import TrainConfig
from cnnlib.errors import CheckpointError, CNNLibError
from cnnlib.io.files import atomic_write
from cnnlib.training.jobcheck import can_download, check_name, check_resume, check_settings, resume_state
from cnnlib.training.joblog import ACTIVE, STATUSES, lines, load_cached, outcome, progress, read_tail, sentence

__all__ = ["ACTIVE", "STATUSES", "Job", "TrainingJobs"]

STATE_DIR = ".jobs"
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Old names tests/test_jobs.py reaches for: it reads _alive, and patches _can_download to stand in for an
# offline machine, which works because start() looks _can_download up here on every call.
_alive = procs.alive
_can_download = can_download


def _clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M")


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

    def _locked(self, timeout: float = 30.0):
        """The folder's mutex: an exclusive flock on .jobs/lock (released by the kernel if its holder dies)."""
        os.makedirs(self.state_dir, exist_ok=True)
        return procs.pid_lock(self.lock_path, timeout, f"the job state in {self.state_dir}")

    def _read(self) -> dict | None:
        try:
            with open(self.status_path, encoding="utf-8") as f:
                rec = json.load(f)
            return rec if isinstance(rec, dict) and "id" in rec else None
        except (OSError, ValueError):
            return None

    def _write(self, rec: dict) -> None:
        text = json.dumps(rec, indent=1).encode("utf-8")
        atomic_write(self.status_path, lambda f: f.write(text))

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
        if procs.alive(rec.get("pid"), rec.get("pid_start")):
            return False
        if rec.get("pid") is None and rec["status"] == "starting" and procs.alive(rec["owner_pid"], rec["owner_start"]):
            return False                                              # start() is between its two writes
        if procs.is_me(rec["owner_pid"], rec["owner_start"]):
            t = procs.MONITORS.get(rec["id"])
            return not (t and t.is_alive())                           # the monitor writes in a moment
        if patient and procs.alive(rec["owner_pid"], rec["owner_start"]):  # another live server: wait for its monitor
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
        status, error = outcome(rec, returncode)
        rec.update(status=status, error=error)
        return rec

    # ------------------------------------------------------------------ public API

    def current(self) -> Job | None:
        """The running or last run of this folder (None when there was none)."""
        rec = self._record()
        return Job(self, rec) if rec else None

    def start(self, name: str, *, overwrite: bool = False, **settings) -> Job:
        """Check the settings, then start `python -m cnnlib train` for <folder>/<name>.pt in the background."""
        name = check_name(name)
        self._refuse_if_busy(self._record())
        out = os.path.join(self.folder, name + ".pt")
        cwd = os.getcwd()
        cfg, settings = check_settings(settings, self.folder, out, cwd, _can_download)
        state_path = out + ".resume.pt"
        if cfg.resume:
            check_resume(cfg, self.folder, name)
        elif not overwrite:
            if os.path.exists(state_path):
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
            if overwrite and not cfg.resume and os.path.exists(state_path):
                os.unlink(state_path)                                 # an old run's state must not be resumed
            log = os.path.join(self.state_dir, name + ".log")
            offset = os.path.getsize(log) if cfg.resume and os.path.exists(log) else 0   # resume: log appended
            rec = {"id": f"{name}-{time.time_ns()}-{os.getpid()}", "name": name, "out": out, "log": log,
                   "log_offset": offset, "folder": self.folder, "cwd": cwd,
                   "started": time.time(), "status": "starting", "error": None, "pid": None, "pid_start": None,
                   "owner_pid": os.getpid(), "owner_start": procs.proc_start(os.getpid()), "cancel_requested": False,
                   "returncode": None, "ended": None, "settings": settings, "config": cfg.to_dict(),
                   "argv": self._argv(cfg)}
            self._write(rec)
            try:
                proc = self._launch(rec)
            except Exception as e:  # noqa: BLE001 - Popen's OSError and friends: one sentence
                rec.update(status="failed", ended=time.time(),
                           error=sentence(f"the training process could not be started: {e}"))
                self._write(rec)
                raise CNNLibError(rec["error"].rstrip(".")) from None
            rec.update(status="running", pid=proc.pid, pid_start=procs.proc_start(proc.pid))
            self._write(rec)
        return Job(self, rec)

    def resume(self, name: str | None = None, **run_control) -> Job:
        """Continue the interrupted or cancelled run `name` (default: the current job) with its own settings."""
        if name is None:
            rec = self._record()
            if rec is None:
                raise CNNLibError(f"there is no run in {self.folder} to resume")
            name = rec["name"]
        name = check_name(name)
        state_path = resume_state(self.folder, name)
        bad = sorted(set(run_control) - set(TrainConfig.RUN_CONTROL))
        if bad:
            raise CNNLibError(f"a resumed run keeps its settings; only {', '.join(TrainConfig.RUN_CONTROL)} may "
                              f"change, not {', '.join(bad)}")
        saved = load_cached(state_path).get("config") or {}
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
            if self._finishing(rec):
                return Job(self, rec)                                 # too late to cancel: it ends finished
            rec["cancel_requested"] = True
            self._write(rec)
        pid, start = rec.get("pid"), rec.get("pid_start")
        if pid and procs.alive(pid, start):
            procs.signal_group(pid, signal.SIGINT)
            if not procs.wait_gone(pid, start, timeout) and not self._finishing(rec):
                procs.signal_group(pid, signal.SIGKILL)
                procs.wait_gone(pid, start, 5.0)
        t = procs.MONITORS.get(rec["id"])
        if t is not None:
            t.join(5.0)
        return self.current()

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _finishing(rec: dict) -> bool:
        """True when the run has done every epoch and is in its final test pass (train ignores SIGINT there)."""
        return bool(progress(rec, lambda: 0)["testing"])

    @staticmethod
    def _refuse_if_busy(rec: dict | None) -> None:
        if rec is not None and rec["status"] in ACTIVE:
            raise CNNLibError(f"a training run ({rec['name']}, started {_clock(rec['started'])}) is already "
                              f"running; wait for it or cancel it")

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
        """Start the run's process (see procs.spawn); when it ends, its monitor thread records how."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL=str(self.progress_interval))
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + paths)   # this cnnlib, whatever the cwd

        def record_exit(returncode: int) -> None:
            with self._locked(timeout=60.0):
                now = self._read()
                if now is not None and now["id"] == rec["id"] and now["status"] in ACTIVE:
                    self._write(self._settle(now, returncode))

        return procs.spawn(rec["id"], rec["argv"], log=rec["log"], append=rec["config"]["resume"], cwd=rec["cwd"],
                           env=env, on_exit=record_exit, thread_name=f"cnnlib-job-{rec['name']}")


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

    def cancel(self, timeout: float | None = None) -> Job:
        """Cancel this run if it is still the active one; returns self."""
        if self.running:
            self._jobs.cancel(timeout)
        return self

    def progress(self) -> dict:
        """{"epoch", "epochs", "completed", "step", "steps", "fraction", "elapsed"} (see the module docstring)."""
        return progress(self._fresh(), lambda: len(self.history()))

    def history(self) -> list[dict]:
        """Per-epoch dicts: from <out>.resume.pt while it exists, else from the checkpoint this run wrote."""
        for path in (self.out + ".resume.pt", self.out):
            try:
                if path == self.out and os.path.getmtime(path) < self._rec["started"] - 1:
                    continue                                          # an older file of the same name
                return list(load_cached(path).get("history") or [])
            except (OSError, CheckpointError, AttributeError):
                continue
        return []

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(lines(read_tail(self.log, 64 * 1024))[-n:])

    def to_dict(self) -> dict:
        rec = self._fresh()
        return {k: rec[k] for k in ("id", "name", "out", "status", "error", "pid", "started", "ended", "returncode",
                                    "settings")}
