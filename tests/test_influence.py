"""TracIn influence on the final layer: a planted duplicate of a training image with a wrong label is among the
top opponents or proponents of that image; the closed form equals Captum's TracInCPFast (a small random case,
and the tiny checkpoint), in memory-bounded chunks and from the cache of training-side gradients."""
import numpy as np
import pytest
import torch
from torch import nn

from cnnlib.errors import CNNLibError
from cnnlib.explain.influence import influence_for_checkpoint, proponents_opponents, train_features


@pytest.fixture(scope="module")
def setup(tiny_ckpt):
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.inference import load_model
    model = load_model(tiny_ckpt)
    x, y = load_checkpoint_split(model.meta, "train")
    return model, np.asarray(x), np.asarray(y)


def test_planted_mislabelled_duplicate_is_found(setup):
    model, x, y = setup
    k = len(model.meta["classes"])
    found = 0
    picks = [int(np.flatnonzero(y == c)[0]) for c in range(k)]
    for i in picks:                                        # one training image of each class
        wrong = (y[i] + 1) % k
        xt = np.concatenate([x, x[i:i + 1]])              # the duplicate, with a wrong label, last
        yt = np.concatenate([y, [wrong]])
        res = proponents_opponents(model, x[i], xt, yt, k=3)
        planted = len(yt) - 1
        top = set(res["opponents"]["indices"].tolist()) | set(res["proponents"]["indices"].tolist())
        found += planted in top
        assert len(res["opponents"]["indices"]) == 3 and res["opponents"]["scores"][0] <= res["proponents"]["scores"][0]
    assert found == len(picks), f"the planted duplicate was in the top 3 for {found} of {len(picks)} images"


def test_scores_match_the_final_layer_closed_form(setup):
    model, x, y = setup
    f = train_features(model, x)
    res = proponents_opponents(model, x[5], train_y=y, features=f, k=len(y))
    from cnnlib.models.anatomy import penultimate_features, penultimate_layer
    from cnnlib.modelops import get_layer
    fc = get_layer(model, penultimate_layer(model))
    ft = penultimate_features(model, torch.from_numpy(np.array(x[5:6])))["features"][0]

    def grad(feat, label):                                 # d(cross-entropy)/d(logits) = softmax - one-hot
        z = torch.from_numpy(feat) @ fc.weight.detach().T + fc.bias.detach()
        return (torch.softmax(z, -1) - torch.nn.functional.one_hot(torch.tensor(label), z.shape[-1])).numpy()

    gt = grad(ft, res["label"])
    want = np.array([(grad(f[j], int(y[j])) @ gt) * (f[j] @ ft) for j in range(len(y))])
    idx, scores = res["proponents"]["indices"], res["proponents"]["scores"]
    assert np.allclose(scores, want[idx], rtol=1e-3, atol=1e-4)
    assert idx[0] == int(np.argmax(want))
    ref = proponents_opponents(model, x[5], train_y=y, features=f, k=len(y), engine="captum")
    got = np.empty(len(y))
    got[ref["proponents"]["indices"]] = ref["proponents"]["scores"]
    assert np.allclose(scores, got[idx], rtol=1e-5, atol=1e-6 * np.abs(got).max())


def test_bad_inputs_and_checkpoint_cache(setup, tiny_ckpt):
    model, x, y = setup
    with pytest.raises(CNNLibError, match="one image"):
        proponents_opponents(model, x[:2], x, y)
    with pytest.raises(CNNLibError, match="another model"):
        proponents_opponents(model, x[0], train_y=y, features=np.zeros((len(y), 3), np.float32))
    a = influence_for_checkpoint(model, x[0], k=4)
    b = influence_for_checkpoint(model, x[0], k=4)        # features read back from the cache
    assert np.array_equal(a["proponents"]["indices"], b["proponents"]["indices"])
    assert np.allclose(a["opponents"]["scores"], b["opponents"]["scores"])


def test_scaled_logits_are_followed_and_a_head_that_is_not_linear_is_refused(setup):
    """resnet9 multiplies its last layer's output by 1/8: the loss gradient must include it."""
    from torch import nn

    from cnnlib.models.registry import get_model
    torch.manual_seed(0)
    model = get_model("resnet9", num_classes=4, width=4, image_size=16).eval()
    model.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_shape": [3, 16, 16],
                  "classes": list("abcd")}
    with torch.no_grad():
        model.fc.weight.mul_(40.0)                             # logits far from uniform: the scale matters
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 3, 16, 16)).astype(np.uint8)
    y = rng.integers(0, 4, 40)
    f = train_features(model, x)
    res = proponents_opponents(model, x[3], train_y=y, features=f, k=40)
    from cnnlib.models.anatomy import penultimate_features
    ft = penultimate_features(model, torch.from_numpy(x[3:4]))["features"][0]
    w = model.fc.weight.detach().numpy() * model.scale

    def grad(feat, label):
        return torch.softmax(torch.from_numpy(feat @ w.T), -1).numpy() - np.eye(4)[label]

    want = np.array([(grad(f[j], int(y[j])) @ grad(ft, res["label"])) * (f[j] @ ft) for j in range(len(y))])
    # the softmax of the scaled logits; Captum takes the gradient w.r.t. the logits (the weights' differs by 1/8^2)
    got = np.empty(len(y))
    got[res["proponents"]["indices"]] = res["proponents"]["scores"]
    assert np.allclose(got, want, rtol=1e-3, atol=1e-6)
    unscaled = np.array([((torch.softmax(torch.from_numpy(f[j] @ w.T / model.scale), -1).numpy() - np.eye(4)[y[j]])
                          @ grad(ft, res["label"])) * (f[j] @ ft) for j in range(len(y))])
    assert not np.allclose(got, unscaled, rtol=1e-2)                # forgetting the 1/8 would give other scores
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, 4), nn.Tanh())     # a squashing head
    with torch.no_grad():
        model.fc[0].weight.mul_(50.0)                                          # ... well into saturation
    with pytest.raises(CNNLibError, match="Linear"):
        proponents_opponents(model, x[3], x, y)


