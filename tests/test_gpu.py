"""CUDA paths: training (both recipes, auto precision), evaluation and attribution on a GPU.
Skipped, with the reason shown, on machines without CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cnnlib import modelops
from cnnlib.explain import attribution
from cnnlib.diagnose import evaluate
from cnnlib.data import spec as data_spec
from cnnlib.io.checkpoint import load_checkpoint
from cnnlib.inference import load_model

from conftest import train_tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]


@pytest.mark.parametrize("recipe", ["default", "fast"])
def test_training_on_cuda_writes_a_checkpoint_that_reevaluates(tmp_path, image_folder, recipe):
    out = train_tiny(tmp_path, image_folder, recipe=recipe, device="cuda", epochs=2, batch_size=16)
    ckpt = load_checkpoint(out)
    assert ckpt["precision"]["used"] in ("fp32", "bf16") and torch.cuda.get_device_name(0) in ckpt["device"]
    model = load_model(out, device="cuda")
    assert next(model.parameters()).is_cuda
    x, y = data_spec.load_checkpoint_split(model.meta, "test", root=str(tmp_path / "data-root"))
    out_split = evaluate.run_split(model, x, y)
    agree = (out_split["preds"] == ckpt["test_predictions"]["preds"].long().numpy()).mean()
    assert agree > 0.95


def test_attribution_methods_run_on_cuda(tiny_ckpt):
    model = load_model(tiny_ckpt, device="cuda")
    image = torch.rand(*model.meta["input_shape"], device="cuda")
    for method in attribution.METHODS:
        out = attribution.attribute(model, image, method)
        assert out["heatmap"].shape == tuple(model.meta["input_shape"][1:])
        assert np.isfinite(out["heatmap"]).all()


def test_cuda_and_cpu_logits_agree(tiny_ckpt):
    cpu, gpu = load_model(tiny_ckpt), load_model(tiny_ckpt, device="cuda")
    x = np.random.default_rng(0).random((8, *cpu.meta["input_shape"]), dtype=np.float32)
    np.testing.assert_allclose(modelops.probabilities(cpu, x), modelops.probabilities(gpu, x), atol=1e-4)
