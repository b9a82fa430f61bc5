"""cnnlib.io.metadata: a checkpoint's metadata read without PyTorch agrees with torch.load on every value and
every tensor's shape, refuses what the torch path refuses with the same sentence, and imports no torch."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from cnnlib.io import metadata as ckptmeta
from cnnlib.io.checkpoint import checkpoint_summary, load_checkpoint, safe_torch_load
from cnnlib.errors import CheckpointError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(str(p) for p in (REPO / "checkpoints").glob("*.pt"))


def same(real, light, where="") -> None:
    """Equal values, with each tensor a TensorStub of the same shape and dtype."""
    if isinstance(real, torch.Tensor):
        assert isinstance(light, ckptmeta.TensorStub), where
        assert light.shape == tuple(real.shape) and light.dtype == str(real.dtype), where
        assert light.numel() == real.numel(), where
    elif isinstance(real, dict):
        assert isinstance(light, dict) and list(light) == list(real), where
        for k in real:
            same(real[k], light[k], f"{where}.{k}")
    elif isinstance(real, (list, tuple)):
        assert type(light) is type(real) and len(light) == len(real), where
        for i, (a, b) in enumerate(zip(real, light)):
            same(a, b, f"{where}[{i}]")
    else:
        assert type(light) is type(real) and light == real, (where, real, light)


@pytest.fixture(scope="module")
def checkpoint_files(tiny_ckpt):
    return SHIPPED + [tiny_ckpt]


def test_agrees_with_torch_load_on_every_value_and_shape(checkpoint_files):
    assert len(checkpoint_files) >= 2
    for path in checkpoint_files:
        real = torch.load(path, map_location="cpu", weights_only=True)
        light = ckptmeta.read_meta(path)
        same(real, light, Path(path).name)
        assert ckptmeta.summary(light) == checkpoint_summary(load_checkpoint(path))
        assert ckptmeta.model_meta(light).keys() == real.keys() - {"state_dict"}


def test_bytes_and_file_objects(tiny_ckpt):
    blob = Path(tiny_ckpt).read_bytes()
    for source in (blob, io.BytesIO(blob)):
        same(torch.load(tiny_ckpt, weights_only=True), ckptmeta.read_meta(source))


def test_cached_by_path_mtime_and_size(tiny_ckpt, tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(Path(tiny_ckpt).read_bytes())
    first = ckptmeta.read_meta(str(path))
    assert ckptmeta.read_meta(str(path)) is first                 # cached
    ckpt = torch.load(path, weights_only=True)
    ckpt["classes"] = ["a", "b", "c", "d"]
    torch.save(ckpt, path)
    assert ckptmeta.read_meta(str(path))["classes"] == ["a", "b", "c", "d"]     # a new file version is re-read


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class Mine:
    pass


def _bad(tmp_path: Path, tiny_ckpt) -> dict[str, Path]:
    files = {}

    def put(name, blob):
        files[name] = tmp_path / f"{name}.pt"
        files[name].write_bytes(blob)

    put("random", os.urandom(4096))
    put("text", b"these are my notes\n" * 30)
    put("empty", b"")
    put("png", b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    put("truncated", Path(tiny_ckpt).read_bytes()[:5000])
    put("plain_pickle", pickle.dumps({"a": 1}, protocol=2))
    put("pickle_with_code", pickle.dumps({"a": Evil()}, protocol=2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x/readme.txt", "hello")
    put("zip_without_pickle", buf.getvalue())
    for name, obj in (("evil", {"x": Evil()}), ("user_class", {"x": Mine()}),
                      ("bare_weights", {"w": torch.zeros(3)}), ("a_list", [1, 2, 3]),
                      ("missing_keys", {"format_version": 2, "classes": ["a"]})):
        files[name] = tmp_path / f"{name}.pt"
        torch.save(obj, files[name])
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    for name, change in (("future_version", {"format_version": 99}), ("bad_shape", {"input_shape": [3, 16]}),
                         ("bad_norm", {"normalization": {"mean": [0.5], "std": [1.0]}}),
                         ("huge", {"input_shape": [3, 100000, 16]})):
        files[name] = tmp_path / f"{name}.pt"
        torch.save({**ckpt, **change}, files[name])
    return files


def test_refuses_what_the_torch_path_refuses_with_its_sentence(tmp_path, tiny_ckpt):
    for name, path in _bad(tmp_path, tiny_ckpt).items():
        with pytest.raises(CheckpointError) as torch_path:
            load_checkpoint(str(path))
        with pytest.raises(CheckpointError) as light:
            ckptmeta.read_meta(str(path))
        assert str(light.value) == str(torch_path.value), name
        with pytest.raises(CheckpointError) as again:           # errors are cached too, and still raised
            ckptmeta.read_meta(str(path))
        assert str(again.value) == str(light.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckptmeta.read_meta(str(tmp_path / "nothing.pt"))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Touch:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for blob_name, writer in (("zip", lambda p: torch.save({"x": Touch()}, p)),
                              ("bare", lambda p: p.write_bytes(pickle.dumps({"x": Touch()})))):
        path = tmp_path / f"{blob_name}.pt"
        writer(path)
        with pytest.raises(CheckpointError, match="refused"):
            ckptmeta.read_meta(str(path))
        assert not marker.exists()


def test_find_class_maps_only_exact_allowed_names():
    """A name that passes the allowlist's prefix check (builtins.setattr starts with builtins.set) is not
    imported either; the unpickler's own table decides."""
    u = ckptmeta._Unpickler(b"", {})
    for module, name in (("builtins", "setattr"), ("torch", "load"), ("torch.hub", "load"), ("os", "system"),
                         ("builtins", "eval"), ("subprocess", "Popen")):
        with pytest.raises(ckptmeta._Corrupt):
            u.find_class(module, name)
    assert u.find_class("collections", "OrderedDict") is __import__("collections").OrderedDict
    stub = ckptmeta._rebuild_tensor(ckptmeta._Storage("torch.float16", 6, "0"), 0, (2, 3), (3, 1), False, {})
    assert stub == ckptmeta.TensorStub((2, 3), "torch.float16") and stub.numel() == 6


def test_tensor_stub_survives_pickling():
    stub = ckptmeta.TensorStub((4, 3, 3, 3), "torch.float32")
    assert pickle.loads(pickle.dumps(stub)) == stub


def test_importing_it_imports_no_torch():
    code = ("import sys; import cnnlib; from cnnlib.io import metadata as ckptmeta; "
            f"m = ckptmeta.read_meta({SHIPPED[0]!r}); ckptmeta.summary(m); "
            "assert 'torch' not in sys.modules, [k for k in sys.modules if k.startswith('torch')][:5]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_package_no_longer_exports_the_model_registry():
    import cnnlib
    assert not any(hasattr(cnnlib, n) for n in ("get_model", "list_models", "register_model"))
    from cnnlib.models.registry import get_model, list_models, register_model  # noqa: F401 - where they live


def test_safe_torch_load_and_read_meta_agree_on_the_legacy_format(tmp_path, tiny_ckpt):
    """The pre-zip torch.save format is left to torch: NeedsTorch (a CheckpointError) says so."""
    path = tmp_path / "legacy.pt"
    torch.save(torch.load(tiny_ckpt, weights_only=True), path, _use_new_zipfile_serialization=False)
    assert isinstance(safe_torch_load(str(path)), dict)
    with pytest.raises(ckptmeta.NeedsTorch):
        ckptmeta.read_meta(str(path))
