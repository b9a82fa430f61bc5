"""Cached computations of the teaching pages (forward pass, layer strip, channel visualisation, training batch,
sanity check), all from cnnlib.teach and cnnlib.explain. Same pattern as compute.py: st.cache_data keyed by (checkpoint, image,
options) only, the model and arrays passed unhashed, cnnlib imported as a module inside each loader (a test can
monkeypatch `arithmetic.unit_arithmetic` and count the misses)."""
from __future__ import annotations

import compute
import numpy as np
import streamlit as st
import testdata
import ui

from checkpoints import Ctx

VIS_STEPS = 64            # feature-visualisation steps by default (about 10-30 s on a laptop CPU)
TOP_K = 9                 # test images shown beside a channel's visualisation
AUTO_SCORE_PIXELS = 2**24  # images x height x width scored without asking (10,000 CIFAR images: ~10M; beyond: a button)


# ----------------------------------------------------------------------------- layers

SANITY_METHOD = "saliency"      # the Sanity check page's method by default


def conv_layers(ctx: Ctx) -> list[str]:
    """The Conv2d layers, in execution order (the forward-pass page's choices)."""
    return compute.conv_layer_names(ctx)


def spatial_layers(ctx: Ctx) -> dict[str, list[int]]:
    """{layer: output shape [C, h, w]} of the layers whose output is a stack of maps (for the channel page)."""
    return {r["name"]: list(r["output_shape"]) for r in compute.layers(ctx)
            if len(r["output_shape"]) == 3 and r["output_shape"][1] * r["output_shape"][2] >= 1}


_ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Hardswish", "Mish", "ELU", "Sigmoid", "Tanh")


def default_channel_layer(ctx: Ctx) -> str:
    """The channel page's first choice: the deepest activation whose maps are still larger than 1 x 1 (a
    pooled 1 x 1 output has no pattern to show), else the deepest such layer, else the last one."""
    rows = [r for r in compute.layers(ctx) if len(r["output_shape"]) == 3]
    wide = [r for r in rows if r["output_shape"][1] * r["output_shape"][2] > 1]
    acts = [r for r in wide if r["type"].split(" ")[0] in _ACTIVATIONS]
    return (acts or wide or rows)[-1]["name"]


# ----------------------------------------------------------------------------- 1. the forward pass

@st.cache_data(show_spinner=False, max_entries=32)
def _conv_map(ckpt_key: str, image_key: str, layer: str, _model, _x01) -> np.ndarray:
    from cnnlib.models import anatomy as interpret
    return interpret.feature_maps(_model, _x01, [layer], scale="channel")[layer]["raw"]


def conv_map(ctx: Ctx, pick, layer: str) -> np.ndarray:
    """The raw output (C, h, w) of a conv layer for one image (before BatchNorm and activation)."""
    with ui.spinner("Running the image through the network…"):
        return _conv_map(ctx.key, pick.key, layer, ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=128)
def _unit(ckpt_key: str, image_key: str, layer: str, channel: int, y: int, x: int, _model, _x01) -> dict:
    from cnnlib.teach import arithmetic
    return arithmetic.unit_arithmetic(_model, _x01, layer, channel, y, x)


def unit(ctx: Ctx, pick, layer: str, channel: int, y: int, x: int) -> dict:
    """cnnlib.teach.arithmetic.unit_arithmetic for one unit of one image."""
    return _unit(ctx.key, pick.key, layer, int(channel), int(y), int(x), ctx.model, pick.x01)


@st.cache_data(show_spinner=False, max_entries=64)
def _head(ckpt_key: str, image_key: str, target: int | None, top: int, _model, _x01) -> dict:
    from cnnlib.teach import arithmetic
    return arithmetic.head_arithmetic(_model, _x01, target=target, top=top)


def head(ctx: Ctx, pick, target: int | None, top: int = 10) -> dict:
    """cnnlib.teach.arithmetic.head_arithmetic: the class's logit written out, then the softmax."""
    return _head(ctx.key, pick.key, None if target is None else int(target), int(top), ctx.model, pick.x01)


