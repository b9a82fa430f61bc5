"""triage, robustness and report on an imported model at a size that is not 32 px: a torchvision
mobilenet_v3_small with 4 classes at 64 px (random weights, non-trivial BatchNorm; a small torchvision classifier
with a Linear head, as resnet18's, that runs in seconds on two cores) brought in with `cnnlib import`, once with a
train/ and test/ folder and once with a test folder only (as the 224-px resnet18 import in .cache/bench224 came: no
training images, so triage's neighbours are the other test images). Synthetic images."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

from cnnlib.io.checkpoint import load_checkpoint
from cnnlib.models.registry import get_model

from conftest import write_image_folder
from test_import import cli, randomize_bn

SIZE = 64
ARCH = "torchvision/mobilenet_v3_small"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """{"both": checkpoint with train/ and test/, "test": checkpoint with a test folder only, "root": caches}."""
    base = tmp_path_factory.mktemp("imported64")
    folder = write_image_folder(base / "data", n_train=12, n_test=16, size=SIZE)
    torch.manual_seed(0)
    weights = base / "weights.pth"
    torch.save(randomize_bn(get_model(ARCH, num_classes=4)).state_dict(), weights)
    out = {"root": str(base / "root")}
    for kind, data in (("both", folder), ("test", os.path.join(folder, "test"))):
        path = base / f"imported-{kind}.pt"
        rc, _, err = cli("import", weights, "--model", ARCH, "--data", data, "--out", path,
                         "--image-size", SIZE, "--data-root", out["root"])
        assert rc == 0, err
        out[kind] = str(path)
    return out


def _stored(path):
    tp = load_checkpoint(path)["test_predictions"]
    return np.asarray(tp["targets"]), np.asarray(tp["preds"])


@pytest.mark.parametrize("kind", ["both", "test"])
def test_triage_cli_gives_one_record_per_mistake(imported, kind):
    rc, out, err = cli("triage", imported[kind], "--json", "--data-root", imported["root"])
    assert rc == 0, err
    rows = json.loads(out)
    targets, preds = _stored(imported[kind])
    wrong = np.flatnonzero(preds != targets)
    assert len(wrong) >= 3                                         # random weights: mistakes to judge
    assert [r["index"] for r in rows] == wrong.tolist()
    n_ref = 12 if kind == "both" else 16                            # training images, or the test images
    for r in rows:
        nb = r["evidence"]["neighbors"]
        assert nb["among"] == ("train" if kind == "both" else "test")
        assert len(nb["indices"]) == 10 and all(0 <= i < n_ref for i in nb["indices"])
        if kind == "test":
            assert r["index"] not in nb["indices"]                  # never its own neighbour
        assert r["verdict"] in ("label error", "ambiguous", "out of distribution", "model error")
        assert r["path"].endswith(".png") and 0.0 <= r["confidence"] <= 1.0
    assert ("no training images" in err) == (kind == "test")


def test_robustness_then_report_on_the_64px_import(imported, tmp_path):
    ckpt, root = imported["both"], imported["root"]
    rc, out, err = cli("robustness", ckpt, "--images", 3, "--corruptions", "brightness", "pixelate", "--json",
                       "--data-root", root)
    assert rc == 0, err
    res = json.loads(out)
    text = json.dumps(res)
    assert "brightness" in text and "pixelate" in text
    html = tmp_path / "r.html"
    rc, out, err = cli("report", ckpt, "--out", html, "--errors", 2, "--data-root", root)
    assert rc == 0, err
    page = html.read_text(encoding="utf-8")
    errors = re.search(r'<section id="errors">(.*?)</section>', page, re.S).group(1)
    assert "Triage of all" in errors and "Triage verdicts are left out" not in errors
    assert errors.count('class="err"') == 2 and errors.count("<img") == 2 * 3     # image, two saliency maps
    robust = re.search(r'<section id="robustness">(.*?)</section>', page, re.S).group(1)
    assert "pixelate" in robust and 'class="absent"' not in robust             # the cached result is shown


def test_report_on_a_test_only_import_says_where_the_neighbours_came_from(imported, tmp_path):
    html = tmp_path / "r.html"
    rc, _, err = cli("report", imported["test"], "--out", html, "--errors", 2, "--data-root", imported["root"])
    assert rc == 0, err
    errors = re.search(r'<section id="errors">(.*?)</section>', html.read_text(encoding="utf-8"), re.S).group(1)
    assert "Triage of all" in errors and "neighbours are the other test images" in errors


def test_leave_one_out_neighbours_find_planted_label_errors():
    """triage without training features: each test image's neighbours are the others (a duplicate is one)."""
    from cnnlib.diagnose.triage import triage
    from test_triage import K, synthetic_case
    case = synthetic_case()
    f = case["f_test"].copy()
    f[1] = f[0]                                                     # an exact duplicate pair
    meta = {"classes": [f"c{i}" for i in range(K)]}
    records = triage(meta, case["probs"], case["targets"], f)
    wrong = np.flatnonzero(case["probs"].argmax(1) != case["targets"])
    assert [r["index"] for r in records] == wrong.tolist()
    assert all(r["index"] not in r["evidence"]["neighbors"]["indices"] for r in records)
    said = {r["index"] for r in records if r["verdict"] == "label error"}
    planted = set(case["flip"].tolist())
    assert len(said & planted) >= 0.8 * len(planted) and len(said & planted) >= 0.8 * len(said)
    from cnnlib.diagnose.triage import _nearest
    idx, sim = _nearest(f[:3], f, 2, leave_one_out=True)
    assert idx[0, 0] == 1 and idx[1, 0] == 0 and 2 not in idx[2] and sim[0, 0] == pytest.approx(1.0)
