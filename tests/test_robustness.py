"""Robustness: every corruption changes an image and keeps its shape and dtype, severity 5 changes more than
severity 1, the closed-form corruptions match CIFAR-10-C's definitions, the batched corruptions give the old
per-image implementation's images (kept below, verbatim, as the reference), the sweep's accuracies are those of
the per-image loop, the accuracy table has the right shape, and the result is cached per checkpoint."""
import colorsys
import functools
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnlib.diagnose import corruptions
from cnnlib.diagnose.corruptions import P, SEVERITIES, corrupt_batch
from cnnlib.diagnose.robustness import CORRUPTIONS, corrupt, robustness, robustness_for_checkpoint
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

    rng = np.random.default_rng(0)
    for h, f in ((32, 1.01), (32, 1.26), (28, 1.75), (64, 2.25), (96, 1.13)):
        x = rng.random((2, h, h, 3))
        ch = int(np.ceil(h / f))
        top = (h - ch) // 2
        z = zoom(x[:, top:top + ch, top:top + ch], (1, f, f, 1), order=1)
        t = (z.shape[1] - h) // 2
        assert np.allclose(corruptions._zoom(x, f), z[:, t:t + h, t:t + h], atol=1e-12)
        assert np.allclose(corruptions._zoom(x[..., 0], f), z[:, t:t + h, t:t + h, 0], atol=1e-12)   # (B, H, W)


# The batched corruptions draw the per-image random numbers in the per-image order, so they are the old images
# exactly, with one exception: zoom blur (and snow's zoomed flake layer) interpolate with two taps per output
# instead of a dense (out, in) matrix product through BLAS, whose fused multiply-adds round differently in the
# last bit; after averaging 6-26 zooms and truncating to uint8, a value can land one level lower or higher.
TOLERANCE = {"zoom_blur": (1, 1e-3), "snow": (1, 1e-3)}   # corruption: (max uint8 levels apart, fraction of values)
# (snow zooms its flake layer: exact on these images and on 100 CIFAR-10 test images, but the reference's BLAS
# kernel depends on the CPU)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_batched_corruptions_equal_the_old_per_image_ones(name, monkeypatch):
    batches = [images(7, seed=1), images(3, size=28, seed=2)[..., :1], images(1, size=72, seed=3)]
    for xs in batches:
        for s in SEVERITIES:
            old_rng, new_rng = np.random.default_rng([5, s]), np.random.default_rng([5, s])
            want = np.stack([old_corrupt(x, name, s, old_rng) for x in xs])
            if len(xs) == 7:
                monkeypatch.setattr(corruptions, "CHUNK_PIXELS", 3 * 32 * 32)      # chunks of 3, 3 and 1 images
            got = corrupt_batch(xs, name, s, new_rng)
            monkeypatch.undo()
            assert got.shape == want.shape and got.dtype == np.uint8
            diff = np.abs(got.astype(int) - want)
            levels, fraction = TOLERANCE.get(name, (0, 0.0))
            assert diff.max() <= levels and np.mean(diff > 0) <= fraction, (name, s, xs.shape, diff.max())
            assert old_rng.random() == new_rng.random(), "the generator must be left where the per-image loop left it"
    assert np.array_equal(corrupt(batches[0][2], name, 4, np.random.default_rng(3)),
                          corrupt_batch(batches[0][2:3], name, 4, np.random.default_rng(3))[0])


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