TOY_INPUT = np.array([[3, 1, 0, 2, 5, 1, 0],
                      [0, 4, 2, 1, 0, 3, 2],
                      [1, 0, 6, 2, 1, 0, 4],
                      [2, 3, 1, 5, 2, 2, 0],
                      [0, 1, 2, 0, 4, 1, 3],
                      [5, 0, 1, 3, 0, 2, 1],
                      [1, 2, 0, 1, 3, 0, 2]], dtype=float)
TOY_KERNELS = {1: [[1]], 2: [[1, 0], [0, -1]], 3: [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
               4: [[1, 1, -1, -1]] * 4, 5: [[1, 0, 0, 0, -1]] * 5}


def toy_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """toy.conv_output_size (raises CNNLibError with one sentence when the kernel does not fit)."""
    from cnnlib.teach import toy
    return toy.conv_output_size(size, kernel, stride, padding)


def toy(size: int, kernel: int, stride: int, padding: int) -> dict:
    """toy.toy_convolution of the first size x size corner of TOY_INPUT with a k x k edge kernel."""
    from cnnlib.teach import toy
    return toy.toy_convolution(TOY_INPUT[:size, :size], np.array(TOY_KERNELS[kernel], float), stride, padding)


# ----------------------------------------------------------------------------- 2. through the layers

@st.cache_data(show_spinner=False, max_entries=32)
def _strip(ckpt_key: str, image_key: str, per_layer: int, _model, _x01) -> dict:
    from cnnlib.teach import strip
    return strip.layer_strip(_model, _x01, per_layer=per_layer)


def strip(ctx: Ctx, pick, per_layer: int) -> dict:
    with ui.spinner("Running the image through every layer…"):
        return _strip(ctx.key, pick.key, int(per_layer), ctx.model, pick.x01)


# ----------------------------------------------------------------------------- 3. what a channel wants to see

@st.cache_data(show_spinner=False, max_entries=64)
def _visualize(ckpt_key: str, layer: str | None, channel: int | None, target: int | None, steps: int, seed: int,
               _model, _progress) -> dict:
    from cnnlib.explain import featurevis
    r = featurevis.visualize_channel(_model, layer, channel, target_class=target, steps=steps, seed=seed,
                                progress=_progress)
    return {k: r[k] for k in ("image", "start", "start_contrast", "start_gain", "objective_history", "start_objective",
                              "final_objective", "seconds")}


@st.cache_resource(show_spinner=False)
def _computed() -> set:
    """The visualisations already in _visualize's cache (shared by every session of this server)."""
    return set()


def visualization_cached(ctx: Ctx, layer, channel, target, steps: int, seed: int) -> dict | None:
    """The cached visualisation, or None when it has not been computed yet (nothing is computed here)."""
    key = (ctx.key, layer, channel, target, int(steps), int(seed))
    if key not in _computed():
        return None
    try:
        return _visualize(*key, ctx.model, _never)
    except _NotCached:                 # evicted from the cache since
        _computed().discard(key)
        return None


class _NotCached(Exception):
    pass


def _never(step, steps, objective):
    raise _NotCached


def visualize(ctx: Ctx, layer, channel, target, steps: int, seed: int) -> dict:
    """featurevis.visualize_channel with a progress bar (st.progress driven by its progress callback); cached per
    (checkpoint, layer, channel or class, steps, seed)."""
    bar = st.progress(0.0, text="Optimising the image…")

    def progress(step, total, objective):
        bar.progress(step / total, text=f"Optimising the image: step {step} of {total}, objective {objective:.3g}")
    key = (ctx.key, layer, channel, target, int(steps), int(seed))
    try:
        out = _visualize(*key, ctx.model, progress)
    finally:
        bar.empty()
    _computed().add(key)
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def _top(ckpt_key: str, source: str, layer: str, channel: int, _model, _x) -> tuple[np.ndarray, np.ndarray]:
    from cnnlib.explain import featurevis
    scores = featurevis.channel_scores(_model, _x, layer, channel)           # one pass over the test images
    order = np.argsort(-scores, kind="stable")[:TOP_K]                        # = featurevis.top_activating's order
    return order, scores[order]


_TOP_DONE: set = set()      # (checkpoint, data, layer, channel) already scored by some session: shown at once


def top_images_ready(ctx: Ctx, pixels, layer: str, channel: int) -> bool:
    """Score without asking? Small test sets (AUTO_SCORE_PIXELS), or a channel some session scored already."""
    x = pixels[0]
    cost = len(x) * int(x.shape[-2]) * int(x.shape[-1])
    return cost <= AUTO_SCORE_PIXELS or (ctx.key, testdata.pixels_key(ctx), layer, int(channel)) in _TOP_DONE


def top_images(ctx: Ctx, pixels, layer: str, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mean activations) of the TOP_K test images that excite `layer`'s `channel` most."""
    with ui.spinner(f"Scoring all {len(pixels[1]):,} test images for this channel…"):
        out = _top(ctx.key, testdata.pixels_key(ctx), layer, int(channel), ctx.model, pixels[0])
    _TOP_DONE.add((ctx.key, testdata.pixels_key(ctx), layer, int(channel)))
    return out


# ----------------------------------------------------------------------------- 4. what the training loop sees

def batch_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """Which test images make the batch: a fixed random pick per seed."""
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:min(n, n_total)])


