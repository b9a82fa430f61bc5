"""Triage: planted label errors are found as "label error", a far-away image as "out of distribution", and the
checkpoint path and the CLI give one record per misclassified image."""
import json
import os
import shutil

import numpy as np
import pytest

from cnnlib.diagnose.triage import VERDICTS, Rule, to_json, triage, triage_for_checkpoint
from cnnlib.errors import CNNLibError

K, D = 5, 32


def synthetic_case(seed=0, n_train=100, n_test=200, n_flip=30, n_hard=40):
    """Features of a world with K classes (clusters around orthogonal centroids), a linear 'model' on them,
    planted flipped labels on clean test images, hard test images between two classes (real model errors),
    and one image far from every class. Returns everything triage needs plus the planted indices."""
    rng = np.random.default_rng(seed)
    cent = np.linalg.qr(rng.normal(size=(D, D)))[0][:K] * 4.0                  # (K, D) orthogonal, norm 4
    y_train = np.repeat(np.arange(K), n_train)
    f_train = cent[y_train] + rng.normal(0, 0.6, size=(len(y_train), D))
    y_test = np.repeat(np.arange(K), n_test)
    f_test = cent[y_test] + rng.normal(0, 0.6, size=(len(y_test), D))
    hard = rng.choice(len(y_test), n_hard, replace=False)
    other = (y_test[hard] + rng.integers(1, K, n_hard)) % K
    mix = rng.uniform(0.52, 0.65, n_hard)[:, None]                              # a little closer to the other
    f_test[hard] = (1 - mix) * cent[y_test[hard]] + mix * cent[other] + rng.normal(0, 0.6, (n_hard, D))
    clean = np.setdiff1d(np.arange(len(y_test)), hard)
    flip = rng.choice(clean, n_flip, replace=False)
    y_given = y_test.copy()
    y_given[flip] = (y_test[flip] + rng.integers(1, K, n_flip)) % K
    ood_dir = np.linalg.qr(np.concatenate([cent, rng.normal(size=(1, D))]).T)[0][:, K]   # orthogonal to all
    f_test = np.concatenate([f_test, 6.0 * ood_dir[None]])
    logits = f_test @ cent.T / 4.0 * 1.5                                                # (N, K)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ood = len(f_test) - 1
    y_given = np.concatenate([y_given, [(probs[ood].argmax() + 1) % K]])
    return {"probs": probs, "targets": y_given, "f_test": f_test, "f_train": f_train, "y_train": y_train,
            "flip": flip, "hard": hard, "ood": ood}


@pytest.fixture(scope="module")
def case():
    return synthetic_case()


def test_planted_label_errors_are_found_with_precision_and_recall(case):
    meta = {"classes": [f"c{i}" for i in range(K)]}
    records = triage(meta, case["probs"], case["targets"], case["f_test"], case["f_train"], case["y_train"])
    wrong = np.flatnonzero(case["probs"].argmax(1) != case["targets"])
    assert [r["index"] for r in records] == wrong.tolist()                     # one record per mistake, in order
    assert all(r["verdict"] in VERDICTS and 0.0 <= r["confidence"] <= 1.0 for r in records)
    said = {r["index"] for r in records if r["verdict"] == "label error"}
    planted = set(case["flip"].tolist())
    hit = len(said & planted)
    precision, recall = hit / max(len(said), 1), hit / len(planted)
    # the hard images are real model errors (their given label is the truth): they must not crowd the list
    assert recall >= 0.8 and precision >= 0.8, (precision, recall)
    hard_errors = {r["index"]: r["verdict"] for r in records if r["index"] in set(case["hard"].tolist())}
    assert hard_errors and sum(v == "label error" for v in hard_errors.values()) <= len(hard_errors) // 4
    ev = next(r for r in records if r["index"] in said & planted)["evidence"]
    assert ev["neighbors"]["agree_predicted"] >= Rule().label_agree and ev["label_quality"] <= Rule().label_quality
    assert len(ev["neighbors"]["indices"]) == Rule().k and ev["rule"]


