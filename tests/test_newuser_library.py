"""What a new user tripped over (issue 18), the library side: unreadable images in a data folder are skipped
everywhere (library, CLI, dashboard) and said once; the other defects' page logic is tested with AppTest."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlib.data import cache as datacache
from cnnlib.data import datasets as data_mod
from cnnlib.data import spec as data_spec

from conftest import CLASSES4, write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SORTED4 = sorted(CLASSES4)


def spoil(folder: str, split: str = "test") -> list[str]:
    """Add a text file named .jpg and a truncated JPEG to `split`; returns their paths."""
    cls = os.path.join(folder, split, SORTED4[0])
    notes = os.path.join(cls, "0-notes.jpg")          # sorts first: the first file of the folder
    with open(notes, "w") as f:
        f.write("not an image\n")
    good = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    whole = os.path.join(cls, "00001whole.jpg")
    Image.fromarray(good).save(whole, quality=90)
    with open(whole, "rb") as f:
        data = f.read()
    cut = os.path.join(os.path.join(folder, split, SORTED4[1]), "zz-cut.jpg")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    os.remove(whole)
    return [notes, cut]


def meta_for(folder: str, shape=(3, 16, 16)) -> dict:
    return {"data": {"name": "d", "path": folder, "split_seed": 0}, "classes": SORTED4, "input_shape": list(shape),
            "config": {}}


def test_unreadable_images_are_skipped_and_labels_stay_aligned(tmp_path, caplog):
    folder = write_image_folder(tmp_path / "d", n_train=16, n_test=24)
    bad = spoil(folder)
    meta = meta_for(folder)
    with caplog.at_level(logging.WARNING, logger="cnnlib"):
        x, y = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "root"))
    assert len(x) == len(y) == 24                               # the 24 good images, the 2 bad ones skipped
    assert "Skipped 2 unreadable images" in caplog.text and "0-notes.jpg" in caplog.text
    spec = data_spec.checkpoint_data_spec(meta, root=str(tmp_path / "root"))
    files = data_spec.folder_split(spec, "test")
    assert len(files) == 24 and not set(bad) & {p for p, _ in files}
    for i in (0, 7, 23):                                        # file i is row i: same pixels, same label
        ref = np.asarray(Image.open(files[i][0]).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(np.asarray(x[i]), ref) and y[i] == files[i][1]
    assert data_spec.skipped_files(meta, "test", root=str(tmp_path / "root")) == bad
    # a second read comes from the cache, whose header remembers what was skipped (a fresh process knows too)
    datacache._READABLE.clear()
    x2, y2 = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "root"))
    assert np.array_equal(np.asarray(x2), np.asarray(x)) and np.array_equal(y2, y)
    assert data_spec.skipped_files(meta, "test", root=str(tmp_path / "root")) == bad


def test_unreadable_images_in_training_folder_and_first_file(tmp_path):
    folder = write_image_folder(tmp_path / "d", n_train=40, n_test=8, with_test=False)
    bad = spoil(folder, "train")                                # the folder's very first file is a text file
    splits = data_mod.load_dataset(folder, str(tmp_path / "root"), val_size=4, split_seed=0, test_fraction=0.25)
    assert sum(splits["sizes"].values()) == 40
    meta = dict(meta_for(folder), config={"split_seed": 0, "val_size": 4, "test_fraction": 0.25})
    for split in ("train", "val", "test"):                      # training's split == the checkpoint's split
        x, y = data_spec.load_checkpoint_split(meta, split, root=str(tmp_path / "root"))
        assert np.array_equal(np.asarray(x), splits[split][0].numpy()) and np.array_equal(y, splits[split][1].numpy())
        files = data_spec.folder_split(data_spec.checkpoint_data_spec(meta, root=str(tmp_path / "root")), split)
        assert len(files) == len(y) and not set(bad) & {p for p, _ in files}


def test_size_check_passes_over_an_unreadable_first_file(tmp_path):
    folder = write_image_folder(tmp_path / "d", n_train=8, n_test=8)
    spoil(folder, "train")
    meta = dict(meta_for(folder), config={"epochs": 1})       # trained at the images' own size: size checked
    x, _ = data_spec.load_checkpoint_split(meta, "test", root=str(tmp_path / "root"))
    assert x.shape[1:] == (3, 16, 16)
    assert "Something" not in data_spec.missing_data_help(meta)   # no exception on the way to the sentence


def test_one_percent_unreadable_and_a_read_only_root(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "d", n_train=8, n_test=200)
    victim = sorted(os.listdir(os.path.join(folder, "test", SORTED4[2])))[3]
    with open(os.path.join(folder, "test", SORTED4[2], victim), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")                    # 1 of 200 (0.5%) damaged in place
    monkeypatch.setattr(datacache, "write_split", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "no")))
    x, y = data_spec.load_checkpoint_split(meta_for(folder), "test", root=str(tmp_path / "root"))
    assert len(x) == len(y) == 199 and not isinstance(x, np.memmap)


def test_cli_evaluate_and_train_say_what_was_skipped(tmp_path, tiny_ckpt):
    folder = write_image_folder(tmp_path / "d", n_train=32, n_test=16)
    spoil(folder)
    env = {**os.environ, "CNNLIB_DATA_ROOT": str(tmp_path / "root")}
    run = subprocess.run([sys.executable, "-m", "cnnlib", "evaluate", tiny_ckpt, "--data", folder, "--recompute"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "Skipped 2 unreadable images" in run.stderr
    run = subprocess.run([sys.executable, "-m", "cnnlib", "train", "--data", folder, "--epochs", "1",
                          "--out", str(tmp_path / "t.pt"), "--val-size", "4", "--precision", "fp32"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "Skipped 2 unreadable images" in run.stderr


def test_skipped_sentence_names_the_first_few():
    paths = [f"/d/test/cat/{i}.jpg" for i in range(5)]
    line = datacache.skipped_sentence(paths)
    assert line.startswith("Skipped 5 unreadable images") and "cat/0.jpg" in line and "and 2 more" in line


def probs_at(accuracy: float, n: int = 400, k: int = 4, seed: int = 0):
    """Labels and confident probabilities from a model right on `accuracy` of the images."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
    p = np.full((n, k), 0.02)
    p[np.arange(n), pred] = 1 - 0.02 * (k - 1)
    return y, p