@st.cache_data(show_spinner=False, max_entries=32)
def _batch(ckpt_key: str, source: str, n: int, seed: int, _meta, _x) -> dict:
    from cnnlib.teach import batch
    idx = batch_indices(len(_x), n, seed)
    out = batch.training_batch_steps(_meta, np.asarray(_x[idx]), seed=seed)
    out["indices"] = idx
    return out


def batch_steps(ctx: Ctx, pixels, n: int, seed: int) -> dict:
    """batch.training_batch_steps on `n` test images (picked by `seed`, which also seeds the augmentation)."""
    return _batch(ctx.key, testdata.pixels_key(ctx), int(n), int(seed), ctx.meta, pixels[0])


def recipe(ctx: Ctx) -> dict:
    """The augmentation settings the checkpoint trained with (TrainConfig's defaults where missing)."""
    from cnnlib.config import TrainConfig
    d, cfg = TrainConfig(), ctx.meta.get("config") or {}
    return {"recipe": cfg.get("recipe", "unknown (imported)"), "augment": cfg.get("augment", d.augment),
            "crop_padding": cfg.get("crop_padding", d.crop_padding), "flip": cfg.get("flip", d.flip),
            "recorded": bool(cfg)}


# ----------------------------------------------------------------------------- 6. sanity check

@st.cache_data(show_spinner=False, max_entries=32)
def _sanity(ckpt_key: str, image_key: str, method: str, target: int | None, seed: int, _model, _x01) -> list[dict]:
    from cnnlib.explain import sanity
    rows = sanity.sanity_check(_model, _x01, method, target=target, seed=seed, with_ssim=False)
    return [{k: r[k] for k in ("step", "randomized", "heatmap", "spearman", "target")} for r in rows]


def sanity(ctx: Ctx, pick, method: str, target: int | None, seed: int = 0) -> list[dict]:
    """sanity.sanity_check: the trained model's map, then one per cascading randomisation step."""
    with ui.spinner("Randomising the layers one by one and recomputing the map…"):
        return _sanity(ctx.key, pick.key, method, None if target is None else int(target), int(seed),
                       ctx.model, pick.x01)


def sanity_methods() -> dict[str, str]:
    return compute.attribution_methods()


def first_image_views(ctx: Ctx, pixels) -> None:
    """For the background preparation (dashboard/warmup.py): the default view of test image #0 (each page's
    first image) on the three per-image pages that take seconds at 224 px: Forward pass (the first conv layer's
    centre unit of channel 0, and the head), Faithfulness (its default methods, steps and baseline) and Sanity
    check (its default method)."""
    import diagnose
    import imagepick
    pick = imagepick.test_image(ctx, pixels[0], pixels[1], 0)
    target = int(compute.probabilities(ctx, pick).argmax())
    convs = conv_layers(ctx)
    if convs:
        _, h, w = conv_map(ctx, pick, convs[0]).shape
        unit(ctx, pick, convs[0], 0, h // 2, w // 2)
    head(ctx, pick, None)
    for method in diagnose.FAITH_METHODS:
        diagnose.curves(ctx, pick, method, target, diagnose.FAITH_STEPS, diagnose.baselines()[0])
    sanity(ctx, pick, SANITY_METHOD, None)