def test_the_sweep_is_the_per_image_loop(tiny_ckpt, monkeypatch, tmp_path):
    """Batches of 5 images (so a generator spans batches), corrupted ahead in the worker thread: the accuracies
    and flips are those of the old per-image loop with the same generators."""
    from cnnlib import modelops
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose.evaluate import run_split
    from cnnlib.inference import load_model
    model = load_model(tiny_ckpt)
    x, y = load_checkpoint_split(model.meta, "test")
    names = ["impulse_noise", "glass_blur", "fog"]
    monkeypatch.setattr(modelops, "batch_size_for", lambda shape, largest=256: 5)
    res = robustness(model, x, y, corruptions=names, severities=[2, 5], images=13, seed=1)
    idx = np.asarray(res["indices"])
    xs, ys = x[idx].transpose(0, 2, 3, 1), y[idx]
    clean = run_split(model, x[idx], ys)["preds"] == ys
    first = {}
    for ci, name in enumerate(names):
        for s in (2, 5):
            rng = np.random.default_rng([1, ci, s])
            xc = np.stack([old_corrupt(im, name, s, rng) for im in xs]).transpose(0, 3, 1, 2)
            right = run_split(model, xc, ys)["preds"] == ys
            assert res["accuracy"][name][(2, 5).index(s)] == pytest.approx(right.mean()), (name, s)
            for j in np.flatnonzero(clean & ~right):
                first.setdefault(int(idx[j]), (s, ci))
                first[int(idx[j])] = min(first[int(idx[j])], (s, ci))
    want = sorted((s, i, names[ci]) for i, (s, ci) in first.items())
    assert [(f["severity"], f["index"], f["corruption"]) for f in res["first_flip"]] == want
    monkeypatch.undo()

    bf = robustness(model, x, y, corruptions=["fog"], images=13, seed=1, precision="bf16", cache_dir=str(tmp_path))
    assert bf["settings"]["precision"] == "bf16" and all(0 <= a <= 1 for a in bf["accuracy"]["fog"])
    fp = robustness(model, x, y, corruptions=["fog"], images=13, seed=1, cache_dir=str(tmp_path))
    assert "precision" not in fp["settings"] and not fp["cached"]          # its own cache entry, the old key
    assert len(list(tmp_path.glob("robustness-*.json"))) == 2
    with pytest.raises(CNNLibError, match="precision"):
        robustness(model, x, y, corruptions=["fog"], images=3, precision="fp16")


def test_onnx_runtime_engine_gives_the_torch_sweep(tiny_cifar_ckpt, monkeypatch):
    pytest.importorskip("onnxruntime")
    from cnnlib.data.spec import load_checkpoint_split
    from cnnlib.diagnose import robustness as rob
    from cnnlib.inference import load_model
    model = load_model(tiny_cifar_ckpt)
    x, y = load_checkpoint_split(model.meta, "test")
    kw = dict(corruptions=["gaussian_noise", "zoom_blur"], images=40, seed=2)
    torch_res = robustness(model, x, y, **kw)
    assert torch_res["engine"] == "torch"                                 # 400 corrupted images: below the bar
    monkeypatch.setattr(rob, "ORT_MIN_IMAGES", 0)
    ort_res = robustness(model, x, y, **kw)
    assert ort_res["engine"] == "onnxruntime"
    for key in ("clean_accuracy", "accuracy", "per_class", "first_flip"):
        assert ort_res[key] == torch_res[key], key
    assert robustness(model, x, y, precision="bf16", **kw)["engine"] == "torch"     # bf16: PyTorch's autocast
    wrong = rob._predictor(model)(np.asarray(x[:8])) + 1                  # predictions that are not PyTorch's
    assert rob._onnx_predictor(model, np.asarray(x[:8]), wrong) is None