@pytest.mark.parametrize("accuracy", [0.6, 0.97])
def test_label_issue_count_is_an_estimate_only_for_an_accurate_model(accuracy):
    from cnnlib.diagnose import labels
    y, p = probs_at(accuracy)
    r = labels.label_issues(y, p)
    assert r["accuracy"] == float((p.argmax(1) == y).mean())
    trusted = r["accuracy"] >= labels.TRUSTED_ACCURACY
    assert r["estimated_wrong"] == (r["n_issues"] if trusted else None)


def test_channel_visualisation_start_is_the_noise_it_starts_from_made_visible(tiny_ckpt):
    from cnnlib.explain import featurevis
    from cnnlib.inference import load_model
    out = featurevis.visualize_channel(load_model(tiny_ckpt, "cpu"), "conv2", 1, steps=1, seed=0)
    start, shown = out["start"], out["start_contrast"]
    assert shown.shape == start.shape and shown.min() == 0 and shown.max() == pytest.approx(1)
    assert float(shown.std()) > 10 * float(start.std())                      # visible, not a flat grey
    assert np.allclose((start - start.min()) * out["start_gain"], shown, atol=1e-5)   # the very same noise


def test_a_run_interrupted_in_its_first_epoch_resumes_from_the_start_with_the_same_result(tmp_path, image_folder,
                                                                                           monkeypatch):
    import torch
    from cnnlib.io.checkpoint import load_checkpoint
    from cnnlib.training import train as train_mod
    from conftest import train_tiny
    full = load_checkpoint(train_tiny(tmp_path, image_folder, "full.pt", epochs=2, precision="fp32"))
    real_epoch = train_mod.train_one_epoch

    def cancelled_in_epoch_1(*args, **kwargs):
        if args[-1] == 1:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_one_epoch", cancelled_in_epoch_1)
    out = str(tmp_path / "first.pt")
    argv = ["--data", image_folder, "--data-root", str(tmp_path / "data-root"), "--epochs", "2", "--batch-size", "16",
            "--val-size", "16", "--lr", "3e-3", "--precision", "fp32", "--no-progress", "--out", out,
            "--eval-batch-size", "64"]
    assert train_mod.main(argv) == 130
    assert os.path.exists(out + ".resume.pt") and not os.path.exists(out)   # resumable, though no epoch finished
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)
    assert train_mod.main(argv + ["--resume"]) == 0
    resumed = load_checkpoint(out)
    assert [h["val_acc"] for h in resumed["history"]] == [h["val_acc"] for h in full["history"]]
    assert all(torch.allclose(resumed["state_dict"][k].float(), v.float(), atol=1e-5)
               for k, v in full["state_dict"].items())
    assert not os.path.exists(out + ".resume.pt")


def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_to_resume(tmp_path, image_folder, monkeypatch):
    from cnnlib.errors import TrainingError
    from cnnlib.training import train as train_mod

    def fails(*args, **kwargs):
        raise TrainingError("the training loss became nan")
    monkeypatch.setattr(train_mod, "train_one_epoch", fails)
    out = str(tmp_path / "bad.pt")
    with pytest.raises(TrainingError):
        train_mod.main(["--data", image_folder, "--data-root", str(tmp_path / "dr"), "--epochs", "1", "--no-progress",
                        "--val-size", "16", "--out", out])
    assert not os.path.exists(out + ".resume.pt")
