"""Fuzzing, the fast deterministic subset that runs in CI (bench/fuzz.py is the full run with figures).

Images: valid PNG/JPEG/GIF/WebP/TIFF/BMP in every mode, animated, with EXIF orientations in and out of
range, then bit flips, truncation, absurd declared sizes, inserted bytes. Checkpoints: one valid file
truncated at every 1/100th, flipped bytes, wrong dtypes and shapes, NaN/Inf, other architectures,
nested containers, absurd shapes, zip archives with extra or missing members, code. The only outcomes
allowed: a correct result or the project's own one-sentence error, within 2 s per case.
"""
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fuzzcases
from cnnlib.io import checkpoint

IMAGE_CASES = int(os.environ.get("CNNLIB_FUZZ_IMAGES", "300"))


@settings(max_examples=IMAGE_CASES, derandomize=True, deadline=2000, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzzcases.image_case())
def test_image_decoding_survives_mutated_files(case):
    name, blob = case
    assert fuzzcases.check_image(blob) in ("ok", "ImageError"), name


def test_checkpoint_loading_survives_mutated_files(tiny_ckpt):
    blob = open(tiny_ckpt, "rb").read()
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    outcomes, slowest = {}, 0.0
    for name, mutated in fuzzcases.checkpoint_cases(blob, np.random.default_rng(0), flips=40):
        t0 = time.perf_counter()
        outcome = fuzzcases.check_checkpoint(mutated, image)
        slowest = max(slowest, time.perf_counter() - t0)
        outcomes[name] = outcome
    assert not os.path.exists("/tmp/cnnlib-fuzz-pwned")
    assert slowest < 2.0, slowest
    assert outcomes["truncated at 0%"] == outcomes["empty"] == "CheckpointError"
    for refused in ("NaN weights", "Inf weights", "classes shorter", "classes longer", "code in a torch.save file",
                    "code in a plain pickle", "zip missing a tensor", "state dict of another resnet9",
                    "input shape absurd", "input shape large", "model kwargs huge"):
        assert outcomes[refused] == "CheckpointError", refused
    assert sum(o == "ok" for o in outcomes.values()) >= 1          # harmless mutations still load
    assert len(outcomes) > 150


def test_the_fuzzer_catches_a_planted_defect(monkeypatch):
    """Plant a bug (palette images raise a ValueError instead of ImageError): the oracle must report it."""
    from cnnlib.data import images
    real = images._flatten_mode

    def planted(im):
        if im.mode == "P":
            raise ValueError("planted")
        return real(im)
    monkeypatch.setattr(images, "_flatten_mode", planted)
    blob = fuzzcases._encode(fuzzcases._image("P", 8, 8, 0), "PNG", 1, None)
    with pytest.raises(ValueError, match="planted"):
        fuzzcases.check_image(blob)


def test_nan_weights_are_refused_even_without_the_weights_check(tiny_ckpt, monkeypatch):
    """Defence in depth: with the NaN/shape check taken out, the blank-image forward pass still refuses."""
    monkeypatch.setattr(checkpoint, "check_weights_fit", lambda *a, **k: None)
    blob = open(tiny_ckpt, "rb").read()
    nan = dict(fuzzcases.checkpoint_cases(blob, np.random.default_rng(0), flips=0))["NaN weights"]
    assert fuzzcases.check_checkpoint(nan, np.zeros((8, 8, 3), np.uint8)) == "CheckpointError"
