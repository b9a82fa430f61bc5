"""cnnlib.diagnose.evaluate: metrics against independent computations, stored predictions, queries and the CLI."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlib.diagnose import evaluate
from cnnlib.io.checkpoint import save_checkpoint
from cnnlib.errors import CNNLibError
from modeltools import assert_unchanged, images, logits_of, make_model, snapshot

# -----------------------------------------------------------------------------
# evaluation: metrics

def test_confusion_matrix_and_per_class_hand_example():
    targets = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    probs = np.eye(3, dtype=np.float32)[preds] * 0.7 + 0.1
    r = evaluate.compute_report(targets, probs, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["accuracy"] == pytest.approx(3 / 5)
    got = {d["class"]: d for d in r["per_class"]}
    assert got["a"]["precision"] == pytest.approx(1 / 2) and got["a"]["recall"] == pytest.approx(1 / 2)
    assert got["b"]["precision"] == pytest.approx(2 / 3) and got["b"]["recall"] == pytest.approx(1.0)
    assert got["b"]["f1"] == pytest.approx(0.8)
    assert got["c"] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["confusion_normalized"][1] == [0.0, 1.0, 0.0]
    assert r["top5_accuracy"] == 1.0  # 3 classes: top-3 always holds the target


def test_report_matches_bruteforce_on_random_predictions():
    rng = np.random.default_rng(0)
    n, k = 400, 7
    logits = rng.normal(size=(n, k)) * 2
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    targets = rng.integers(0, k, n)
    r = evaluate.compute_report(targets, probs, [str(i) for i in range(k)])
    preds = probs.argmax(1)
    cm = [[sum(1 for t, p in zip(targets, preds) if t == i and p == j) for j in range(k)] for i in range(k)]
    assert r["confusion_matrix"] == cm
    for i, d in enumerate(r["per_class"]):
        tp = cm[i][i]
        npred, support = sum(cm[j][i] for j in range(k)), sum(cm[i])
        prec = tp / npred if npred else 0.0
        rec = tp / support if support else 0.0
        assert d["support"] == support
        assert d["precision"] == pytest.approx(prec) and d["recall"] == pytest.approx(rec)
        assert d["f1"] == pytest.approx(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        assert sum(r["confusion_normalized"][i]) == pytest.approx(1.0)
    top5 = np.mean([t in np.argsort(-p)[:5] for t, p in zip(targets, probs)])
    assert r["top5_accuracy"] == pytest.approx(top5)
    assert r["accuracy"] == pytest.approx(np.mean(preds == targets))
    losses = -np.log(probs[np.arange(n), targets])
    assert r["mean_loss"] == pytest.approx(losses.mean(), rel=1e-5)
    assert r["hardest"] == list(np.argsort(-losses, kind="stable")[:20])
    wrong = [i for i in range(n) if preds[i] != targets[i]]
    assert r["most_confident_wrong"] == sorted(wrong, key=lambda i: -probs[i, preds[i]])[:20]
    assert set(r) >= {"accuracy", "top5_accuracy", "classes", "confusion_matrix", "per_class", "ece", "n",
                      "confusion_normalized", "calibration", "most_confident_wrong", "hardest"}
    assert json.loads(json.dumps(r)) == r


def test_ece_on_a_constructed_case():
    # 5 samples at confidence 0.85 with 3 right (gap 0.25), 5 at 0.6 (edge of (0.5, 0.6]) with 4 right (gap 0.2).
    conf = np.array([0.85] * 5 + [0.6] * 5)
    right = np.array([1, 1, 1, 0, 0] + [1, 1, 1, 1, 0], bool)
    probs = np.stack([conf, 1 - conf], 1).astype(np.float64)
    targets = np.where(right, 0, 1)
    r = evaluate.compute_report(targets, probs, ["x", "y"], n_bins=10)
    assert r["ece"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.2, abs=1e-6)
    cal = r["calibration"]
    assert cal["count"] == [0, 0, 0, 0, 0, 5, 0, 0, 5, 0]
    assert cal["accuracy"][5] == pytest.approx(0.8) and cal["confidence"][5] == pytest.approx(0.6)
    assert cal["accuracy"][8] == pytest.approx(0.6) and cal["confidence"][0] is None
    assert r["mce"] == pytest.approx(0.25, abs=1e-6)
    # perfectly calibrated: ECE 0
    perfect = evaluate.calibration(np.full(10, 0.7), np.array([1] * 7 + [0] * 3), n_bins=5)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-12)


def test_compute_report_rejects_bad_input():
    with pytest.raises(CNNLibError):
        evaluate.compute_report([0, 1], np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(CNNLibError):
        evaluate.compute_report([], np.zeros((0, 2)), ["a", "b"])


# -----------------------------------------------------------------------------
# evaluation: predictions

def test_run_split_matches_an_independent_forward():
    model = make_model()
    x, y = images(37), torch.arange(37) % 4
    snap = snapshot(model)
    out = evaluate.run_split(model, x, y, batch_size=10)
    assert_unchanged(model, snap)
    logits = logits_of(model, x.float() / 255)
    assert out["probs"].dtype == np.float32 and out["probs"].shape == (37, 4)
    np.testing.assert_allclose(out["probs"], torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["losses"], F.cross_entropy(logits, y, reduction="none").numpy(), atol=1e-4)
    assert out["preds"].tolist() == logits.argmax(1).tolist() and out["targets"].dtype == np.int64
    np.testing.assert_allclose(evaluate.run_split(model, x.float() / 255, y)["probs"], out["probs"], atol=1e-5)


def test_predictions_for_reuses_stored_predictions_when_they_match():
    model = make_model()
    x, y = images(30), torch.arange(30) % 4
    ran = evaluate.run_split(model, x, y)
    model.meta["test_predictions"] = {"targets": y.to(torch.int16),
                                      "preds": torch.from_numpy(ran["preds"]).to(torch.int16),
                                      "probs": torch.from_numpy(ran["probs"]).to(torch.float16)}
    stored = evaluate.predictions_for(model, "test")
    assert stored["source"] == "stored" and stored["probs"].dtype == np.float32
    np.testing.assert_allclose(stored["losses"], ran["losses"], atol=5e-3)
    assert evaluate.predictions_for(model, "test", x, y)["source"] == "stored"
    y2 = y.flip(0)
    assert evaluate.predictions_for(model, "test", x, y2)["source"] == "computed"
    assert evaluate.predictions_for(model, "test", x, y, recompute=True)["source"] == "computed"
    assert evaluate.predictions_for(model, "val", x, y)["source"] == "computed"
    with pytest.raises(CNNLibError):
        evaluate.predictions_for(model, "val")
    del model.meta["test_predictions"]
    with pytest.raises(CNNLibError):
        evaluate.predictions_for(model, "test")


def test_query_misclassified_and_cells():
    targets = np.array([0, 1, 2, 0, 1, 2, 0])
    probs = np.array([[.9, .05, .05], [.7, .2, .1], [.1, .6, .3], [.2, .5, .3],
                      [.1, .8, .1], [.3, .3, .4], [.4, .35, .25]], np.float32)
    preds = {"targets": targets, "preds": probs.argmax(1), "probs": probs}
    imgs = np.arange(7 * 3 * 2 * 2, dtype=np.uint8).reshape(7, 3, 2, 2)
    q = evaluate.query_misclassified(preds, images=imgs)
    assert q["indices"].tolist() == [1, 2, 3]                      # confidence .7, .6, .5
    assert q["images"].dtype == np.uint8 and np.array_equal(q["images"], imgs[[1, 2, 3]])
    assert q["top3"][0] == [(0, pytest.approx(0.7)), (1, pytest.approx(0.2)), (2, pytest.approx(0.1))]
    by_loss = evaluate.query_misclassified(preds, sort="loss")
    assert by_loss["indices"].tolist() == [1, 3, 2]               # -log .2 (tie, data order), then -log .3
    assert evaluate.query_misclassified(preds, true_class=0)["indices"].tolist() == [3]
    assert evaluate.query_misclassified(preds, pred_class=0, limit=1)["indices"].tolist() == [1]
    assert evaluate.query_misclassified(preds, pred_class=0, limit=1)["count"] == 1
    cell = evaluate.query_cell(preds, 0, 0)
    assert cell["indices"].tolist() == [0, 6] and cell["images"] is None
    empty = evaluate.query_misclassified(preds, true_class=2, pred_class=0, images=imgs)
    assert len(empty["indices"]) == 0 and empty["images"].shape == (0, 3, 2, 2)


# -----------------------------------------------------------------------------
# evaluation: CLI

def _write_checkpoint(tmp_path, model, y, probs):
    path = tmp_path / "m.pt"
    save_checkpoint({"model": {"name": "simple_cnn", "kwargs": {"num_classes": 4, "image_size": 16}},
                     "state_dict": model.state_dict(), **{k: model.meta[k] for k in ("classes", "input_shape",
                                                                                      "normalization")},
                     "data": {"name": "fake"},
                     "test_predictions": {"targets": y.to(torch.int16), "preds": probs.argmax(1).to(torch.int16),
                                          "probs": probs.to(torch.float16)}}, str(path))
    return str(path)


def test_evaluate_main_with_stored_predictions_needs_no_dataset(tmp_path, capsys, monkeypatch):
    model = make_model()
    x, y = images(40), torch.arange(40) % 4
    probs = torch.from_numpy(evaluate.run_split(model, x, y)["probs"])
    path = _write_checkpoint(tmp_path, model, y, probs)

    def no_data(*a, **k):
        raise AssertionError("the dataset must not be loaded")
    from cnnlib.data import spec as data_spec
    monkeypatch.setattr(data_spec, "load_checkpoint_split", no_data)
    assert evaluate.evaluate_main([path, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 40 and rep["source"] == "stored" and rep["classes"] == ["c0", "c1", "c2", "c3"]
    assert rep["accuracy"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    assert evaluate.evaluate_main([path]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion matrix" in text and "c3" in text

    # --split val loads the data through cnnlib.data.spec and recomputes
    calls = []
    monkeypatch.setattr(data_spec, "load_checkpoint_split",
                        lambda meta, split, data, root: calls.append((split, data, root)) or (x, y))
    assert evaluate.evaluate_main([path, "--split", "val", "--json", "--data", "d", "--data-root", "r"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert calls == [("val", "d", "r")] and rep["source"] == "computed" and rep["n"] == 40

    # errors: one message on stderr, exit code 2
    assert evaluate.evaluate_main([str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err



def test_inconsistent_stored_predictions_raise_cnnlib_error():
    from cnnlib.diagnose.evaluate import stored_predictions
    meta = {"classes": ["a", "b", "c"], "test_predictions": {
        "targets": torch.tensor([0, 1, 2], dtype=torch.int16), "preds": torch.tensor([0, 1, 1], dtype=torch.int16),
        "probs": torch.full((3, 2), 0.5, dtype=torch.float16)}}     # 2 columns for 3 classes
    with pytest.raises(CNNLibError, match="inconsistent"):
        stored_predictions(meta)
    meta["test_predictions"]["probs"] = torch.full((3, 3), 1 / 3, dtype=torch.float16)
    assert stored_predictions(meta)["probs"].shape == (3, 3)

