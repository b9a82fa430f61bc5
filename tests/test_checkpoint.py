"""cnnlib.io.checkpoint: one true sentence for every bad file (empty, truncated, corrupt, text, an image, a
plain pickle, code, another architecture, NaN weights, a class list that does not name every output),
in the library and the CLI; format versions; atomic saves."""
from __future__ import annotations

import copy
import io
import os
import random
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch
from cnnlib import CheckpointError
from cnnlib.io.checkpoint import load_checkpoint, save_checkpoint
from cnnlib.inference import load_model
from cnnlib.models.registry import get_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnlib-pwned",))


def saved(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def bad_checkpoints(tiny_ckpt):
    """kind -> (file content, a phrase the one sentence must hold)."""
    good = open(tiny_ckpt, "rb").read()
    ckpt = load_checkpoint(tiny_ckpt)
    other = get_model("resnet9", num_classes=4, image_size=16).state_dict()
    nan = copy.deepcopy(ckpt)
    nan["state_dict"]["fc1.weight"][0, 0] = float("nan")
    short = dict(ckpt, classes=ckpt["classes"][:2])
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("notes.txt", "hello")
    flipped = bytearray(good)
    flipped[good.index(b"data.pkl") + 40] ^= 0xFF    # inside the object index (a flip in tensor bytes goes unseen)
    return {
        "random bytes": (random.Random(0).randbytes(4096), "not a PyTorch file"),   # seeded: 1 in ~256 urandom
        # draws starts with a pickle protocol byte and is (truly) reported as a damaged pickle stream instead
        "truncated": (good[: len(good) // 2], "truncated"),
        "empty": (b"", "empty"),
        "flipped byte": (bytes(flipped), "corrupt"),
        "code-running pickle": (pickle.dumps({"format_version": 1, "model": RunsCode()}), "refused"),
        "code in a torch.save file": (saved({"model": RunsCode()}), "refused"),
        "plain pickle": (pickle.dumps({"a": 1}), "plain Python pickle"),
        "text": (b"not a checkpoint\njust text\n", "text file"),
        "png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "an image"),
        "zip of other things": (zipped.getvalue(), "zip archive"),
        "other architecture": (saved({**ckpt, "state_dict": other}), "another architecture"),
        "bare state_dict": (saved(ckpt["state_dict"]), "cnnlib import"),
        "NaN weights": (saved(nan), "NaN"),
        "classes shorter than the outputs": (saved(short), "class names"),
    }


def test_bad_checkpoints_raise_one_true_sentence(tiny_ckpt, tmp_path):
    if os.path.exists("/tmp/cnnlib-pwned"):
        os.unlink("/tmp/cnnlib-pwned")
    for kind, (blob, phrase) in bad_checkpoints(tiny_ckpt).items():
        path = tmp_path / f"{kind.replace(' ', '_')}.pt"
        path.write_bytes(blob)
        for source in (str(path), blob):          # a path, and bytes as the dashboard's upload gives them
            with pytest.raises(CheckpointError) as info:
                load_model(source)
                pytest.fail(f"{kind} loaded")
            msg = str(info.value)
            assert phrase in msg, (kind, msg)
            assert "\n" not in msg and len(msg.replace(str(path), "FILE")) < 220, (kind, msg)
            assert "weights_only" not in msg and "could run code" not in msg and not msg.endswith(":"), (kind, msg)
    assert not os.path.exists("/tmp/cnnlib-pwned")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))


def test_cli_gives_the_same_sentence_and_exit_code(tiny_ckpt, tmp_path):
    cases = bad_checkpoints(tiny_ckpt)
    for kind in ("random bytes", "empty", "code-running pickle", "NaN weights", "classes shorter than the outputs"):
        blob, phrase = cases[kind]
        path = tmp_path / f"{kind.replace(' ', '_')}.pt"
        path.write_bytes(blob)
        r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", str(path), "x.png", "--json"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and phrase in r.stderr, (kind, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "NaN" not in r.stdout, (kind, r.stderr)
    assert not os.path.exists("/tmp/cnnlib-pwned")


def test_format_versions(tiny_ckpt, tmp_path):
    ckpt = load_checkpoint(tiny_ckpt)
    assert ckpt["format_version"] == 2
    old = {k: v for k, v in ckpt.items() if k not in ("preprocessing", "initial_first_layer")}
    old["format_version"] = 1                                          # a file written before format 2
    torch.save(old, tmp_path / "v1.pt")
    assert load_model(str(tmp_path / "v1.pt")).meta["format_version"] == 1
    torch.save(dict(ckpt, format_version=99), tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(str(tmp_path / "future.pt"))
    torch.save(dict(ckpt, preprocessing={"resize": "big"}), tmp_path / "badpre.pt")
    with pytest.raises(CheckpointError, match="preprocessing"):
        load_checkpoint(str(tmp_path / "badpre.pt"))
    with pytest.raises(CheckpointError, match="without"):
        save_checkpoint({"state_dict": {}}, str(tmp_path / "incomplete.pt"))