def test_far_away_image_is_out_of_distribution(case):
    records = triage({}, case["probs"], case["targets"], case["f_test"], case["f_train"], case["y_train"])
    rec = next(r for r in records if r["index"] == case["ood"])
    assert rec["verdict"] == "out of distribution", rec
    assert rec["evidence"]["distance_percentile"] == pytest.approx(1.0)
    assert sum(r["verdict"] == "out of distribution" for r in records) <= len(records) // 4


def test_the_rule_changes_the_verdicts_and_refuses_bad_thresholds(case):
    args = (case["probs"], case["targets"], case["f_test"], case["f_train"], case["y_train"])
    strict = triage({}, *args, rule=Rule(label_quality=0.0, label_agree=1.0))
    assert sum(r["verdict"] == "label error" for r in strict) < len(case["flip"]) // 2
    with pytest.raises(CNNLibError, match="label_agree"):
        triage({}, *args, rule=Rule(label_agree=2.0))
    with pytest.raises(CNNLibError, match="training features"):
        triage({}, case["probs"], case["targets"], case["f_test"], case["f_train"][:, :3], case["y_train"])
    with pytest.raises(CNNLibError, match="classes"):
        triage({"classes": ["a", "b"]}, *args)


@pytest.fixture(scope="module")
def flipped_folder(tiny_ckpt, tmp_path_factory):
    """A copy of tiny_ckpt's test folder with 4 images moved to another class folder."""
    from cnnlib.io.checkpoint import load_checkpoint
    src = os.path.join(load_checkpoint(tiny_ckpt)["data"]["path"], "test")
    out = tmp_path_factory.mktemp("flipped") / "test"
    shutil.copytree(src, out)
    classes = sorted(os.listdir(out))
    moved = []
    for i, c in enumerate(classes):
        name = sorted(os.listdir(out / c))[0]
        dst = out / classes[(i + 1) % len(classes)] / f"flip-{name}"
        os.rename(out / c / name, dst)
        moved.append(str(dst))
    return str(out), moved


def test_triage_for_checkpoint_on_a_flipped_copy(tiny_ckpt, flipped_folder):
    from cnnlib.inference import load_model
    folder, moved = flipped_folder
    model = load_model(tiny_ckpt)
    result = triage_for_checkpoint(model, data=folder)
    assert result["source"] == "computed" and len(result["paths"]) == 32
    rows = to_json(result)
    for r in rows:
        assert set(r) == {"path", "index", "label", "predicted", "verdict", "confidence", "evidence"}
        assert os.path.isfile(r["path"]) and r["label"] in model.meta["classes"] and r["label"] != r["predicted"]
        assert os.path.basename(os.path.dirname(r["path"])) == r["label"]        # the path is that image's file
    json.dumps(rows)
    again = triage_for_checkpoint(model, data=folder)                   # predictions now read from the cache
    assert [(r["index"], r["verdict"]) for r in again["records"]] == [(r["index"], r["verdict"]) for r in result["records"]]
    # a well-trained tiny model gets the moved images' true class right, so they are among the mistakes
    assert {r["path"] for r in rows} & set(moved)
    own = triage_for_checkpoint(model)                                   # the stored predictions
    assert own["source"] == "stored"


def test_cli_json_text_and_errors(tiny_ckpt, flipped_folder, tmp_path, capsys):
    from cnnlib.__main__ import main
    out = tmp_path / "t.json"
    assert main(["triage", tiny_ckpt, "--data", flipped_folder[0], "--json", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and all(r["verdict"] in VERDICTS for r in rows)
    capsys.readouterr()
    assert main(["triage", tiny_ckpt, "--data", flipped_folder[0]]) == 0
    text = capsys.readouterr().out
    assert "misclassified" in text and "verdict" in text
    assert main(["triage", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["triage", tiny_ckpt, "--data", str(tmp_path / "nowhere")]) == 2