def test_checkpoint_and_cli(tiny_ckpt, capsys):
    from cnnlib.__main__ import main
    assert main(["robustness", tiny_ckpt, "--images", "6", "--corruptions", "fog", "brightness", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["accuracy"]) == ["fog", "brightness"] and res["n"] == 6 and len(res["classes"]) == 4
    assert main(["robustness", tiny_ckpt, "--images", "6", "--corruptions", "fog"]) == 0
    assert "fog" in capsys.readouterr().out
    assert main(["robustness", tiny_ckpt, "--images", "5", "--corruptions", "snow", "--precision", "bf16",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 5 and res["settings"]["precision"] == "bf16" and list(res["accuracy"]) == ["snow"]
    assert main(["robustness", tiny_ckpt, "--corruptions", "rain"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rain" in err and "Traceback" not in err
    from cnnlib.inference import load_model
    assert robustness_for_checkpoint(load_model(tiny_ckpt), images=6, corruptions=["fog", "brightness"])["cached"]


# ----------------------------------------------------------------------------- the reference
# cnnlib.diagnose.robustness's per-image corruptions as they were before batching (commit b88397d), verbatim but
# for the names (_old_*, old_corrupt): corrupt_batch must give these images, image after image.

def _old_blur(x, sigma, mode="nearest", truncate=4.0):              # skimage.filters.gaussian, channels apart
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(x, sigma=(sigma, sigma, 0)[:x.ndim], mode=mode, truncate=truncate)


def _old_disk(radius: float, alias_blur: float) -> np.ndarray:
    import cv2
    r = max(8, int(np.ceil(radius)))
    g = np.arange(-r, r + 1)
    xx, yy = np.meshgrid(g, g)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)


def _old_motion(x, radius: float, sigma: float, angle: float) -> np.ndarray:
    """One-sided Gaussian motion blur along `angle` degrees (ImageMagick's MotionBlurImage)."""
    width = int(2 * radius + 1)
    w = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    dy, dx = np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
    h, wd = x.shape[:2]
    pad = width + 1
    xp = np.pad(x, ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    out = np.zeros_like(x)
    for i, wi in enumerate(w):
        oy, ox = int(np.round(i * dy)), int(np.round(i * dx))
        out += wi * xp[pad - oy:pad - oy + h, pad - ox:pad - ox + wd]
    return out


@functools.lru_cache(maxsize=512)
def _old_linear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation, end points aligned: scipy.ndimage.zoom(order=1)'s sampling."""
    pos, m = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1)), np.zeros((n_out, n_in))
    lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
    hi, frac = np.minimum(lo + 1, n_in - 1), pos - lo
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def _old_zoom(x, factor: float) -> np.ndarray:
    """Centre crop of 1/factor of the image zoomed back to its size: the definition's scipy.ndimage.zoom(order=1)."""
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out, crop = int(round(ch * factor)), x[top:top + ch, top:top + ch]
    if h > 64:                            # dense matrices cost O(h^3): torch's bilinear, corners aligned, is the same
        import torch
        t = torch.from_numpy(np.ascontiguousarray(crop.reshape(ch, ch, -1).transpose(2, 0, 1)))[None]
        z = torch.nn.functional.interpolate(t, size=(out, out), mode="bilinear", align_corners=True)[0]
        z = z.numpy().transpose(1, 2, 0).reshape((out, out) + crop.shape[2:])
    else:
        m = _old_linear(ch, out)
        z = np.tensordot(m, crop, axes=(1, 0))                                 # rows: (out, ch, ...)
        z = np.moveaxis(np.tensordot(m, z, axes=(1, 1)), 0, 1)                 # columns: (out, out, ...)
    t = (out - h) // 2
    return z[t:t + h, t:t + h]


def _old_plasma(size: int, decay: float, rng) -> np.ndarray:
    """Diamond-square fractal (size x size, a power of two) in [0, 1]."""
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[0::step, 0::step]
        sq = corners + np.roll(corners, -1, 0)
        sq = sq + np.roll(sq, -1, 1)
        m[half::step, half::step] = sq / 4 + wibble * rng.uniform(-wibble, wibble, sq.shape)
        dr, ul = m[half::step, half::step], m[0::step, 0::step]
        m[0::step, half::step] = (dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)) / 4 \
            + wibble * rng.uniform(-wibble, wibble, ul.shape)
        m[half::step, 0::step] = (dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)) / 4 \
            + wibble * rng.uniform(-wibble, wibble, ul.shape)
        step, wibble = half, wibble / decay
    m -= m.min()
    return m / max(m.max(), 1e-12)


def _old_hsv_value_add(x, c: float) -> np.ndarray:
    """Add c to HSV value (hue and saturation kept): RGB scales with V; black becomes grey V'."""
    v = x.max(2, keepdims=True)
    v2 = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * v2 / np.maximum(v, 1e-12), v2)


def _old_frost_layer(h: int, w: int, s: float, rng) -> np.ndarray:
    try:
        import importlib.resources
        from PIL import Image
        name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][int(rng.integers(5))]
        ref = importlib.resources.files("imagecorruptions") / "frost" / name
        with ref.open("rb") as f:
            im = Image.open(f).convert("RGB")
        im = im.resize((max(int(im.width * 0.2 * s), w + 1), max(int(im.height * 0.2 * s), h + 1)))
        a = np.asarray(im, np.float64) / 255
        y0, x0 = int(rng.integers(0, a.shape[0] - h)), int(rng.integers(0, a.shape[1] - w))
        return a[y0:y0 + h, x0:x0 + w]
    except (ImportError, ModuleNotFoundError, OSError, TypeError, ValueError):
        size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
        base = _old_plasma(size, 2.0, rng)[:h, :w]
        streaks = _old_motion(rng.random((h, w)) ** 8, 3 * s, 1.5 * s, rng.uniform(0, 180))
        return np.clip(0.55 * base + 2.5 * streaks, 0, 1)[..., None] * np.array([0.85, 0.93, 1.0])


