"""Robustness: every corruption changes an image and keeps its shape and dtype, severity 5 changes more than
severity 1, the closed-form corruptions match CIFAR-10-C's definitions, the accuracy table has the right shape,
and the result is cached per checkpoint."""
import colorsys
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnlib.diagnose.robustness import CORRUPTIONS, P, corrupt, robustness, robustness_for_checkpoint
from cnnlib.errors import CNNLibError


def images(n=6, size=32, seed=0):
    """Smooth synthetic photographs (gradients, a disc, mild noise): uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        base = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy], -1)
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
        out.append(np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1) * 255)
    return np.asarray(out).astype(np.uint8)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_the_image_and_keeps_shape_and_dtype(name):
    for x in (images(1)[0], images(1, size=28)[0][..., :1], images(1, size=64)[0]):
        for s in (1, 5):
            y = corrupt(x, name, s, np.random.default_rng(1))
            assert y.shape == x.shape and y.dtype == np.uint8
            assert np.abs(y.astype(int) - x).max() > 0, (name, s, x.shape)
        # reproducible: the same generator state gives the same image
        assert np.array_equal(corrupt(x, name, 3, np.random.default_rng(7)), corrupt(x, name, 3, np.random.default_rng(7)))


# CIFAR-10-C's elastic transform shrinks its affine jitter as the severity rises (2.6 px at 1, 1.0 px at 5) while
# adding a smooth elastic field: its mean pixel change is not monotone by definition.
@pytest.mark.parametrize("name", [c for c in CORRUPTIONS if c != "elastic_transform"])
def test_severity_5_changes_more_than_severity_1(name):
    xs = images(8)
    change = {s: np.mean([np.abs(corrupt(x, name, s, np.random.default_rng(i)).astype(float) - x).mean()
                          for i, x in enumerate(xs)]) for s in (1, 5)}
    assert change[5] > change[1], change


def test_closed_form_corruptions_match_the_published_definitions():
    x = images(1)[0]
    f = x / 255.0
    c = P["contrast"][2]
    mean = f.mean((0, 1), keepdims=True)
    assert np.array_equal(corrupt(x, "contrast", 3), (np.clip((f - mean) * c + mean, 0, 1) * 255).astype(np.uint8))
    c = P["brightness"][3]                                                # HSV value + c (skimage in the original)
    want = np.array([colorsys.hsv_to_rgb(*(lambda h, s_, v: (h, s_, min(v + c, 1.0)))(*colorsys.rgb_to_hsv(*p)))
                     for p in f.reshape(-1, 3)]).reshape(f.shape)
    got = corrupt(x, "brightness", 4).astype(int)
    assert np.abs(got - (np.clip(want, 0, 1) * 255).astype(np.uint8)).max() <= 1
    c = P["pixelate"][4]
    im = Image.fromarray(x).resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
    assert np.array_equal(corrupt(x, "pixelate", 5), np.asarray(im))
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=P["jpeg_compression"][0])
    assert np.array_equal(corrupt(x, "jpeg_compression", 1), np.asarray(Image.open(buf)))
    grey = np.full((64, 64, 3), 128, np.uint8)                            # noise statistics on a flat image
    noisy = corrupt(grey, "gaussian_noise", 5, np.random.default_rng(0)) / 255.0
    assert noisy.std() == pytest.approx(P["gaussian_noise"][4], rel=0.1)
    hit = corrupt(grey, "impulse_noise", 5, np.random.default_rng(0))
    assert np.mean((hit == 0) | (hit == 255)) == pytest.approx(P["impulse_noise"][4], rel=0.2)


def test_zoom_is_scipy_zoom_order_1():
    from scipy.ndimage import zoom

    from cnnlib.diagnose.robustness import _zoom
    rng = np.random.default_rng(0)
    for h, f in ((32, 1.01), (32, 1.26), (28, 1.75), (64, 2.25), (96, 1.13)):     # 96: the torch path
        x = rng.random((h, h, 3))
        ch = int(np.ceil(h / f))
        top = (h - ch) // 2
        z = zoom(x[top:top + ch, top:top + ch], (f, f, 1), order=1)
        t = (z.shape[0] - h) // 2
        assert np.allclose(_zoom(x, f), z[t:t + h, t:t + h], atol=1e-12)


def test_bad_arguments_are_one_sentence():
    x = images(1)[0]
    with pytest.raises(CNNLibError, match="unknown corruption"):
        corrupt(x, "rain", 1)
    with pytest.raises(CNNLibError, match="severity"):
        corrupt(x, "fog", 6)
    with pytest.raises(CNNLibError, match="uint8"):
        corrupt(x.astype(np.float32), "fog", 1)


def test_accuracy_table_shape_flips_and_cache(tiny_ckpt, tmp_path):
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import run_split
    from cnnlib.inference import load_model
    model = load_model(tiny_ckpt)
    x, y = load_checkpoint_split(model.meta, "test")
    names = ["gaussian_noise", "contrast", "pixelate"]
    res = robustness(model, x, y, corruptions=names, images=12, seed=3, cache_dir=str(tmp_path))
    assert list(res["accuracy"]) == names and all(len(v) == 5 for v in res["accuracy"].values())
    assert all(0.0 <= a <= 1.0 for v in res["accuracy"].values() for a in v)
    k = len(model.meta["classes"])
    assert all(len(rows) == 5 and all(len(r) == k for r in rows) for rows in res["per_class"].values())
    assert res["n"] == 12 and len(set(res["indices"])) == 12
    clean = run_split(model, x[res["indices"]], y[res["indices"]])["preds"] == y[res["indices"]]
    assert res["clean_accuracy"] == pytest.approx(clean.mean())
    right = dict(zip(res["indices"], clean))
    for f in res["first_flip"]:
        assert right[f["index"]] and f["corruption"] in names and 1 <= f["severity"] <= 5
    assert [f["severity"] for f in res["first_flip"]] == sorted(f["severity"] for f in res["first_flip"])
    # contrast at severity 5 (15 % of the contrast) must hurt a colour-and-brightness classifier
    assert res["accuracy"]["contrast"][4] < res["clean_accuracy"] or res["clean_accuracy"] == 0

    again = robustness(model, x, y, corruptions=names, images=12, seed=3, cache_dir=str(tmp_path))
    assert again["cached"] and again["accuracy"] == res["accuracy"] and again["first_flip"] == res["first_flip"]
    other = robustness(model, x, y, corruptions=names, images=12, seed=4, cache_dir=str(tmp_path))
    assert not other["cached"]
    assert len(list(tmp_path.glob("robustness-*.json"))) == 2


def test_checkpoint_and_cli(tiny_ckpt, capsys):
    from cnnlib.__main__ import main
    assert main(["robustness", tiny_ckpt, "--images", "6", "--corruptions", "fog", "brightness", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["accuracy"]) == ["fog", "brightness"] and res["n"] == 6 and len(res["classes"]) == 4
    assert main(["robustness", tiny_ckpt, "--images", "6", "--corruptions", "fog"]) == 0
    assert "fog" in capsys.readouterr().out
    assert main(["robustness", tiny_ckpt, "--corruptions", "rain"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rain" in err and "Traceback" not in err
    from cnnlib.inference import load_model
    assert robustness_for_checkpoint(load_model(tiny_ckpt), images=6, corruptions=["fog", "brightness"])["cached"]
