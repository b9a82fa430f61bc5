"""Temperature scaling: it recovers a known over-confidence factor, lowers ECE and NLL, is stored in the
checkpoint, and `predict --calibrated` uses it."""
import json

import numpy as np
import pytest
import torch

from cnnlib.diagnose.calibration import (apply_temperature, fit_temperature, fit_temperature_logits,
                                         stored_temperature, temperature_report)
from cnnlib.errors import CNNLibError


def calibrated_logits(n=6000, k=10, seed=0):
    """Logits whose softmax is calibrated by construction: each label is drawn from softmax(logits)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, k))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("factor", [0.5, 3.0])
def test_fitted_temperature_recovers_a_known_factor(factor):
    z, y = calibrated_logits()
    info = temperature_report(z * factor, y)          # over-confident (factor > 1) or under-confident (< 1)
    assert info["T"] == pytest.approx(factor, rel=0.1)
    assert info["ece_after"] < info["ece_before"] and info["nll_after"] < info["nll_before"]
    assert sum(info["bins_after"]["count"]) == len(y) and len(info["bins_before"]["count"]) == 15
    # predictions never change, only the probabilities
    p1 = torch.softmax(torch.as_tensor(z * factor), 1).numpy()
    p2 = apply_temperature(p1, info["T"])
    assert (p1.argmax(1) == p2.argmax(1)).all()
    assert np.allclose(p2, torch.softmax(torch.as_tensor(z * factor / info["T"]), 1).numpy(), atol=1e-5)


def test_bad_inputs_are_one_sentence():
    with pytest.raises(CNNLibError, match="logits"):
        fit_temperature_logits(np.zeros((3, 4)), [0, 1])
    with pytest.raises(CNNLibError, match="class indices"):
        fit_temperature_logits(np.zeros((2, 4)), [0, 7])
    with pytest.raises(CNNLibError, match="positive"):
        apply_temperature(np.ones((1, 3)) / 3, -1.0)
    with pytest.raises(CNNLibError, match="calibrate"):
        stored_temperature({})


def test_fit_temperature_is_stored_and_used_by_predict(tiny_ckpt, tmp_path, capsys):
    import shutil

    from cnnlib.__main__ import main
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.inference import load_model, predict
    from cnnlib.io.checkpoint import load_checkpoint
    from PIL import Image

    path = str(tmp_path / "c.pt")
    shutil.copy(tiny_ckpt, path)
    model = load_model(path)
    x, _ = load_checkpoint_split(model.meta, "test")
    img = tmp_path / "one.png"
    Image.fromarray(np.asarray(x[0]).transpose(1, 2, 0)).save(img)
    assert main(["predict", path, str(img), "--calibrated"]) == 2          # no temperature yet
    assert "calibrate" in capsys.readouterr().err

    info = fit_temperature(model, path=path)
    stored = load_checkpoint(path)["temperature"]                          # loads with weights_only=True
    assert stored["T"] == pytest.approx(info["T"]) and stored["fitted_on"].startswith("val split (16 images)")
    assert set(stored) >= {"T", "ece_before", "ece_after", "nll_before", "nll_after", "fitted_on"}
    assert stored["nll_after"] <= stored["nll_before"] + 1e-9

    model = load_model(path)
    plain, cal = predict(model, str(img), k=4), predict(model, str(img), k=4, calibrated=True)
    assert [r["class"] for r in plain] == [r["class"] for r in cal]
    want = apply_temperature(np.array([r["prob"] for r in plain]), info["T"])
    # top-4 of 4 classes: every probability, rescaled by T
    assert np.allclose([r["prob"] for r in cal], want, atol=1e-4)

    assert main(["calibrate", path]) == 0
    assert "ECE" in capsys.readouterr().out
    assert main(["predict", path, str(img), "--calibrated", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == plain[0]["class"]
    assert main(["calibrate", str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
