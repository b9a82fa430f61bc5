"""Models a user brings, in a real browser: random-weight torchvision/resnet18, torchvision/mobilenet_v3_small
and timm/convnext_atto saved as bare state dicts, imported with `python -m cnnlib import` on a small synthetic
224-pixel ImageFolder (the family's default preprocessing: resize 256, crop 224, ImageNet statistics), then
the pages whose code runs the network's own layers opened for each in headless Chromium (bench/walk_pages.py's
walk: checkpoint chosen in the picker, Errors' Explain, a Saliency upload, Channel visualisation's
optimisation). No page may show an exception box or an error box. Screenshots go to artifacts/browser-imported/
(git-ignored). The pages that only read a checkpoint's stored predictions are the same for every family and are
walked by tests/test_browser.py; every page on every family is `python bench/walk_pages.py`.

Skipped with --no-browser / CNNLENS_SKIP_BROWSER=1; without Chromium it fails (CI installs it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import bench_module, write_image_folder

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
MODELS = ["torchvision/resnet18", "torchvision/mobilenet_v3_small", "timm/convnext_atto"]
FAMILY_PAGES = ["Architecture", "Filters", "Feature maps", "Forward pass", "Through the layers",
                "Channel visualisation", "Saliency", "Errors", "Sanity check"]   # they run the network's layers


def test_every_page_on_imported_224_pixel_models(tmp_path):
    import torch
    w = bench_module("walk_pages")
    if not Path(w.CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {w.CHROMIUM} (or skip with --no-browser)")
    classes = ["circle", "square", "stripe"]
    data = Path(write_image_folder(tmp_path / "photos", n_train=12, n_test=12, classes=classes, size=224))
    ckdir, root = tmp_path / "checkpoints", tmp_path / "root"
    ckdir.mkdir()
    names = []
    for model in MODELS:
        stem = model.replace("/", "_")
        weights = w.save_weights(model, len(classes), tmp_path / f"{stem}.pth")
        w.import_checkpoint(weights, model, data, ckdir / f"{stem}.pt", root)
        meta = torch.load(ckdir / f"{stem}.pt", weights_only=True, map_location="cpu")
        assert list(meta["input_shape"]) == [3, 224, 224], meta["input_shape"]
        assert meta["preprocessing"] == {"resize": 256, "crop": 224}, meta["preprocessing"]
        names.append(f"{stem}.pt")
    upload = next((data / "test" / classes[0]).iterdir())
    lines = []
    with w.serve(ckdir, root, tmp_path / "streamlit.log") as url:
        rows = w.walk(url, names, REPO / "artifacts" / "browser-imported", upload=upload,
                      log=lambda line, **_: lines.append(line), only=FAMILY_PAGES)
    print("\n" + "\n".join(lines))
    import frame
    assert set(FAMILY_PAGES) <= {e.title for e in frame.PAGES}
    assert len(rows) == len(MODELS) * len(FAMILY_PAGES)
    bad = [r for r in rows if r["exceptions"] or r["errors"]]
    assert not bad, bad
    done = {(r["checkpoint"], r["action"].split()[0]) for r in rows if r["action"]}
    for name in names:          # the pages' main actions were done on every model
        assert {(name, "explained"), (name, "uploaded"), (name, "optimised")} <= done, (name, done)
    log = (tmp_path / "streamlit.log").read_text()
    assert not bench_module("pagedriver").app_tracebacks(log), log[-3000:]
