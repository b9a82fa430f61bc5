"""Probably mislabelled: test images whose given label the model's probabilities contradict.

Confident learning (Northcutt et al., 2021) through cleanlab, on the probabilities a checkpoint already
stores for its test split, so no dataset and no forward pass is needed:

    issues = label_issues(targets, probs)                  # or label_issues_for(model.meta)
    issues["indices"]    int64 (M,)    the flagged images, worst first (cleanlab.filter.find_label_issues)
    issues["ranking"]    int64 (N,)    every image, lowest label quality first
    issues["quality"]    float32 (N,)  label quality in [0, 1] (cleanlab.rank.get_label_quality_scores)
    issues["suggested"]  int64 (N,)    argmax of probs: the label the model would give
    issues["is_issue"]   bool (N,)     flagged by confident learning
    issues["given_prob"] float32 (N,)  probability of the given label;  issues["suggested_prob"] likewise

`ranked_by` is cleanlab's scoring: "self_confidence" (the probability of the given label) or
"normalized_margin" (that probability minus the largest other one, rescaled to [0, 1]). The flagged set
comes from the confident joint ("prune_by_noise_rate"), so it is the images confident learning thinks are
wrong, not just the lowest-scoring ones. What M is: the test images whose given label this model contradicts.
It is an estimate of how many labels are wrong only for a model that earns it: a weak model's own confident
mistakes count as label errors (simple_cnn at 89% on CIFAR-10 flags 10.8%, while under 1% of CIFAR-10's test
labels are wrong). So issues["estimated_wrong"] is M only when the model's accuracy on these images is at
least TRUSTED_ACCURACY, else None; issues["accuracy"] says which.

For the dashboard: show `indices` (or `ranking[:n]` to page further) with the given and the suggested
class, and offer `cnnlib.diagnose.compare.selection_csv` to take the list away. Held-out probabilities only: on
images the model was trained on, it has memorised the labels and finds almost nothing.
"""
from __future__ import annotations

import numpy as np
from cnnlib.errors import CNNLibError

RANKINGS = ("self_confidence", "normalized_margin")
TRUSTED_ACCURACY = 0.90   # below it, confident learning's count is mostly the model's own errors


def _check(targets, probs) -> tuple[np.ndarray, np.ndarray]:
    """targets int64 (N,), probs float32 (N, K) rows summing to 1 (renormalised: stored probs are float16)."""
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise CNNLibError(f"label issues need N labels and (N, K) probabilities, got {y.shape} and {p.shape}")
    k = p.shape[1]
    if k < 2 or y.min() < 0 or y.max() >= k:
        raise CNNLibError(f"labels must be class indices in 0..{k - 1} of at least 2 classes")
    if not np.isfinite(p).all() or (p < 0).any():
        raise CNNLibError("the probabilities must be finite and non-negative")
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return y, p.astype(np.float32)


def label_issues(targets, probs, top: int | None = None, ranked_by: str = "self_confidence") -> dict:
    """Rank images by how likely their given label is wrong (see the module docstring for the keys).

    targets (N,) class indices; probs (N, K) held-out probabilities; top: keep only the worst `top`
    flagged images in "indices" (None: all of them). Every class should appear among the targets at
    least once (cleanlab estimates per-class noise rates).
    """
    if ranked_by not in RANKINGS:
        raise CNNLibError(f"unknown label-issue ranking {ranked_by!r}; choose from {', '.join(RANKINGS)}")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y, p = _check(targets, probs)
    rows = np.arange(len(y))
    quality = get_label_quality_scores(y, p, method=ranked_by).astype(np.float32)        # (N,) low = suspicious
    # n_jobs=1: cleanlab would otherwise start worker processes (the dashboard calls this from threads)
    flagged = np.asarray(find_label_issues(y, p, return_indices_ranked_by=ranked_by, n_jobs=1),
                         np.int64)                                                         # (M,) worst first
    is_issue = np.zeros(len(y), bool)
    is_issue[flagged] = True
    if top is not None:
        flagged = flagged[:max(int(top), 0)]
    suggested = p.argmax(1).astype(np.int64)
    accuracy = float((suggested == y).mean())
    return {"indices": flagged,
            "ranking": np.argsort(quality, kind="stable").astype(np.int64),
            "quality": quality, "suggested": suggested, "is_issue": is_issue,
            "given_prob": p[rows, y], "suggested_prob": p[rows, suggested],
            "n_issues": int(is_issue.sum()), "ranked_by": ranked_by, "accuracy": accuracy,
            "estimated_wrong": int(is_issue.sum()) if accuracy >= TRUSTED_ACCURACY else None}


def label_issues_for(meta: dict, top: int | None = None, ranked_by: str = "self_confidence") -> dict:
    """label_issues on a checkpoint's stored test predictions (`model.meta`); CNNLibError if it has none."""
    from cnnlib.diagnose.evaluate import stored_predictions
    stored = stored_predictions(meta)
    if stored is None:
        raise CNNLibError("this checkpoint stores no test predictions: evaluate it on its dataset first")
    return label_issues(stored["targets"], stored["probs"], top=top, ranked_by=ranked_by)
