"""cnnlib.diagnose.neighbors: exact cosine neighbours, the on-disk index (memory-mapped, verified, rebuilt when bad)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from modeltools import assert_unchanged, images, make_model, snapshot
from cnnlib.diagnose import neighbors
from cnnlib.errors import CNNLibError


def training_set_with(query, n=40, at=(17, 31)):
    """Random images (n, 3, 16, 16) uint8 with `query` put in twice, at rows `at`."""
    x = images(n, seed=11).clone()
    for i in at:
        x[i] = query
    y = torch.arange(n) % 4
    return x, y


def test_duplicate_comes_first_with_similarity_one(tmp_path):
    model = make_model()
    snap = snapshot(model)
    query = images(1, seed=99)[0]
    x, y = training_set_with(query)
    index = neighbors.build_index(model, x, y)                      # in memory
    assert index.path is None and index.features.shape[0] == 40 and index.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(index.features, axis=1), 1.0, atol=1e-5)
    hits = neighbors.neighbors_of(model, index, query.float() / 255, k=5)
    assert hits["indices"].shape == (5,) and hits["similarities"].dtype == np.float32
    assert sorted(hits["indices"][:2].tolist()) == [17, 31]
    np.testing.assert_allclose(hits["similarities"][:2], 1.0, atol=1e-4)
    assert (np.diff(hits["similarities"]) <= 1e-7).all()            # most similar first
    assert hits["labels"].tolist() == y[hits["indices"]].tolist()
    assert isinstance(hits["pred"], int) and hits["feature"].shape == (index.dim,)
    # exact: the same as sorting every cosine similarity by hand
    f = hits["feature"] / np.linalg.norm(hits["feature"])
    brute = np.argsort(-(index.features @ f), kind="stable")[:5]
    assert set(brute[:2]) == {17, 31} and set(brute) == set(hits["indices"])
    # excluded rows never come back; a batch of queries gives (B, k)
    ex = neighbors.neighbors_of(model, index, query, k=3, exclude=[17, 31])
    assert not {17, 31} & set(ex["indices"].tolist())
    batch = neighbors.neighbors_of(model, index, x[:4], k=3)
    assert batch["indices"].shape == (4, 3) and batch["pred"].shape == (4,)
    assert batch["indices"][:, 0].tolist() == [0, 1, 2, 3]          # each training image finds itself
    assert_unchanged(model, snap)


def test_query_shapes_and_errors():
    feats = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]] + 0.01
    index = neighbors.Index(neighbors._unit(feats), np.arange(4))
    i, _ = index.query(np.array([1.0, 0, 0]), k=2)
    assert i.shape == (2,) and set(i.tolist()) == {0, 3}
    i, _ = index.query(np.eye(3), k=10)                              # k larger than N: all of them
    assert i.shape == (3, 4)
    with pytest.raises(CNNLibError, match="another model"):
        index.query(np.ones(5))
    with pytest.raises(CNNLibError):
        neighbors.build_index(make_model(), images(3), [0, 1])


def test_cached_index_is_memory_mapped_verified_and_rebuilt(tmp_path, monkeypatch):
    model = make_model()
    query = images(1, seed=99)[0]
    x, y = training_set_with(query)
    calls = []
    real = neighbors.penultimate_features
    monkeypatch.setattr(neighbors, "penultimate_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = neighbors.build_index(model, x, y, str(tmp_path), key="spec123-train")
    assert len(calls) == 1 and first.path is not None
    head = json.loads(Path(first.path + ".json").read_text())
    assert head["n"] == 40 and head["d"] == first.dim and head["dtype"] == "float32"
    assert head["model"] == neighbors.model_key(model) and head["data"] == "spec123-train"
    again = neighbors.build_index(model, x, y, str(tmp_path), key="spec123-train")
    assert len(calls) == 1 and isinstance(again.features, np.memmap)           # read, not recomputed
    expected = np.array(first.features)          # a copy: the corruption below writes into the mapped file
    np.testing.assert_array_equal(again.features, expected)

    feat_file = Path(first.path + ".features.npy")
    good = feat_file.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF                                                  # one flipped byte
    feat_file.write_bytes(bytes(bad))
    rebuilt = neighbors.build_index(model, x, y, str(tmp_path), key="spec123-train")
    assert len(calls) == 2
    np.testing.assert_array_equal(rebuilt.features, expected)
    feat_file.write_bytes(good[:len(good) // 3])                                # a short file
    neighbors.build_index(model, x, y, str(tmp_path), key="spec123-train")
    assert len(calls) == 3 and feat_file.read_bytes() == good
    # another model, other labels or other data: another entry / a rebuild, never the stale one
    y2 = y.clone()
    y2[0] = 3
    neighbors.build_index(model, x, y2, str(tmp_path), key="spec123-train")
    assert len(calls) == 4
    neighbors.build_index(make_model(seed=1), x, y, str(tmp_path), key="spec123-train")
    assert len(calls) == 5
    half = neighbors.build_index(model, x, y, str(tmp_path), key="spec123-train", dtype="float16")
    assert half.features.dtype == np.float16 and len(calls) == 6
    hits = neighbors.neighbors_of(model, half, query, k=2)
    assert sorted(hits["indices"].tolist()) == [17, 31]
    np.testing.assert_allclose(hits["similarities"], 1.0, atol=2e-3)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_read_only_cache_keeps_the_index_in_memory(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(neighbors, "write_entry", refuse)        # (tests run as root: chmod would not stop us)
    index = neighbors.build_index(make_model(), images(6), [0, 1, 2, 3, 0, 1], str(tmp_path), key="k")
    assert index.path is None and len(index) == 6 and index.header["n"] == 6


def test_model_key_follows_the_weights():
    a, b = make_model(), make_model()
    assert neighbors.model_key(a) == neighbors.model_key(b)
    with torch.no_grad():
        b.fc1.weight[0, 0] += 1e-3
    assert neighbors.model_key(a) != neighbors.model_key(b)
