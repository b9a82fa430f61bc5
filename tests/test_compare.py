"""cnnlib.diagnose.compare: the 2x2 table and McNemar's test by hand, per-class accuracy, CSV selections, file paths."""
import csv
import io
import math
import os

import numpy as np
import pytest
from conftest import CLASSES4, write_image_folder
from PIL import Image

from cnnlib.diagnose.compare import compare, compare_checkpoints, mcnemar, selection_csv, split_paths
from cnnlib.data.spec import load_checkpoint_split
from cnnlib.errors import CNNLibError


def constructed(both, only_a, only_b, neither, k=2):
    """targets and predictions with exactly these counts; images alternate between classes 0..k-1."""
    n = both + only_a + only_b + neither
    t = np.arange(n) % k
    wrong = (t + 1) % k
    ra = np.r_[np.ones(both + only_a, bool), np.zeros(only_b + neither, bool)]
    rb = np.r_[np.ones(both, bool), np.zeros(only_a, bool), np.ones(only_b, bool), np.zeros(neither, bool)]
    return t, np.where(ra, t, wrong), np.where(rb, t, wrong)


def test_small_discordant_count_uses_the_exact_binomial_test():
    t, a, b = constructed(60, 15, 5, 20)
    c = compare(t, a, b, ["x", "y"])
    assert c["table"] == [[60, 15], [5, 20]]
    assert c["acc_a"] == pytest.approx(0.75) and c["acc_b"] == pytest.approx(0.65) and c["n"] == 100
    # 20 discordant: two-sided exact binomial, 2 * P(X <= 5), X ~ Bin(20, 1/2)
    p = 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20
    assert c["mcnemar"]["exact"] is True and c["mcnemar"]["discordant"] == 20
    assert c["mcnemar"]["statistic"] == 5 and c["mcnemar"]["p_value"] == pytest.approx(p, rel=1e-9)
    assert c["only_a"].tolist() == list(range(60, 75)) and c["only_b"].tolist() == list(range(75, 80))
    # per class by hand: class 0 holds the even indices
    even = np.arange(100) % 2 == 0
    for row, cls in zip(c["per_class"], (even, ~even)):
        ea, eb = (a[cls] == t[cls]).mean(), (b[cls] == t[cls]).mean()
        assert row["acc_a"] == pytest.approx(ea) and row["acc_b"] == pytest.approx(eb)
        assert row["diff"] == pytest.approx(eb - ea) and row["support"] == 50


def test_large_discordant_count_uses_chi_square_with_continuity_correction():
    t, a, b = constructed(50, 30, 10, 10, k=3)
    c = compare(t, a, b, ["x", "y", "z"])
    assert c["table"] == [[50, 30], [10, 10]]
    stat = (abs(30 - 10) - 1) ** 2 / 40                          # 9.025
    assert c["mcnemar"]["exact"] is False
    assert c["mcnemar"]["statistic"] == pytest.approx(stat)
    # chi-square with 1 degree of freedom: P(X > s) = erfc(sqrt(s / 2))
    assert c["mcnemar"]["p_value"] == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-9)
    assert len(c["per_class"]) == 3


def test_edge_cases_and_errors():
    assert mcnemar(0, 0) == {"statistic": 0.0, "p_value": 1.0, "exact": True, "discordant": 0}
    assert mcnemar(12, 12)["p_value"] == pytest.approx(1.0)
    assert mcnemar(13, 12)["exact"] is False                      # 25 discordant: chi-square
    with pytest.raises(CNNLibError):
        compare([0, 1], [0], [0, 1], ["a", "b"])
    with pytest.raises(CNNLibError):
        compare([0, 5], [0, 1], [0, 1], ["a", "b"])
    y = np.array([0, 1, 1, 0])
    probs = np.eye(2, dtype=np.float32)[[0, 1, 0, 0]]
    meta = {"classes": ["a", "b"], "test_predictions": {"targets": y, "probs": probs}}
    other = {"classes": ["a", "b"], "test_predictions": {"targets": y, "probs": np.eye(2, dtype=np.float32)[y]}}
    c = compare_checkpoints(meta, other)
    assert c["table"] == [[3, 0], [1, 0]] and c["only_b"].tolist() == [2]
    with pytest.raises(CNNLibError, match="different images"):
        compare_checkpoints(meta, {**other, "test_predictions": {"targets": 1 - y, "probs": probs}})
    with pytest.raises(CNNLibError, match="stored test predictions"):
        compare_checkpoints(meta, {"classes": ["a", "b"]})


def test_selection_csv():
    t = np.array([0, 1, 2, 1])
    p = np.array([0, 2, 2, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.0, 0.4, 0.6], [0.3, 0.5, 0.2]], np.float32)
    blob = selection_csv([1, 3], t, p, probs, ["cat", "dog", "bird, small"], paths=["a.png", "b.png", "c", "d"],
                         scores=np.array([0.5, 0.123456789, 1, 2]), tag="mislabelled?")
    rows = list(csv.DictReader(io.StringIO(blob.decode("utf-8"))))
    assert list(rows[0]) == ["index", "path", "label", "prediction", "confidence", "score", "tag"]
    assert rows[0] == {"index": "1", "path": "b.png", "label": "dog", "prediction": "bird, small",
                       "confidence": "0.7000", "score": "0.123457", "tag": "mislabelled?"}
    assert rows[1]["index"] == "3" and rows[1]["prediction"] == "dog" and rows[1]["confidence"] == "0.5000"
    plain = list(csv.DictReader(io.StringIO(selection_csv([], t, p, probs, ["a", "b", "c"]).decode())))
    assert plain == []
    bare = list(csv.DictReader(io.StringIO(selection_csv([0], t, p, probs, ["a", "b", "c"]).decode())))
    assert bare[0]["path"] == "" and bare[0]["score"] == "" and bare[0]["tag"] == ""
    with pytest.raises(CNNLibError):
        selection_csv([4], t, p, probs, ["a", "b", "c"])
    with pytest.raises(CNNLibError):
        selection_csv([0], t, p[:3], probs, ["a", "b", "c"])


@pytest.mark.parametrize("with_test", [True, False])
def test_split_paths_follow_load_checkpoint_split(tmp_path, with_test):
    from torchvision.datasets.folder import make_dataset
    folder = write_image_folder(tmp_path / "data", n_train=40, n_test=12, with_test=with_test)
    meta = {"data": {"name": "data", "path": folder, "split_seed": 3}, "config": {"val_size": 8, "split_seed": 3},
            "input_shape": [3, 16, 16], "classes": CLASSES4}
    if with_test:     # torchvision's own ImageFolder order
        want = [p for p, _ in make_dataset(os.path.join(folder, "test"), {c: i for i, c in enumerate(CLASSES4)},
                                           extensions=(".png",))]
        assert split_paths(meta) == want
    for split in ("test", "val", "train"):
        paths = split_paths(meta, split)
        x, y = load_checkpoint_split(meta, split, root=str(tmp_path / "root"))
        assert len(paths) == len(y) > 0
        assert [CLASSES4.index(os.path.basename(os.path.dirname(p))) for p in paths] == y.tolist()
        for i in (0, len(paths) - 1):                            # the pixels are those of that file
            assert np.array_equal(np.asarray(Image.open(paths[i]).convert("RGB")).transpose(2, 0, 1), x[i])
    assert split_paths({**meta, "data": {"name": "cifar10"}, "config": {}}) is None
