"""STL-10 by name (`--data stl10`): torchvision's loader on a tiny synthetic copy of its binary layout
(stl10_binary/{train,test}_{X,y}.bin + class_names.txt), 96 x 96 RGB, the unlabeled split neither read nor
needed; and the one-paragraph help where it cannot be downloaded."""
from __future__ import annotations

import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from cnnlib.data import datasets as data_mod
from cnnlib.data.datasets import NAMED, TITLES, load_dataset, missing_dataset_message
from cnnlib.errors import DatasetError

from conftest import synthetic_images

NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10_binary(root, n_train=30, n_test=20, class_file=True):
    """root/stl10_binary/ as the STL-10 archive unpacks (no unlabeled_X.bin): images column-major per
    channel, labels 1..10. Returns {split: (x uint8 (N, 3, 96, 96), y 0-based)}."""
    folder = os.path.join(root, "stl10_binary")
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        x, y = synthetic_images(n, 10, 96, 3, seed)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))                 # (N, 3, 96, 96)
        x[:, 0, :8, :] = 255                                               # a bright top band: rows stay rows
        x.transpose(0, 1, 3, 2).tofile(os.path.join(folder, f"{split}_X.bin"))
        (y + 1).astype(np.uint8).tofile(os.path.join(folder, f"{split}_y.bin"))
        out[split] = (x, y)
    if class_file:
        with open(os.path.join(folder, "class_names.txt"), "w") as f:
            f.write("\n".join(NAMES) + "\n")
    return out


@pytest.fixture
def present_files_pass(monkeypatch):
    """torchvision's md5 check, reduced to "the file exists" (the synthetic files are not the real ones)."""
    monkeypatch.setattr(torchvision.datasets.stl10, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def test_stl10_is_a_named_dataset():
    assert NAMED["stl10"] == "STL10" and TITLES["stl10"] == "STL-10"
    import importlib
    adapters = importlib.import_module("dashboard.adapters")
    assert "stl10" in adapters.named_datasets()


def test_stl10_loads_both_splits_at_96_px_without_the_unlabeled_file(tmp_path, present_files_pass):
    written = write_stl10_binary(tmp_path)
    assert not os.path.exists(tmp_path / "stl10_binary" / "unlabeled_X.bin")
    splits = load_dataset("stl10", str(tmp_path), val_size=5, download=False)
    assert splits["classes"] == NAMES and splits["name"] == "stl10"
    x_test, y_test = splits["test"]
    assert tuple(x_test.shape) == (20, 3, 96, 96) and x_test.dtype == torch.uint8
    assert torch.equal(x_test, torch.from_numpy(written["test"][0]))        # pixels, orientation, channel order
    assert torch.equal(y_test, torch.from_numpy(written["test"][1]))        # labels 0-based, as written
    assert splits["sizes"] == {"train": 25, "val": 5, "test": 20}
    x_train, y_train = splits["train"]
    x_val, y_val = splits["val"]
    seen = torch.cat([y_train, y_val]).sort().values
    assert torch.equal(seen, torch.from_numpy(np.sort(written["train"][1])))
    assert float(x_train[:, 0, :8].float().mean()) == 255.0                 # the bright band is the top rows


def test_stl10_without_class_names_file_uses_its_ten_classes(tmp_path, present_files_pass):
    write_stl10_binary(tmp_path, class_file=False)
    assert load_dataset("stl10", str(tmp_path), download=False)["classes"] == NAMES


def test_missing_stl10_is_the_one_paragraph_help(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("stl10", str(tmp_path), download=False)
    text = str(e.value)
    assert text == missing_dataset_message("stl10", str(tmp_path), "downloads are turned off")
    assert text.startswith("The STL-10 dataset is not in") and "--data stl10" in text and "--data-root" in text
    assert "\n" not in text


def test_stl10_that_cannot_download_names_the_reason(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network here")
    monkeypatch.setattr(torchvision.datasets.STL10, "download", offline)
    with pytest.raises(DatasetError, match=r"^The STL-10 dataset is not in .*URLError"):
        load_dataset("stl10", str(tmp_path), download=True)


def test_cli_import_of_an_onnx_model_on_stl10(tmp_path, present_files_pass):
    """The named dataset end to end: a 96-px ONNX classifier imported with --data stl10."""
    pytest.importorskip("onnx2torch")
    import warnings

    from torch import nn

    from cnnlib.io.checkpoint import load_checkpoint
    from test_import_onnx import cli, export, run_ort
    write_stl10_binary(tmp_path / "root")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(net, (1, 3, 96, 96), tmp_path / "stl.onnx")
    rc, _, err = cli("import", path, "--data", "stl10", "--data-root", tmp_path / "root", "--no-download",
                     "--out", tmp_path / "stl.pt")
    assert rc == 0, err
    ckpt = load_checkpoint(str(tmp_path / "stl.pt"))
    assert ckpt["classes"] == NAMES and ckpt["input_shape"] == [3, 96, 96]
    assert ckpt["data"]["name"] == "stl10" and ckpt["preprocessing"] == {"resize": 0, "crop": 0}
    x = load_dataset("stl10", str(tmp_path / "root"), download=False)["test"][0].float().div(255)
    expected = torch.softmax(torch.from_numpy(run_ort(path, x.numpy())), 1)
    assert float((ckpt["test_predictions"]["probs"] - expected).abs().max()) < 1e-4
    assert data_mod.TITLES[ckpt["data"]["name"]] == "STL-10"


def test_a_training_job_finds_stl10_on_disk_before_it_is_decoded(tmp_path, present_files_pass):
    """The dashboard's pre-start data check asks torchvision's STL10 for its splits by name (split=, not train=):
    a copy on disk that was never decoded must not be reported as impossible to download."""
    from cnnlib.config import TrainConfig
    from cnnlib.training.jobcheck import check_data
    write_stl10_binary(str(tmp_path / "root"))
    cfg = TrainConfig(data="stl10", data_root=str(tmp_path / "root"), download=False)
    check_data(cfg, str(tmp_path), can_download=lambda key: False)      # no DatasetError
    with pytest.raises(DatasetError, match="STL-10"):
        check_data(TrainConfig(data="stl10", data_root=str(tmp_path / "empty"), download=False), str(tmp_path),
                   can_download=lambda key: False)
