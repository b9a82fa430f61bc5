"""Reading what a background training run leaves, for cnnlib.training.jobs: its log and its checkpoints.

The log is `python -m cnnlib train`'s stdout + stderr. Progress comes from its tqdm bar ("epoch E/N: ...|
step/steps", redrawn with "\\r" every progress_interval s) and its per-epoch lines; how a run ended comes from
its exit status, else from its last lines (the final "test accuracy" line, or an error message).
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time

_BAR = re.compile(r"epoch (\d+)/(\d+):\s*\d+%\|[^|\n\r]*\|\s*(\d+)/(\d+)")
_EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s+train loss", re.MULTILINE)
_RESUMING = re.compile(r"resuming .* after epoch (\d+) of (\d+)")
_FINISHED_LINE = re.compile(r"^test accuracy ", re.MULTILINE)
FINAL_PASS = re.compile(r"^testing the best epoch ", re.MULTILINE)   # train's line once every epoch is done
_LOSS, _ACC = re.compile(r"\bloss=([-+\w.]+)"), re.compile(r"\bacc=([\d.]+)")   # the bar's running means
_ERROR_PATTERNS = (re.compile(r"^error: (.+)$"),                                # cnnlib's CLI: one message
                   re.compile(r"^\S+: error: (.+)$"),                           # argparse
                   re.compile(r"^((?:[\w.]+\.)?\w*(?:Error|Exception|Exit)\b.*)$"))  # a traceback's last line
TAIL_BYTES = 256 * 1024                     # how much of the log progress and outcome read
STATUSES = ("starting", "running", "finished", "cancelled", "interrupted", "failed")
ACTIVE = ("starting", "running")            # the process is (about to be) running


def sentence(text: str) -> str:
    """`text` on one line, capitalised, ending in a single '.'."""
    text = " ".join(str(text).split()).rstrip(". ")
    return (text[:1].upper() + text[1:] + ".") if text else ""


def read_tail(path: str, nbytes: int = TAIL_BYTES, start: int = 0) -> str:
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


def lines(text: str) -> list[str]:
    """Log lines with each progress-bar redraw ("...\\r...\\r") collapsed to its last visible state."""
    out = []
    for raw in text.split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        if parts:
            out.append(parts[-1].rstrip())
    return out


def last_error(text: str) -> str | None:
    """The last error message in a log (CLI, argparse or a traceback's last line) as one sentence."""
    for line in reversed(lines(text)):
        for pat in _ERROR_PATTERNS:
            m = pat.match(line.strip())
            if m:
                return sentence(m.group(1))
    return None


def outcome(rec: dict, returncode: int | None) -> tuple[str, str | None]:
    """(status, error) of a run whose process has ended: from its exit status when known, else from its files."""
    text = "\n".join(lines(read_tail(rec["log"], start=rec.get("log_offset", 0))))
    resume_exists = os.path.exists(rec["out"] + ".resume.pt")
    if returncode == 0 or (returncode is None and rec.get("pid") and not resume_exists
                           and _FINISHED_LINE.search(text)):
        return "finished", None                  # finished is finished, even if a Cancel came in its test pass
    if rec.get("cancel_requested"):
        return "cancelled", None
    if rec.get("pid") is None:
        return "failed", "The server stopped before the training process started."
    if returncode is not None and returncode > 0 and returncode != 130:
        return "failed", last_error(text) or f"The training process exited with status {returncode}."
    if returncode is None and last_error(text) and not resume_exists:
        return "failed", last_error(text)
    how = (f"was stopped by {signal.Signals(-returncode).name}" if returncode is not None and returncode < 0
           else "was interrupted" if returncode == 130 else "stopped (the server running it stopped)")
    return "interrupted", sentence(f"the training process {how} before finishing"
                                   + ("; resume it to continue from its last completed epoch" if resume_exists
                                      else ""))


def progress(rec: dict, epochs_done) -> dict:
    """Job.progress() from the log of run `rec`; `epochs_done()` counts the epochs in its history, asked only
    when this run's log has outgrown the tail read and no epoch line is in it."""
    epochs = int(rec["config"]["epochs"])
    raw = read_tail(rec["log"], start=rec.get("log_offset", 0))
    text = "\n".join(lines(raw))
    completed = max([int(m.group(1)) for m in _EPOCH_LINE.finditer(text)]
                    + [int(m.group(1)) for m in _RESUMING.finditer(text)] + [0])
    if completed == 0 and os.path.exists(rec["log"]) and \
            os.path.getsize(rec["log"]) - rec.get("log_offset", 0) > TAIL_BYTES:   # the tail missed them
        completed = epochs_done()
    step, steps, loss, acc = 0, None, None, None
    bars = list(_BAR.finditer(raw))                               # every redraw, not only a line's last
    if bars:
        e, _, s, n = (int(g) for g in bars[-1].groups())
        steps = n
        if e == completed + 1:
            step = s
            post = re.split(r"[\r\n]", raw[bars[-1].end():], maxsplit=1)[0]     # "[..., acc=A, loss=L, ...]"
            found = _LOSS.search(post), _ACC.search(post)
            try:
                loss, acc = (float(m.group(1)) if m else None for m in found)
            except ValueError:
                pass
    done, active = rec["status"] == "finished", rec["status"] in ACTIVE
    testing = active and completed >= epochs and bool(FINAL_PASS.search(text))
    if done:
        completed, step = epochs, steps or 0
    elif not active:
        step, loss, acc = 0, None, None                           # a stopped epoch is lost: resume redoes it
    fraction = 1.0 if done else min(1.0, (completed + (step / steps if steps else 0.0)) / max(epochs, 1))
    end = time.time() if active or not rec.get("ended") else rec["ended"]
    return {"epoch": min(completed + 1, epochs) if active else completed, "epochs": epochs,
            "completed": completed, "step": step, "steps": steps, "fraction": fraction,
            "elapsed": max(0.0, end - rec["started"]), "loss": loss, "acc": acc, "testing": testing}


_LOAD_CACHE: dict[str, tuple] = {}
_LOAD_LOCK = threading.Lock()


def load_cached(path: str):
    """safe_torch_load(path), cached by (mtime, size): pages poll history() every second or two."""
    from cnnlib.io.checkpoint import safe_torch_load
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
