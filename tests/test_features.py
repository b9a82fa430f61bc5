"""cnnlib.diagnose.features: one pass per checkpoint and split, on disk, shared by every feature-space view."""
import numpy as np
import pytest
import torch
from modeltools import images, make_model

from cnnlib.diagnose import features, neighbors, projection
from cnnlib.models import anatomy


@pytest.fixture
def passes(monkeypatch):
    """The number of images each real pass through the network read (anatomy.penultimate_features calls)."""
    seen = []
    real = anatomy.penultimate_features

    def counting(model, x, *a, **k):
        seen.append(len(x))
        return real(model, x, *a, **k)
    monkeypatch.setattr(anatomy, "penultimate_features", counting)
    monkeypatch.setattr(neighbors, "penultimate_features", counting)
    monkeypatch.setattr(projection, "penultimate_features", counting)
    return seen


def test_one_pass_serves_the_index_and_the_map(tmp_path, passes):
    model = make_model()
    x, y = images(50, seed=3), torch.arange(50) % 4
    progress = []
    store = features.split_features(model, x, y, str(tmp_path), "spec-test", progress=lambda d, t: progress.append((d, t)))
    assert passes == [50] and not store["cached"] and store["features"].dtype == np.float32
    assert progress[0] == (0, 50) and progress[-1] == (50, 50)           # the caller's bar moves to the end
    ref = anatomy.penultimate_features(model, x)                          # the store holds exactly the features
    np.testing.assert_allclose(store["features"], ref["features"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(store["preds"], ref["preds"])
    passes.clear()
    again = features.split_features(model, x, y, str(tmp_path), "spec-test")
    assert again["cached"] and passes == [] and isinstance(again["features"], np.memmap)
    # the neighbour index built from the store: no pass of its own, the same rows as a pass would give
    index = neighbors.index_from_store(model, x, y, str(tmp_path), "spec-test")
    assert passes == [] and index.path is not None
    np.testing.assert_allclose(index.features, neighbors._unit(ref["features"]), rtol=1e-5, atol=1e-6)
    # a 2-D map of a sample: rows of the store, projected; no pass either
    xy = projection.project(np.asarray(store["features"])[[0, 5, 9, 20]], "pca")
    assert xy.shape == (4, 2) and passes == []


def test_a_stale_or_damaged_store_is_computed_again(tmp_path, passes):
    from pathlib import Path
    model = make_model()
    x, y = images(20, seed=4), torch.arange(20) % 4
    features.split_features(model, x, y, str(tmp_path), "k")
    f = next(Path(tmp_path).glob("features-*.features.npy"))
    good = f.read_bytes()
    f.write_bytes(good[:len(good) // 2])                                 # a short file: never used
    out = features.split_features(model, x, y, str(tmp_path), "k")
    assert len(passes) == 2 and not out["cached"] and f.read_bytes() == good
    y2 = y.clone()
    y2[0] = 3                                                            # other labels: another pass
    features.split_features(model, x, y2, str(tmp_path), "k")
    features.split_features(make_model(seed=1), x, y, str(tmp_path), "k")   # other weights: another pass
    assert len(passes) == 4


def test_read_only_cache_keeps_the_features_in_memory(tmp_path, monkeypatch, passes):
    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(features, "write_entry", refuse)
    out = features.split_features(make_model(), images(6), [0, 1, 2, 3, 0, 1], str(tmp_path), "k")
    assert out["features"].shape[0] == 6 and not out["cached"] and not isinstance(out["features"], np.memmap)


def test_a_checkpoint_split_goes_through_the_network_once(tiny_ckpt, tmp_path, passes):
    """Nearest training images, similar test images, the 2-D map and triage of a checkpoint: one pass per split."""
    from cnnlib.diagnose import triage
    from cnnlib.inference import load_model
    model = load_model(tiny_ckpt)
    root = str(tmp_path / "root")
    neighbors.index_for_checkpoint(model, "train", root=root)
    neighbors.index_for_checkpoint(model, "test", root=root)
    n_train, n_test = passes
    projection.embedding_for_checkpoint(model, "pca", n=10, root=root)      # a sample of the test split
    triage.triage_for_checkpoint(model, root=root)
    assert passes == [n_train, n_test]
    fs = features.features_for_checkpoint(model, "train", root=root)
    assert fs["cached"] and len(fs["labels"]) == n_train
