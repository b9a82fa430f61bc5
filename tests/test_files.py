"""cnnlib.io.files: atomic writes. A full disk, a read-only folder or a crash midway leaves the previous file
intact and says so in one sentence; two writers at once end with one good copy."""
import errno
import os
import threading

import numpy as np
import pytest
import torch
from cnnlib import CNNLibError
from cnnlib.data import cache as datacache
from cnnlib.io.checkpoint import atomic_torch_save, safe_torch_load
from cnnlib.io.files import WriteError, atomic_write


def test_a_full_disk_midway_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "model.pt")
    atomic_torch_save({"w": torch.ones(3)}, path)

    def half_then_full(f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(WriteError) as info:
        atomic_write(path, half_then_full)
    msg = str(info.value)
    assert isinstance(info.value, CNNLibError) and isinstance(info.value, OSError)
    assert "disk is full" in msg and "previous version is kept" in msg and "\n" not in msg
    assert torch.equal(safe_torch_load(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.pt"]                     # no temporary file left behind


def test_a_read_only_folder_gives_one_sentence(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match="read-only file system"):
        atomic_torch_save({"w": torch.zeros(1)}, str(tmp_path / "new.pt"))
    assert os.listdir(tmp_path) == []


def test_two_writers_at_once_end_with_one_good_copy(tmp_path):
    path = str(tmp_path / "race.pt")
    errors = []

    def writer(value):
        try:
            for _ in range(20):
                atomic_torch_save({"w": torch.full((20_000,), float(value))}, path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    w = safe_torch_load(path)["w"]
    assert w.shape == (20_000,) and len(set(w.tolist())) == 1      # one writer's whole file, never a mix
    assert os.listdir(tmp_path) == ["race.pt"]


def test_a_full_disk_while_caching_decoded_images_falls_back_to_memory(tmp_path, monkeypatch):
    real = atomic_write

    def full(path, write, mode=0o666):
        if path.endswith(".x.npy"):
            raise WriteError(errno.ENOSPC, f"cannot write {path}: the disk is full")
        return real(path, write, mode)
    monkeypatch.setattr(datacache, "atomic_write", full)
    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    got, y = datacache.cached_split(str(tmp_path), "k", (3, 4, 4), lambda a, b: x[a:b], np.array([0, 1]), ["a", "b"])
    assert np.array_equal(np.asarray(got), x) and list(y) == [0, 1]
