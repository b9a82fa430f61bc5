"""The few cnnlib facts the pages need that are not computations (those live in compute.py): accepted
upload types, named datasets, attribution option defaults, the data spec, the missing-data sentence and
the out-of-distribution sentence. Each looks its function up on the cnnlib module at call time, so a test
can monkeypatch it there."""
from __future__ import annotations

import numpy as np


def named_datasets() -> tuple[str, ...]:
    from cnnlib.data import datasets as data
    return tuple(data.NAMED)


def image_types() -> list[str]:
    """The upload types st.file_uploader accepts: cnnlib.data.images.IMAGE_EXTENSIONS without the dots."""
    from cnnlib.data import images
    return sorted({e.lstrip(".").lower() for e in images.IMAGE_EXTENSIONS})


def ood_warning(meta: dict, x01: np.ndarray, probs: np.ndarray, reference: dict | None = None) -> str | None:
    """One plain sentence when an input is unlike the test images (cnnlib.inference.ood_warning), else None."""
    from cnnlib import inference
    return inference.ood_warning(meta, x01, probs, reference)


def option_defaults(method: str, input_shape) -> dict:
    """The defaults of a method's options (n_steps, baseline, nt_samples, stdev, window), sized to the input."""
    from cnnlib.explain import attribution
    return dict(attribution.option_defaults(method, list(input_shape)))


def layer_methods() -> tuple[str, ...]:
    from cnnlib.explain import attribution
    return tuple(attribution.LAYER_METHODS)


def filter_history(meta: dict, model) -> list[tuple[int, object]]:
    """[(epoch, first-conv weight (C_out, C_in, k, k))] from epoch 0 (initialisation); [] without a history."""
    from cnnlib.models import anatomy as interpret
    return list(interpret.filter_history(meta, model))


def checkpoint_data_spec(meta: dict, override: str = ""):
    """What decides a checkpoint's test pixels (cnnlib.data.datasets.DataSpec); `.key()` names them in caches."""
    from cnnlib.data import spec as data_spec
    return data_spec.checkpoint_data_spec(meta, override=override)


def load_test_split(meta: dict, override: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, C, H, W) memory-mapped, y int64 (N,)); raises DatasetError when not on disk."""
    from cnnlib.data import spec as data_spec
    return data_spec.load_checkpoint_split(meta, "test", data=override or None)


def missing_data_help(meta: dict, error: Exception | None = None, override: str = "") -> str:
    """ONE sentence: why the test pixels are missing and how to get them."""
    from cnnlib.data import spec as data_spec
    return data_spec.missing_data_help(meta, error=error, override=override)