def _old_apply(name: str, x: np.ndarray, c, rng, s: float) -> np.ndarray:
    """The corruption `name` with parameters c on x float (H, W, 3) in [0, 1]; s = H / 32 (spatial scale)."""
    import cv2
    h, w = x.shape[:2]
    if name == "gaussian_noise":
        return x + rng.normal(size=x.shape, scale=c)
    if name == "shot_noise":
        return rng.poisson(x * c) / c
    if name == "impulse_noise":
        hit, salt = rng.random(x.shape) < c, rng.random(x.shape) < 0.5
        return np.where(hit, salt.astype(x.dtype), x)
    if name == "defocus_blur":
        k = _old_disk(c[0] * s, c[1])
        return np.stack([cv2.filter2D(x[..., i].astype(np.float32), -1, k) for i in range(3)], -1)
    if name == "glass_blur":
        sigma, delta, passes = c[0] * s, max(1, int(round(c[1] * s))), c[2]
        y = (np.clip(_old_blur(x, sigma), 0, 1) * 255).astype(np.uint8).reshape(h * w, 3)
        pos = [(hh, ww) for hh in range(h - delta, delta, -1) for ww in range(w - delta, delta, -1)]
        perm = list(range(h * w))        # the swaps, in order, done on pixel positions, then applied at once
        for _ in range(passes):          # locally shuffle pixels, bottom-right to top-left
            shifts = rng.integers(-delta, delta, size=(len(pos), 2)).tolist()    # (dx, dy), high exclusive
            for (hh, ww), (dx, dy) in zip(pos, shifts):
                a_, b_ = hh * w + ww, (hh + dy) * w + ww + dx
                perm[a_], perm[b_] = perm[b_], perm[a_]
        return _old_blur(y[perm].reshape(h, w, 3) / 255.0, sigma)
    if name == "motion_blur":
        return _old_motion(x, c[0] * s, c[1] * s, rng.uniform(-45, 45))
    if name == "zoom_blur":
        zooms = np.arange(1, c, 0.01)
        return (x + sum(_old_zoom(x, z) for z in zooms)) / (len(zooms) + 1)
    if name == "snow":
        layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
        layer = _old_zoom(layer, c[2])
        layer[layer < c[3]] = 0
        layer = _old_motion(np.clip(layer, 0, 1), c[4] * s, c[5] * s, rng.uniform(-135, -45))[..., None]
        gray = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]
        x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
        return x + layer + np.rot90(layer, k=2)
    if name == "frost":
        return c[0] * x + c[1] * _old_frost_layer(h, w, s, rng)
    if name == "fog":
        size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
        top = x.max()
        return (x + c[0] * _old_plasma(size, c[1], rng)[:h, :w, None]) * top / (top + c[0])
    if name == "brightness":
        return _old_hsv_value_add(x, c)
    if name == "contrast":
        mean = x.mean((0, 1), keepdims=True)
        return (x - mean) * c + mean
    if name == "elastic_transform":
        from scipy.ndimage import map_coordinates
        alpha, sigma, jitter = (v * h for v in c)
        cs, sq = np.float32([h, w]) // 2, min(h, w) // 3
        p1 = np.float32([cs + sq, [cs[0] + sq, cs[1] - sq], cs - sq])
        p2 = p1 + rng.uniform(-jitter, jitter, size=p1.shape).astype(np.float32)
        x = cv2.warpAffine(x.astype(np.float32), cv2.getAffineTransform(p1, p2), (w, h),
                           borderMode=cv2.BORDER_REFLECT_101)
        dx, dy = (_old_blur(rng.uniform(-1, 1, (h, w)), sigma, "reflect", 3) * alpha if sigma else np.zeros((h, w))
                  for _ in range(2))
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return np.stack([map_coordinates(x[..., i], [yy + dy, xx + dx], order=1, mode="reflect")
                         for i in range(3)], -1)
    from PIL import Image
    im = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    if name == "pixelate":
        im = im.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize((w, h), Image.BOX)
    else:                                                                 # jpeg_compression
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=c)
        im = Image.open(io.BytesIO(buf.getvalue()))
    return np.asarray(im, np.float64) / 255


def old_corrupt(image, name: str, severity: int, rng=None) -> np.ndarray:
    """One image (H, W, C) uint8, C = 1 or 3 -> corrupted (H, W, C) uint8. rng: numpy Generator (default seed 0)."""
    if name not in CORRUPTIONS:
        raise CNNLibError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CNNLibError(f"severity must be 1 to 5, not {severity!r}")
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (1, 3) or a.dtype != np.uint8 or min(a.shape[:2]) < 4:
        raise CNNLibError(f"corrupt needs one uint8 image (H, W, 1 or 3) of at least 4 px, got {a.dtype} {a.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.repeat(a, 3, 2) if a.shape[2] == 1 else a
    out = _old_apply(name, x.astype(np.float64) / 255, P[name][severity - 1], rng, a.shape[0] / 32)
    out = (np.clip(out, 0, 1) * 255).astype(np.uint8)                       # truncation, as CIFAR-10-C's np.uint8
    if a.shape[2] == 1:
        import cv2
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None]
    return out
