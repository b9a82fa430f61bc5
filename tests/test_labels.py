"""cnnlib.diagnose.labels: confident learning finds labels flipped on purpose."""
import numpy as np
import pytest
from cnnlib.errors import CNNLibError
from cnnlib.diagnose.labels import label_issues, label_issues_for


def noisy_set(n=1000, k=5, n_flip=50, seed=0):
    """Probabilities of an informative but imperfect model (about 95% right on the true labels), and
    the labels with `n_flip` of them moved to another class on purpose."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    logits = 3.0 * np.eye(k)[y_true] + rng.normal(0, 1.0, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flip = rng.choice(n, n_flip, replace=False)
    y = y_true.copy()
    y[flip] = (y[flip] + rng.integers(1, k, n_flip)) % k
    return y, probs.astype(np.float32), flip, y_true


@pytest.mark.parametrize("ranked_by", ["self_confidence", "normalized_margin"])
def test_flipped_labels_are_found(ranked_by):
    y, probs, flip, y_true = noisy_set()
    r = label_issues(y, probs, ranked_by=ranked_by)
    n = len(y)
    assert r["quality"].shape == (n,) and r["quality"].dtype == np.float32
    assert r["ranking"].shape == (n,) and sorted(r["ranking"]) == list(range(n))
    assert r["suggested"].dtype == np.int64 and np.array_equal(r["suggested"], probs.argmax(1))
    assert r["is_issue"].dtype == bool and r["n_issues"] == r["is_issue"].sum() == len(r["indices"])
    # recall of the 50 flipped labels among the 50 lowest-quality images: 0.90 on this seed; we ask for 0.8
    recall = np.isin(flip, r["ranking"][:len(flip)]).mean()
    assert recall >= 0.8, recall
    # the flagged set (confident learning's own count) is about the number flipped and mostly right
    assert 0.5 * len(flip) <= r["n_issues"] <= 2 * len(flip)
    assert np.isin(r["indices"], flip).mean() >= 0.7
    # worst first: qualities of the flagged images do not decrease
    assert (np.diff(r["quality"][r["indices"]]) >= -1e-6).all()
    # the suggestion is the true label for most flipped images
    assert (r["suggested"][flip] == y_true[flip]).mean() >= 0.8
    top = label_issues(y, probs, top=10, ranked_by=ranked_by)
    assert np.array_equal(top["indices"], r["indices"][:10])


def test_errors_and_stored_predictions():
    y, probs, _, _ = noisy_set(n=200, n_flip=10)
    with pytest.raises(CNNLibError, match="ranking"):
        label_issues(y, probs, ranked_by="loss")
    with pytest.raises(CNNLibError):
        label_issues(y[:-1], probs)
    with pytest.raises(CNNLibError):
        label_issues(y + 5, probs)
    with pytest.raises(CNNLibError, match="no test predictions"):
        label_issues_for({"classes": list("abcde")})
    meta = {"classes": list("abcde"), "test_predictions": {"targets": y, "probs": probs.astype(np.float16)}}
    r = label_issues_for(meta, top=5)
    assert len(r["indices"]) <= 5 and r["quality"].shape == (200,)
