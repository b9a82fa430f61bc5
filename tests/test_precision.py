"""cnnlib.training.precision: `--precision auto` picks the faster of fp32 / bf16 by measurement, caches the answer per
machine / model / batch, survives a corrupt cache, and the checkpoint records the choice and why."""
from __future__ import annotations

import json

import pytest
import torch
from cnnlib.training import precision
from cnnlib.io.checkpoint import load_checkpoint
from cnnlib.config import make_config

from conftest import train_tiny

CPU = torch.device("cpu")
KW = {"num_classes": 4, "in_channels": 3, "image_size": 8, "dropout": 0.1}


def fake_timer(img_per_s: dict, calls: list | None = None, burst=None, batch: int = 128):
    """A timing function (precision, steps) -> seconds for a machine running at `img_per_s`; `burst(p, i)` may
    multiply the i-th call's time (load from another process)."""
    def timer(p, steps):
        if calls is not None:
            calls.append((p, steps))
        slow = burst(p, len(calls or [])) if burst else 1.0
        return steps * batch / img_per_s[p] * slow
    return timer


def resolve(tmp_path, timer, **cfg):
    c = make_config("default", **{"batch_size": 128, "data_root": str(tmp_path), **cfg})
    return precision.resolve(c, CPU, "simple_cnn", KW, [3, 8, 8], True, timer=timer)


@pytest.mark.parametrize("rates, expect", [({"fp32": 1500.0, "bf16": 3000.0}, "bf16"),
                                           ({"fp32": 1500.0, "bf16": 400.0}, "fp32"),
                                           ({"fp32": 1000.0, "bf16": 1040.0}, "bf16")])
def test_auto_picks_the_faster_precision(tmp_path, rates, expect):
    dtype, rec = resolve(tmp_path, fake_timer(rates))
    assert rec["used"] == expect and dtype == (torch.bfloat16 if expect == "bf16" else None)
    assert rec["why"].startswith(f"measured: {expect} ") and "img/s" in rec["why"]
    assert rec["img_per_s"][expect] == pytest.approx(rates[expect], rel=1e-6)


def test_bursts_of_load_do_not_decide(tmp_path):
    # bf16 is 10% faster, but every third timed call (whichever precision) runs 3x slower: the median ignores it
    calls = []
    timer = fake_timer({"fp32": 1000.0, "bf16": 1100.0}, calls, burst=lambda p, i: 3.0 if i % 3 == 0 else 1.0)
    _, rec = resolve(tmp_path, timer)
    assert rec["used"] == "bf16"
    assert rec["img_per_s"]["bf16"] == pytest.approx(1100.0) and rec["img_per_s"]["fp32"] == pytest.approx(1000.0)


def test_the_cache_is_used_the_second_time_and_a_corrupt_one_is_rewritten(tmp_path):
    calls = []
    _, first = resolve(tmp_path, fake_timer({"fp32": 1500.0, "bf16": 3000.0}, calls))
    assert calls and "measured 20" in first["why"]
    path = tmp_path / precision.CACHE_NAME
    assert len(json.loads(path.read_text())) == 1
    calls.clear()
    _, again = resolve(tmp_path, fake_timer({"fp32": 1500.0, "bf16": 3000.0}, calls))
    assert calls == [] and again["used"] == "bf16" and "cached 20" in again["why"]
    # another batch size is another measurement, kept beside the first
    resolve(tmp_path, fake_timer({"fp32": 1500.0, "bf16": 3000.0}, calls), batch_size=64)
    assert calls and len(json.loads(path.read_text())) == 2
    # a corrupt file is ignored, measured again and rewritten as valid JSON
    path.write_text("{not json")
    calls.clear()
    _, rec = resolve(tmp_path, fake_timer({"fp32": 2000.0, "bf16": 500.0}, calls))
    assert calls and rec["used"] == "fp32" and len(json.loads(path.read_text())) == 1
    assert [p.name for p in tmp_path.iterdir()] == [precision.CACHE_NAME]   # no temporary file left behind


def test_explicit_precision_is_obeyed_without_measuring(tmp_path):
    def never(p, steps):
        raise AssertionError("measured although the precision was given")
    assert resolve(tmp_path, never, precision="fp32") == (None, {"used": "fp32", "why": "requested (--precision fp32)"})
    dtype, rec = resolve(tmp_path, never, precision="bf16")
    assert dtype == torch.bfloat16 and rec["used"] == "bf16"
    with pytest.raises(Exception, match="unknown precision"):
        resolve(tmp_path, never, precision="fp16")


def test_real_step_timer_runs_both_precisions():
    timer = precision.step_timer("simple_cnn", KW, [3, 8, 8], 8, True, CPU)
    rng = torch.get_rng_state()
    assert timer("fp32", 2) > 0 and timer("bf16", 2) > 0
    assert torch.equal(rng, torch.get_rng_state())
    rates = precision.measure(timer, 8)
    assert set(rates) == {"fp32", "bf16"} and all(r > 0 for r in rates.values())


def test_the_choice_lands_in_the_checkpoint(tmp_path, image_folder, monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "step_timer", lambda *a, **k: fake_timer({"fp32": 900.0, "bf16": 2700.0}, calls, batch=16))
    ckpt = load_checkpoint(train_tiny(tmp_path, image_folder, epochs=1, precision="auto"))
    assert calls and ckpt["precision"]["used"] == "bf16" and "bf16 2,700 img/s vs fp32 900 img/s" in ckpt["precision"]["why"]
    assert ckpt["device"].endswith("bf16 autocast")
    calls.clear()
    again = load_checkpoint(train_tiny(tmp_path, image_folder, "again.pt", epochs=1, precision="auto"))
    assert calls == [] and "cached" in again["precision"]["why"]
    fixed = load_checkpoint(train_tiny(tmp_path, image_folder, "fp32.pt", epochs=1, precision="fp32"))
    assert fixed["precision"]["used"] == "fp32" and fixed["device"].endswith("fp32")
