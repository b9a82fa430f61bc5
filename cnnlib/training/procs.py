"""Linux process helpers for cnnlib.training.jobs: is a recorded process still the same one, signal its group, tie a
child's life to the server that started it, and a file mutex that names its holder.

Processes are recorded as (pid, start time in clock ticks from /proc/<pid>/stat), so a pid the kernel has
since given to another process is not mistaken for the run.

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
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from cnnlib.errors import CNNLibError


def proc_start(pid) -> int | None:
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


def alive(pid, start) -> bool:
    """The process `pid` exists, is not a zombie and (when `start` is known) is the same process."""
    now = proc_start(pid)
    return now is not None and (not start or not now or now == start)


def is_me(pid, start) -> bool:
    """(pid, start) is this very process."""
    return pid == os.getpid() and (not start or start == proc_start(os.getpid()))


def wait_gone(pid: int, start, timeout: float) -> bool:
    """Poll until the process is gone; False when it is still alive after `timeout` s."""
    deadline = time.monotonic() + timeout
    while alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group the run leads (start_new_session: pgid == pid), else to the pid."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@contextlib.contextmanager
def pid_lock(path: str, timeout: float, what: str):
    """An exclusive flock on `path` holding this pid (the kernel drops it when its holder dies).

    After `timeout` s of waiting: CNNLibError "<what> stayed locked for N s (by process PID); try again"."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CNNLibError(f"{what} stayed locked for {timeout:.0f} s (by process {_lock_holder(fd)}); "
                                      f"try again") from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)                                              # closing drops the flock


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    return "unknown"


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


def child_setup(parent_pid: int):
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


# Children of this process: run id -> Popen, and the thread that started and waits for each.
_CHILDREN: dict[str, subprocess.Popen] = {}
MONITORS: dict[str, threading.Thread] = {}
_REGISTRY_LOCK = threading.Lock()
_ATEXIT = []


def stop_children(grace: float = 3.0) -> None:
    """atexit: interrupt every run this process started (SIGINT, then SIGKILL), so none outlives the server."""
    with _REGISTRY_LOCK:
        procs = [p for p in _CHILDREN.values() if p.poll() is None]
        threads = list(MONITORS.values())
    for p in procs:
        signal_group(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            signal_group(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)
    for t in threads:                          # let each monitor record how its run ended
        t.join(0.5)


def register_atexit() -> None:
    """Install stop_children once per process, on the first start."""
    with _REGISTRY_LOCK:
        if not _ATEXIT:
            atexit.register(stop_children)
            _ATEXIT.append(True)


def spawn(key: str, argv: list[str], *, log: str, append: bool, cwd: str, env: dict, on_exit,
          thread_name: str) -> subprocess.Popen:
    """Popen(argv) in a new session, stdout and stderr to the file `log`, started from a thread of its own that
    lives exactly as long as the child (PR_SET_PDEATHSIG follows the creating thread), then calls
    on_exit(returncode) in that thread (its exceptions are dropped: nobody is left to hear them).

    While it runs, the child is in _CHILDREN (stopped at exit) and the thread MONITORS[key] until on_exit
    returns. A failing Popen raises here, in the caller's thread."""
    register_atexit()
    ready, box = threading.Event(), {}
    parent = os.getpid()

    def monitor():
        try:
            with open(log, "ab" if append else "wb") as out:
                # preexec_fn in a threaded server: child_setup only calls C functions resolved in the parent
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        cwd=cwd, env=env, start_new_session=True, close_fds=True,
                                        preexec_fn=child_setup(parent))  # noqa: PLW1509
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
            ready.set()
            return
        with _REGISTRY_LOCK:
            _CHILDREN[key] = proc
        box["proc"] = proc
        ready.set()
        try:
            rc = proc.wait()
        finally:
            with _REGISTRY_LOCK:
                _CHILDREN.pop(key, None)
        with contextlib.suppress(Exception):
            on_exit(rc)
        with _REGISTRY_LOCK:
            MONITORS.pop(key, None)

    thread = threading.Thread(target=monitor, name=thread_name, daemon=True)
    with _REGISTRY_LOCK:
        MONITORS[key] = thread
    thread.start()
    if not ready.wait(60.0):
        raise CNNLibError("the training process did not start within 60 s")
    if "error" in box:
        with _REGISTRY_LOCK:
            MONITORS.pop(key, None)
        raise box["error"]
    return box["proc"]