class _Scaled(nn.Module):
    """A tiny network whose logits are its last Linear layer's output times 0.25 (as resnet9's 1/8)."""

    def __init__(self, d=6, k=5):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, d), nn.Tanh())
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        return self.fc(self.body(x)) * 0.25


def _small_random_case(n=60, seed=0):
    torch.manual_seed(seed)
    model = _Scaled().eval()
    with torch.no_grad():
        model.fc.weight.mul_(4.0)                                  # confident logits: softmax far from uniform
        model.fc.bias.copy_(torch.linspace(-3, 3, 5))              # a bias that matters
    model.meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_shape": [3, 4, 4],
                  "classes": list("abcde")}
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 6)).astype(np.float32)                 # any training features (N, D)
    y = rng.integers(0, 5, n)
    x = rng.integers(0, 256, (3, 4, 4)).astype(np.uint8)           # the query image
    return model, x, f, y


def _all_scores(res, n):
    out = np.full(n, np.nan)
    out[res["proponents"]["indices"]] = res["proponents"]["scores"]
    return out


def test_closed_form_equals_captum_tracincpfast_on_a_small_random_case():
    from captum.influence import TracInCPFast
    from torch.utils.data import DataLoader, TensorDataset
    model, x, f, y = _small_random_case()
    for label in (None, 3):
        res = proponents_opponents(model, x, train_y=y, features=f, k=len(y), label=label)
        got = _all_scores(res, len(y))
        assert not np.isnan(got).any()
        # Captum itself, built here: the network's head on the features, the layer's gradients
        head = nn.Sequential(model.fc)
        head.forward = lambda feats: model.fc(feats) * 0.25
        loader = DataLoader(TensorDataset(torch.from_numpy(f), torch.from_numpy(y)), batch_size=16)
        tracin = TracInCPFast(head, model.fc, loader, checkpoints=[0], checkpoints_load_func=lambda m, c: 1.0,
                              loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=16)
        with torch.no_grad():
            ft = model.body(((torch.from_numpy(x).float() / 255 - 0.5) / 0.25)[None])
        want = tracin.influence((ft, torch.tensor([res["label"]])), k=None)[0].detach().numpy()
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
        assert np.ptp(want) > 1e-3                                  # not a degenerate all-equal case
    res_c = proponents_opponents(model, x, train_y=y, features=f, k=len(y), label=3, engine="captum", batch_size=7)
    assert np.allclose(_all_scores(res_c, len(y)), got, rtol=1e-5, atol=1e-6 * np.abs(got).max())
    with pytest.raises(CNNLibError, match="engine"):
        proponents_opponents(model, x, train_y=y, features=f, engine="fast")


def test_chunks_and_cached_gradients_agree_and_follow_changes(monkeypatch):
    import gc

    from cnnlib.explain import influence
    from modeltools import assert_unchanged, snapshot
    model, x, f, y = _small_random_case(n=50, seed=1)
    snap = snapshot(model)
    cached = _all_scores(proponents_opponents(model, x, train_y=y, features=f, k=len(y)), len(y))
    assert id(f) in influence._GRADS                                # the training-side gradients are kept
    assert_unchanged(model, snap)                                   # no hooks or mode change on the shared model
    again = _all_scores(proponents_opponents(model, x, train_y=y, features=f, k=len(y)), len(y))
    assert np.array_equal(cached, again)
    monkeypatch.setattr(influence, "_CACHE_BYTES", 0)               # too big to keep: chunks of 7 rows
    chunked = _all_scores(proponents_opponents(model, x, train_y=y, features=f.copy(), k=len(y), batch_size=7),
                          len(y))
    assert np.allclose(chunked, cached, rtol=1e-5, atol=1e-7)
    monkeypatch.undo()
    y2 = (y + 1) % 5                                                # other labels, same features array
    fresh = _all_scores(proponents_opponents(model, x, train_y=y2, features=f.copy(), k=len(y)), len(y))
    assert np.array_equal(_all_scores(proponents_opponents(model, x, train_y=y2, features=f, k=len(y)), len(y)),
                          fresh) and not np.allclose(fresh, cached)
    with torch.no_grad():
        model.fc.weight.mul_(0.5)                                   # new weights, same features array
    fresh = _all_scores(proponents_opponents(model, x, train_y=y, features=f.copy(), k=len(y)), len(y))
    assert np.array_equal(_all_scores(proponents_opponents(model, x, train_y=y, features=f, k=len(y)), len(y)),
                          fresh) and not np.allclose(fresh, cached)
    key = id(f)
    del f
    gc.collect()
    assert key not in influence._GRADS                              # dropped with its features array
    with pytest.raises(CNNLibError, match="class indices"):
        proponents_opponents(model, x, train_y=np.full(50, 7), features=np.ones((50, 6), np.float32))
