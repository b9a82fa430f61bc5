"""cnnlib.diagnose.slices: failure slices, worst first. A planted slice is found first both in synthetic features
and through a real checkpoint: a quarter of one class's test images turned upside down (the tiny model tells
its classes apart by which quadrant is bright, so it gets the turned ones wrong together, as a photo model gets
a batch of grayscale or rotated photos wrong), while scattered mistakes make no slice."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlib.diagnose.slices import SliceConfig, find_slices, format_slices, slices_for_checkpoint
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model

from conftest import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b)


def planted(seed: int = 0, n: int = 1200, k: int = 6, d: int = 24, slice_size: int = 60):
    """Features in k class blobs, ~8% of mistakes scattered at random, and one planted slice: slice_size images of
    class 0 moved along their own direction and 90% misclassified as class 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(0, 3, (k, d))
    f = centres[y] + rng.normal(0, 1, (n, d))
    p = y.copy()
    noise = rng.random(n) < 0.08
    p[noise] = (y[noise] + rng.integers(1, k, noise.sum())) % k
    members = rng.choice(np.flatnonzero(y == 0), slice_size, replace=False)
    f[members] += rng.normal(0, 3, d) * 2
    p[members] = np.where(rng.random(slice_size) < 0.9, 1, 0)
    return f, y, p, members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_slice_is_found_first(seed):
    f, y, p, members = planted(seed)
    found = find_slices(f, y, p)
    top = found[0]
    assert top["rank"] == 1 and jaccard(top["indices"], members) >= 0.7, (top["size"], top["error_rate"])
    assert top["classes"][0][0] == 0 and top["predicted"][0][0] == 1
    assert top["error_rate"] > 0.7 and top["excess"] == pytest.approx(top["error_rate"] - np.mean(y != p))
    scores = [s["score"] for s in found]
    assert scores == sorted(scores, reverse=True) and all(s["excess"] > 0 for s in found)
    assert set(top["typical"]) <= set(top["indices"]) and len(top["typical"]) == 9 and top["p_value"] < 1e-6


def test_no_slice_in_a_model_that_errs_uniformly():
    rng = np.random.default_rng(0)
    n, k = 800, 4
    y = np.arange(n) % k
    f = np.eye(k)[y] * 3 + rng.normal(0, 1, (n, k))
    p = np.where(rng.random(n) < 0.1, (y + 1) % k, y)
    assert find_slices(f, y, p, SliceConfig(min_size=20)) == []    # scattered mistakes make no slice


def test_verdict_mix_and_bad_inputs():
    f, y, p, members = planted(0)
    verdicts = [{"index": int(i), "verdict": "label error" if i in members else "model error"}
                for i in np.flatnonzero(y != p)]
    top = find_slices(f, y, p, verdicts=verdicts)[0]
    assert max(top["verdicts"], key=top["verdicts"].get) == "label error"
    with pytest.raises(CNNLibError, match="features"):
        find_slices(f[:10], y, p)
    with pytest.raises(CNNLibError, match="at least"):
        find_slices(f[:5], y[:5], p[:5])


@pytest.fixture(scope="module")
def turned_folder(tmp_path_factory):
    """A test folder of the tiny checkpoint's classes, with the first 20 'red' test images turned upside down."""
    root = write_image_folder(tmp_path_factory.mktemp("slices") / "data", n_train=16, n_test=320)
    red = os.path.join(root, "test", "red")
    turned = sorted(os.listdir(red))[:20]
    for name in turned:
        path = os.path.join(red, name)
        Image.open(path).rotate(180).save(path)
    return root, {os.path.join(red, n) for n in turned}


def test_a_turned_subset_of_one_class_is_the_first_slice(tiny_ckpt, turned_folder, tmp_path):
    folder, turned = turned_folder
    model = load_model(tiny_ckpt, "cpu")
    result = slices_for_checkpoint(model, data=folder, root=str(tmp_path / "root"))
    top = result["slices"][0]
    files = {result["paths"][i] for i in top["indices"]}
    wrong_turned = {result["paths"][i] for i in top["indices"]} & turned
    assert len(wrong_turned) >= 0.7 * len(turned) and len(files & turned) / len(files) >= 0.5, format_slices(result)
    assert model.meta["classes"][top["classes"][0][0]] == "red" and len(top["classes"]) == 1
    assert "failure slices among 320 test images" in format_slices(result)


def test_cli(tiny_ckpt, turned_folder, tmp_path):
    folder, turned = turned_folder
    env = {**os.environ, "CNNLIB_DATA_ROOT": str(tmp_path / "root")}
    run = subprocess.run([sys.executable, "-m", "cnnlib", "slices", tiny_ckpt, "--data", folder, "--json",
                          "--top", "3"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert 1 <= len(out["slices"]) <= 3 and len(set(out["slices"][0]["files"]) & turned) >= 12
    bad = subprocess.run([sys.executable, "-m", "cnnlib", "slices", str(tmp_path / "none.pt")], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
