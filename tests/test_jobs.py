"""cnnlib.training.jobs: training in a background process for the dashboard. Settings are checked before anything starts;
a run shows progress, refuses a second one, is found again from the files, cancels (SIGINT, no process left),
resumes and finishes into a loadable checkpoint; two simultaneous starts give one run; a failed run says why in
one sentence; killing the server (SIGKILL) takes the training process with it and leaves the resume state."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cnnlib import CNNLibError, DatasetError
from cnnlib.training import jobs as jobs_mod
from cnnlib.inference import load_model
from cnnlib.training.jobs import TrainingJobs

from conftest import write_image_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="background jobs use Linux's /proc")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(model="simple_cnn", threads=1, batch_size=16, val_size=16, eval_batch_size=64, precision="fp32")
BUSY = r"^a training run \({}, started \d\d:\d\d\) is already running; wait for it or cancel it$"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("jobsdata")
    broken = str(base / "broken")                  # no image of train/ can be decoded (one bad file is skipped)
    for cls in ("red", "blue"):
        os.makedirs(os.path.join(broken, "train", cls))
        with open(os.path.join(broken, "train", cls, "zzz-broken.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    return {"small": write_image_folder(base / "small"),                       # 80 train images: 5 steps an epoch
            "steps": write_image_folder(base / "steps", n_train=400, n_test=32),  # 24 steps an epoch
            "broken": broken, "root": str(base / "data-root")}


def until(condition, timeout: float, what: str):
    """Poll `condition` until it returns something truthy; fail (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.append(int(entry))
    return found


@pytest.fixture
def reaper():
    """Pids to kill at the end of a test whatever happens, so a failing test leaves no process behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for member in group_members(pid):
            os.kill(member, signal.SIGKILL)


def test_bad_settings_are_refused_before_anything_starts(tmp_path, data, monkeypatch):
    folder = tmp_path / "ckpts"
    jobs = TrainingJobs(folder)
    ok = dict(FAST, data=data["small"], data_root=data["root"])
    cases = [
        (dict(ok, colour="red"), "unknown training setting colour"),
        (dict(ok, epochs=0), "epochs must be at least 1, not 0"),
        (dict(ok, lr="fast"), "lr must be a number, not 'fast'"),
        (dict(ok, batch_size=2.5), "batch_size must be a whole number"),
        (dict(ok, dropout=1.5), "dropout must be at least 0 and below 1"),
        (dict(ok, optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
        (dict(ok, recipe="turbo"), "unknown recipe 'turbo'"),
        (dict(ok, model="vgg99"), "unknown model 'vgg99'"),
        (dict(ok, out="elsewhere.pt"), "comes from the run's name"),
        (dict(ok, weights=str(tmp_path / "none.pth")), "does not exist"),
        (dict(ok, data=str(tmp_path / "no-such-folder")), "is neither a known dataset"),
        (dict(ok, data="mnist", data_root=str(tmp_path / "empty-root"), download=False),
         "is not in .*downloads are turned off"),
        (dict(ok, data="fashion-mnist" if not os.path.isdir("/usr/share/datasets/fashion-mnist") else "cifar10",
              data_root=str(tmp_path / "empty-root")), "cannot reach the download server"),
    ]
    monkeypatch.setattr(jobs_mod, "_can_download", lambda name, timeout=3.0: False)   # an offline machine
    for settings, message in cases:
        with pytest.raises(CNNLibError, match=message) as info:
            jobs.start("run", **settings)
        assert "\n" not in str(info.value)
    with pytest.raises(DatasetError):
        jobs.start("run", **dict(ok, data=str(tmp_path / "no-such-folder")))
    for name in ("../escape", "", "a/b", ".hidden"):
        with pytest.raises(CNNLibError, match="not a usable run name"):
            jobs.start(name, **ok)
    (folder / "taken.pt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "taken.pt").write_bytes(b"")
    with pytest.raises(CNNLibError, match="already in"):
        jobs.start("taken", **ok)
    with pytest.raises(CNNLibError, match="no interrupted run to resume"):
        jobs.start("fresh", resume=True, **ok)
    assert jobs.current() is None and not (folder / ".jobs" / "status.json").exists()
    assert os.listdir(folder) == ["taken.pt"]                              # no state, no log, no process


def test_run_shows_progress_refuses_a_second_reattaches_cancels_resumes_and_finishes(tmp_path, data, reaper):
    folder = tmp_path / "ckpts"
    jobs = TrainingJobs(folder, progress_interval=0, cancel_timeout=30)
    settings = dict(FAST, data=data["steps"], data_root=data["root"], epochs=3)
    job = jobs.start("run", **settings)
    reaper.append(job.pid)
    assert job.status == "running" and job.out == str(folder / "run.pt") and group_members(job.pid) == [job.pid]

    # progress advances within the first epoch (tqdm's "epoch 1/3 ... step/24" in the log)
    first = until(lambda: (p := job.progress())["steps"] and p, 120, "the first progress-bar line")
    assert first["epochs"] == 3 and first["steps"] == 24 and 0 <= first["fraction"] < 1
    until(lambda: job.progress()["fraction"] > first["fraction"], 60, "progress to advance")

    # a second start, from another session, is refused with one sentence; nothing else starts
    with pytest.raises(CNNLibError, match=BUSY.format("run")):
        TrainingJobs(folder).start("other", **settings)
    assert not os.path.exists(folder / "other.pt")

    # found again from the files (a page reload, another browser tab)
    again = TrainingJobs(folder).current()
    assert again.id == job.id and again.running and again.pid == job.pid and again.settings["epochs"] == 3

    # after the first epoch: the best checkpoint and the resume state exist; cancel keeps both
    until(lambda: job.history(), 60, "the first epoch's resume state")
    assert len(job.history()) >= 1 and job.history()[0]["epoch"] == 1
    pid = job.pid
    t0 = time.monotonic()
    stopped = again.cancel()
    assert time.monotonic() - t0 < 30
    assert stopped.status == "cancelled" and job.status == "cancelled" and job.error is None
    assert not jobs_mod._alive(pid, None) and group_members(pid) == []
    assert job.resumable and load_model(job.out).meta["history"][0]["epoch"] == 1
    stopped_at = job.progress()
    assert stopped_at["completed"] >= 1 and stopped_at["step"] == 0 and 0 < stopped_at["fraction"] < 1
    assert "interrupted" in job.log_tail(5) or job.returncode != 0
    assert TrainingJobs(folder).cancel().status == "cancelled"          # nothing left to cancel: no error

    # start again: resume with the same settings, let it finish
    resumed = jobs.resume("run")
    reaper.append(resumed.pid)
    assert resumed.wait(180) == "finished", resumed.log_tail(20)
    assert resumed.error is None and resumed.returncode == 0 and not resumed.resumable
    assert not os.path.exists(resumed.out + ".resume.pt") and group_members(resumed.pid) == []
    model = load_model(str(folder / "run.pt"))
    assert [h["epoch"] for h in model.meta["history"]] == [1, 2, 3] and model.meta["metrics"]["test_acc"] is not None
    assert [h["epoch"] for h in resumed.history()] == [1, 2, 3]
    assert resumed.progress()["fraction"] == 1.0 and resumed.progress()["completed"] == 3
    assert "resuming" in open(resumed.log).read()
    current = TrainingJobs(folder).current()
    assert current.id == resumed.id and current.status == "finished"


def test_two_sessions_starting_at_once_get_one_run_and_a_failure_is_one_sentence(tmp_path, data, reaper):
    folder = tmp_path / "ckpts"
    settings = dict(FAST, data=data["broken"], data_root=data["root"], epochs=1)   # one image cannot be decoded
    barrier, results = threading.Barrier(2), {}

    def press_start(name):
        barrier.wait(10)
        try:
            results[name] = TrainingJobs(folder).start(name, **settings)
        except CNNLibError as e:
            results[name] = e

    threads = [threading.Thread(target=press_start, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    started = [r for r in results.values() if not isinstance(r, Exception)]
    refused = [r for r in results.values() if isinstance(r, Exception)]
    assert len(started) == 1 and len(refused) == 1, results
    job = started[0]
    reaper.append(job.pid)
    assert str(refused[0]).startswith(f"a training run ({job.name}, started ")

    assert job.wait(120) == "failed", job.log_tail(20)
    assert job.returncode == 2 and group_members(job.pid) == []
    assert job.error.startswith("None of the 2 image files in") and job.error.endswith(".")
    assert "\n" not in job.error and "Traceback" not in job.error
    assert not os.path.exists(job.out)
    assert TrainingJobs(folder).current().status == "failed"


SERVER = """
import sys, time
from cnnlib.training.jobs import TrainingJobs
folder, data, root = sys.argv[1:4]
job = TrainingJobs(folder, progress_interval=0).start("served", data=data, data_root=root, epochs=300,
                                                      model="simple_cnn", threads=1, batch_size=16, val_size=16,
                                                      eval_batch_size=64)
print(job.pid, flush=True)
time.sleep(600)
"""


def test_killing_the_server_takes_the_run_with_it_and_leaves_its_resume_state(tmp_path, data, reaper):
    folder = tmp_path / "ckpts"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), data["small"], data["root"]], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = {}
        reader = threading.Thread(target=lambda: line.setdefault("pid", server.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        assert line.get("pid", "").strip().isdigit(), server.stderr.read() if server.poll() is not None else "no pid"
        pid = int(line["pid"])
        reaper.append(pid)
        assert jobs_mod._alive(pid, None)
        out = folder / "served.pt"
        until(lambda: TrainingJobs(folder).current().history(), 120, "the first epoch's resume state")
        server.kill()                                            # SIGKILL: no atexit, no cleanup in the server
        server.wait(30)
        until(lambda: not group_members(pid), 30, "the training process to die with its server")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
    assert os.path.exists(f"{out}.resume.pt") or os.path.exists(out)
    job = TrainingJobs(folder).current()
    assert job.name == "served" and job.status == "interrupted" and job.resumable
    assert "resume" in job.error and job.error.endswith(".") and len(job.history()) >= 1
    assert load_model(str(out)).meta["history"][0]["epoch"] == 1
    # the folder is free again: a new start is not refused (it is checked, then refused only for its name)
    with pytest.raises(CNNLibError, match="has an interrupted run"):
        TrainingJobs(folder).start("served", **dict(FAST, data=data["small"], data_root=data["root"]))


def test_cancel_in_the_first_epoch_leaves_a_run_to_resume_and_shows_progress_within_it(tmp_path, data, reaper):
    folder = tmp_path / "ckpts"
    jobs = TrainingJobs(folder, progress_interval=0, cancel_timeout=30)
    job = jobs.start("one", **dict(FAST, data=data["steps"], data_root=data["root"], epochs=1, batch_size=2))
    reaper.append(job.pid)
    # within the one epoch: batches done of the total and the running loss (issue 18: live feedback for 1 epoch)
    live = until(lambda: (p := job.progress())["loss"] is not None and p["step"] >= 1 and p, 120, "a running loss")
    assert live["steps"] == 192 and 1 <= live["step"] <= 192 and live["loss"] > 0 and 0 <= live["acc"] <= 1
    assert job.history() == [] and not live["testing"]
    stopped = job.cancel()
    assert stopped.status == "cancelled" and group_members(job.pid) == []
    assert job.resumable and not os.path.exists(job.out)               # nothing trained yet, but resumable
    assert job.progress()["loss"] is None and job.progress()["step"] == 0
    assert not (TrainingJobs(folder).current().running)                 # no Cancel left to offer
    resumed = jobs.resume("one")
    reaper.append(resumed.pid)
    assert resumed.wait(180) == "finished", resumed.log_tail(20)
    model = load_model(resumed.out)
    assert [h["epoch"] for h in model.meta["history"]] == [1] and model.meta["metrics"]["test_acc"] is not None
    assert not os.path.exists(resumed.out + ".resume.pt")


def test_a_cancel_during_the_final_test_pass_leaves_a_finished_run(tmp_path, reaper):
    import json
    from cnnlib.training import joblog, procs
    folder = tmp_path / "ckpts"
    jobs = TrainingJobs(folder, cancel_timeout=1)
    os.makedirs(jobs.state_dir)
    log = os.path.join(jobs.state_dir, "done.log")
    with open(log, "w") as f:                     # every epoch done; train is testing (and ignores SIGINT)
        f.write("epoch   1/1  train loss 1.0 acc 0.5  val loss 1.0 acc 0.5\ntesting the best epoch (1) on the test "
                "split\n")
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                             "signal.SIG_IGN); time.sleep(60)"], start_new_session=True)
    reaper.append(proc.pid)
    rec = {"id": "done-1", "name": "done", "out": str(folder / "done.pt"), "log": log, "log_offset": 0,
           "folder": str(folder), "cwd": REPO, "started": time.time(), "status": "running", "error": None,
           "pid": proc.pid, "pid_start": procs.proc_start(proc.pid), "owner_pid": os.getpid(),
           "owner_start": procs.proc_start(os.getpid()), "cancel_requested": False, "returncode": None,
           "ended": None, "settings": {}, "config": {"epochs": 1, "resume": False}, "argv": []}
    with open(jobs.status_path, "w") as f:
        json.dump(rec, f)
    assert jobs.current().progress()["testing"]
    job = jobs.cancel()
    assert job.running and proc.poll() is None                         # not killed: it is finishing
    assert not jobs._read()["cancel_requested"]
    proc.kill()
    proc.wait(10)
    assert joblog.outcome(dict(rec, cancel_requested=True), 0) == ("finished", None)   # finished = finished
