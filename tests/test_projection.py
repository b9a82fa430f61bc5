"""cnnlib.diagnose.projection: PCA / t-SNE / UMAP maps that separate clusters, cached on disk and verified."""
import numpy as np
import pytest
from cnnlib.diagnose import projection
from cnnlib.errors import CNNLibError
from cnnlib.inference import load_model


def clusters(n_per=60, k=3, d=64, seed=0):
    """k well separated Gaussian blobs in d dimensions: features (k * n_per, d), labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32), y


def knn_accuracy(xy, y, k=5):
    """Leave-one-out k-nearest-neighbour accuracy in the 2-D map: how well it separates the classes."""
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, 1)[:, :k]
    votes = np.array([np.bincount(y[row], minlength=y.max() + 1).argmax() for row in nn])
    return (votes == y).mean()


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_every_method_separates_clusters(method):
    x, y = clusters()
    xy = projection.project(x, method, seed=0)
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert knn_accuracy(xy, y) >= 0.95
    if method != "pca":       # seeded: repeatable
        np.testing.assert_allclose(projection.project(x, method, seed=0), xy, atol=1e-4)


def test_options_and_errors():
    x, _ = clusters(n_per=10)
    with pytest.raises(CNNLibError, match="unknown projection method"):
        projection.project(x, "isomap")
    with pytest.raises(CNNLibError, match="unknown tsne option"):
        projection.project(x, "tsne", perplexty=5)
    with pytest.raises(CNNLibError):
        projection.project(x[:2], "pca")
    with pytest.raises(CNNLibError):
        projection.project(np.full((5, 3), np.nan), "pca")
    idx = projection.subsample(100, 10, seed=1)
    assert len(idx) == 10 and (np.diff(idx) > 0).all() and np.array_equal(idx, projection.subsample(100, 10, seed=1))
    assert np.array_equal(projection.subsample(5, None), np.arange(5))


def test_embedding_cache_hits_and_rebuilds(tmp_path, monkeypatch):
    x, _ = clusters(n_per=10)
    first = projection.embedding(x, "pca", str(tmp_path), key="model-data")
    assert not first["cached"]
    calls = []
    real = projection.project
    monkeypatch.setattr(projection, "project", lambda *a, **k: calls.append(1) or real(*a, **k))
    hit = projection.embedding(x, "pca", str(tmp_path), key="model-data")
    assert hit["cached"] and hit["seconds"] == 0.0 and not calls
    np.testing.assert_array_equal(hit["xy"], first["xy"])
    projection.embedding(x, "pca", str(tmp_path), key="other-data")                     # other features: a miss
    projection.embedding(x, "pca", str(tmp_path), key="model-data", seed=1)             # other seed: a miss
    projection.embedding(x, "tsne", str(tmp_path), key="model-data", max_iter=250)
    projection.embedding(x, "tsne", str(tmp_path), key="model-data", max_iter=300)      # other options: a miss
    assert len(calls) == 4
    path = tmp_path / (projection._entry("model-data", "pca", len(x), 0, {})[1] + ".xy.npy")
    np.testing.assert_array_equal(np.load(path), first["xy"])
    for damage in (lambda b: b[:-7], lambda b: b[:-4] + b"\0\0\0\0"):               # truncated, then altered
        path.write_bytes(damage(path.read_bytes()))
        again = projection.embedding(x, "pca", str(tmp_path), key="model-data")
        assert not again["cached"]
        np.testing.assert_allclose(again["xy"], first["xy"], atol=1e-5)
    assert len(calls) == 6


def test_embedding_for_checkpoint(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    e = projection.embedding_for_checkpoint(model, "pca", root=str(tmp_path))
    n = e["n"]
    assert e["xy"].shape == (n, 2) and e["labels"].shape == e["preds"].shape == e["correct"].shape == (n,)
    assert not e["cached"] and np.array_equal(e["indices"], np.arange(n))
    sub = projection.embedding_for_checkpoint(model, "tsne", n=20, root=str(tmp_path), max_iter=250)
    assert sub["xy"].shape == (20, 2) and len(sub["indices"]) == 20
    again = projection.embedding_for_checkpoint(model, "tsne", n=20, root=str(tmp_path), max_iter=250)
    assert again["cached"] and again["seconds"] == 0.0
    np.testing.assert_array_equal(again["xy"], sub["xy"])
    np.testing.assert_array_equal(again["preds"], sub["preds"])
