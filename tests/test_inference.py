"""cnnlib.inference: the predict CLI, the tutorial's picture, preprocessing from the checkpoint, and the
out-of-distribution warning."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from modeltools import rgb
from PIL import Image

from cnnlib.inference import load_model, predict, visualize_predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_predict_cli_json(tiny_ckpt, tmp_path):
    img = tmp_path / "a.png"
    rgb().save(img)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", tiny_ckpt, str(img), "--json", "--top", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out[0]["image"] == str(img) and len(out[0]["top"]) == 2 and set(out[0]["top"][0]) == {"class", "prob"}
    r = subprocess.run([sys.executable, "-m", "cnnlib", "predict", tiny_ckpt, str(img), str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "bad.png" in r.stderr
    assert str(img) in r.stdout


def test_visualize_predictions_draws_image_and_bars(tiny_ckpt, tmp_path):
    img = tmp_path / "a.png"
    rgb().save(img)
    fig = visualize_predictions(load_model(tiny_ckpt), str(img), "cpu")
    image_ax, bar_ax = fig.axes
    assert image_ax.images and len(bar_ax.patches) == 4


def test_ood_warning_speaks_for_unlike_images_only():
    from cnnlib.inference import ood_warning, reference_statistics
    rng = np.random.default_rng(0)
    x = np.zeros((200, 1, 28, 28), np.uint8)                       # Fashion-MNIST-like: objects on black
    x[:, :, 6:22, 8:20] = rng.integers(80, 255, (200, 1, 16, 12))
    meta = {"normalization": {"mean": [0.2], "std": [0.3]}, "data": {"name": "fashion-like"},
            "test_predictions": {"probs": torch.tensor(rng.dirichlet([0.2] * 10, 200), dtype=torch.float16)}}
    ref = reference_statistics(x)
    flagged = sum(ood_warning(meta, x[i] / 255.0, None, ref) is not None for i in range(200))
    assert flagged <= 4                                             # the test images themselves: rarely
    photo = rng.uniform(0.3, 0.9, (1, 28, 28))                      # bright all the way to the border
    msg = ood_warning(meta, photo, None, ref)
    assert msg and "fashion-like" in msg and "border brightness" in msg
    unsure = np.full(10, 0.1)
    assert "less sure" in ood_warning(meta, x[0] / 255.0, unsure, ref)


def test_predict_uses_the_checkpoint_preprocessing(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 120, 3), dtype=np.uint8))
    plain = predict(model, wide, k=4)
    model.meta = dict(model.meta, preprocessing={"resize": 16, "crop": 16})    # shorter side 16, centre 16x16
    centre = wide.resize((48, 16), Image.Resampling.BILINEAR).crop((16, 0, 32, 16))
    cropped = predict(model, wide, k=4)
    assert cropped == predict(model, centre, k=4) and cropped != plain
