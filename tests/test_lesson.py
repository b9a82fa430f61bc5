"""`cnnlib lesson` without a browser: the payload against the checkpoint and torch, the ONNX file against forward
hooks, text-only embedding of checkpoint strings, no external URL anywhere, the single file's runtime, the CLI."""
from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlib.inference import load_model
from cnnlib.lesson.build import VENDOR, build_lesson
from cnnlib.models.registry import get_model, register_model
from test_import import cli

from modeltools import make_model


def page_json(html: str, element_id: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert m, f"no #{element_id} in the page"
    return json.loads(m.group(1))


def f32(o) -> np.ndarray:
    return np.frombuffer(base64.b64decode(o["b64"]), "<f4").reshape(o["shape"])


def png_pixels(b64: str) -> np.ndarray:
    import io
    from PIL import Image
    im = np.array(Image.open(io.BytesIO(base64.b64decode(b64))))
    return im[None] if im.ndim == 2 else im.transpose(2, 0, 1)


def hooked(model, x01: torch.Tensor, names) -> dict:
    """Independent reference: the checkpoint's own network, normalized by hand, forward hooks on `names`."""
    c = x01.shape[1]
    mean = torch.tensor(model.meta["normalization"]["mean"]).view(1, c, 1, 1)
    std = torch.tensor(model.meta["normalization"]["std"]).view(1, c, 1, 1)
    store = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: store.setdefault(n, o.clone()))
               for n in names]
    try:
        with torch.no_grad():
            store["logits"] = model((x01 - mean) / std)
    finally:
        for h in handles:
            h.remove()
    return store


@pytest.fixture(scope="module")
def built(tiny_ckpt, tmp_path_factory):
    base = tmp_path_factory.mktemp("lesson")
    page = build_lesson(tiny_ckpt, base / "dir", images=3, title="Tiny <b>lesson</b>")
    single = build_lesson(tiny_ckpt, base / "one.html", images=3, single_file=True)
    html = Path(page).read_text()
    return {"dir": base / "dir", "page": Path(page), "single": Path(single), "payload": page_json(html, "payload"),
            "model": load_model(tiny_ckpt), "ckpt": tiny_ckpt}


def test_payload_holds_the_checkpoint_and_torchs_numbers(built):
    p, model = built["payload"], built["model"]
    meta = model.meta
    assert p["classes"] == list(meta["classes"]) and p["input_shape"] == list(meta["input_shape"])
    assert p["preprocessing"]["mean"] == pytest.approx(meta["normalization"]["mean"])
    assert [r["name"] for r in p["layers"]] == ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2"]
    conv2 = next(r for r in p["layers"] if r["name"] == "conv2")
    np.testing.assert_array_equal(f32(conv2["weight"]), model.conv2.weight.detach().numpy())
    assert conv2["source"] == "pool1" and conv2["next"] == "bn2"
    bn1 = next(r for r in p["layers"] if r["name"] == "bn1")
    np.testing.assert_array_equal(f32(bn1["var"]), model.bn1.running_var.numpy())
    np.testing.assert_array_equal(f32(p["head"]["weight"]), model.fc2.weight.detach().numpy())
    # 3 images per class, labels and predictions from torch on exactly the stored pixels
    labels = [im["label"] for im in p["images"]]
    assert sorted(labels) == sorted(list(range(len(p["classes"]))) * 3)
    x = torch.from_numpy(np.stack([png_pixels(im["png"]) for im in p["images"]])).float() / 255
    probs = torch.softmax(hooked(model, x, [])["logits"], 1).numpy()
    np.testing.assert_allclose([im["probabilities"] for im in p["images"]], probs, atol=1e-5)
    assert [im["prediction"] for im in p["images"]] == probs.argmax(1).tolist()
    # confusion matrix of the stored predictions; cells point at this lesson's images
    stored = meta["test_predictions"]
    assert np.asarray(p["confusion"]["matrix"]).sum() == len(stored["preds"])
    for key, ids in p["confusion"]["cells"].items():
        a, b = map(int, key.split(","))
        assert all(p["images"][i]["label"] == a and p["images"][i]["prediction"] == b for i in ids)
    wrong = [i for i, im in enumerate(p["images"]) if im["label"] != im["prediction"]]
    assert [m["image"] for m in p["misclassified"]] == wrong[:12]
    for m in p["misclassified"]:
        assert set(m["maps"]) == {"gradcam:predicted", "gradcam:true", "integrated_gradients:predicted",
                                  "integrated_gradients:true"}
    assert [r["epoch"] for r in p["history"]] == [r["epoch"] for r in meta["history"]]
    assert len(p["filters"]) == len(meta["history"]) + 1 and p["filters"][0]["epoch"] == 0


def test_exercise_answers_come_from_the_model(built):
    p, model = built["payload"], built["model"]
    kinds = {e["kind"] for e in p["exercises"]}
    assert {"unit", "class", "relu", "edge"} <= kinds
    for e in p["exercises"]:
        d = e["data"]
        if e["kind"] in ("unit", "relu", "class"):
            x = torch.from_numpy(png_pixels(p["images"][d["image"]]["png"])).float()[None] / 255
            out = hooked(model, x, ["conv1", "relu1", "relu2"])
        if e["kind"] == "unit":
            assert e["answer"] == pytest.approx(float(out[d["layer"]][0, d["channel"], d["row"], d["col"]]), abs=1e-5)
        elif e["kind"] == "relu":
            assert e["answer"] == pytest.approx(float(out[d["layer"]][0, d["channel"], d["row"], d["col"]]), abs=1e-5)
            assert e["answer"] == pytest.approx(max(d["input"], 0.0), abs=1e-5)
        elif e["kind"] == "class":
            assert e["answer"] == int(out["logits"].argmax())
        elif e["kind"] == "wrong":
            a, b = d["images"]
            wrong = [i for i in (a, b) if p["images"][i]["label"] != p["images"][i]["prediction"]]
            assert wrong == [e["answer"]]
        elif e["kind"] == "edge":
            x = torch.from_numpy(png_pixels(d["png"])).float()[None] / 255
            r = hooked(model, x, ["conv1"])["conv1"][0]
            score = (r - r.mean((1, 2), keepdim=True)).abs().mean((1, 2))
            assert e["answer"] == int(score.argmax()) and e["answer"] in d["choices"]


def test_onnx_outputs_equal_forward_hooks_and_take_an_edited_kernel(built):
    import onnx
    import onnxruntime as ort
    held = {i.name for i in onnx.load(str(built["dir"] / "assets" / "model.onnx")).graph.initializer}
    assert not any("conv" in n and "weight" in n for n in held), held      # the kernels are not stored twice
    p, model = built["payload"], built["model"]
    sess = ort.InferenceSession(str(built["dir"] / "assets" / "model.onnx"))
    x = torch.rand(1, *p["input_shape"], generator=torch.Generator().manual_seed(3))
    w = model.conv1.weight.detach().clone()
    names = [r["name"] for r in p["layers"]]
    ref = hooked(model, x, names)
    feeds = {f"weight:{n}": model.get_submodule(n).weight.detach().numpy() for n in p["fed"]}
    assert p["fed"] == ["conv1", "conv2"] and {i.name for i in sess.get_inputs()} == {"images", *feeds}
    got = dict(zip(p["outputs"], sess.run(p["onnx_outputs"], {"images": x.numpy(), **feeds})))
    for n in ["logits", *names]:
        np.testing.assert_allclose(got[n], ref[n].numpy(), atol=1e-4, err_msg=n)
    w[0, 0, 1, 1] += 0.5                       # an edited kernel weight, fed as the graph input
    edited = get_model("simple_cnn", **model.meta["model"]["kwargs"])
    edited.load_state_dict(model.state_dict())
    edited.eval().conv1.weight.data.copy_(w)
    edited.meta = model.meta
    ref2 = hooked(edited, x, [])
    out2 = sess.run(["logits"], {"images": x.numpy(), **feeds, "weight:conv1": w.numpy()})[0]
    np.testing.assert_allclose(out2, ref2["logits"].numpy(), atol=1e-4)
    assert np.abs(out2 - got["logits"]).max() > 1e-4


def test_no_external_url_anywhere_in_either_form(built):
    files = [f for f in built["dir"].rglob("*") if f.is_file()] + [built["single"]]
    assert len(files) == 6
    for f in files:
        data = f.read_bytes()
        for needle in (b"http://", b"https://", b"//cdn"):
            assert needle not in data, (f, needle)


def test_single_file_carries_the_webassembly_runtime(built):
    html = built["single"].read_text()
    res = page_json(html, "resources")
    assert "assets" not in res
    wasm = gzip.decompress(base64.b64decode(res["inline"]["wasm"]))
    assert wasm[:4] == b"\0asm" and wasm == gzip.decompress((VENDOR / "ort-wasm-simd-threaded.wasm.gz").read_bytes())
    assert gzip.decompress(base64.b64decode(res["inline"]["ort"])) == (VENDOR / "ort.wasm.min.mjs").read_bytes()
    assert base64.b64decode(res["inline"]["model"]) == (built["dir"] / "assets" / "model.onnx").read_bytes()
    assert built["single"].stat().st_size < 15e6


def test_checkpoint_strings_go_in_as_text(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    model = make_model(name="simple_cnn", size=16)
    ckpt = {"format_version": 1, "classes": [evil, "a&b", "</script><script>alert(2)</script>", "d"],
            "model": {"name": "simple_cnn", "kwargs": {"num_classes": 4, "in_channels": 3, "image_size": 16}},
            "input_shape": [3, 16, 16], "normalization": model.meta["normalization"], "state_dict": model.state_dict()}
    torch.save(ckpt, tmp_path / "evil.pt")
    page = Path(build_lesson(tmp_path / "evil.pt", tmp_path / "out.html", images=1, single_file=True,
                             title="<script>alert(3)</script>"))
    html = page.read_text()
    assert evil not in html and "<script>alert" not in html and "a&b" not in html
    payload = page_json(html, "payload")
    assert payload["classes"][:3] == ckpt["classes"][:3] and payload["title"] == "<script>alert(3)</script>"
    assert "<title>&lt;script&gt;alert(3)&lt;/script&gt;</title>" in html
    assert payload["images_note"].startswith("The test images are not on this computer")   # a made-up image instead
    for js in (VENDOR.parent / "web").glob("*.js"):
        assert "innerHTML" not in js.read_text() and "insertAdjacentHTML" not in js.read_text(), js


class CumProd(nn.Module):
    def forward(self, x):
        return torch.cumprod(x, dim=2)


def _cumprod_net(num_classes=2, **_):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), CumProd(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


@pytest.fixture
def cumprod_model():
    """A registered model the ONNX exporter cannot convert, removed from the registry afterwards (other test
    files walk every registered model)."""
    from cnnlib.models import registry
    register_model("lesson_test_cumprod")(_cumprod_net)
    yield
    registry._MODELS.pop("lesson_test_cumprod", None)


def test_cli_builds_and_refuses_in_one_sentence(built, tmp_path, cumprod_model):
    rc, out, err = cli("lesson", built["ckpt"], "--out", tmp_path / "cli", "--images", "1")
    assert rc == 0, err
    assert (tmp_path / "cli" / "index.html").is_file() and "wrote" in out
    rc, _, err = cli("lesson", tmp_path / "missing.pt", "--out", tmp_path / "x")
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    rc, _, err = cli("lesson", built["ckpt"], "--out", tmp_path / "y", "--images", "0")
    assert rc == 2 and "--images" in err and len(err.strip().splitlines()) == 1
    torch.manual_seed(0)
    net = _cumprod_net()
    torch.save({"format_version": 1, "classes": ["a", "b"], "model": {"name": "lesson_test_cumprod", "kwargs": {}},
                "input_shape": [3, 8, 8], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "state_dict": net.state_dict()}, tmp_path / "odd.pt")
    rc, _, err = cli("lesson", tmp_path / "odd.pt", "--out", tmp_path / "z")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: cannot turn lesson_test_cumprod into ONNX") and "'1' (CumProd)" in err, err
    assert "cumprod" in err and "Traceback" not in err


def test_home_builds_the_lesson_and_offers_it_as_a_download(lens_checkpoints, monkeypatch):
    monkeypatch.setenv("CNNLENS_CHECKPOINTS", lens_checkpoints["dir"])
    monkeypatch.setenv("CNNLENS_PREFETCH", "0")
    from test_dashboard_support import app, ok, walk
    at = app()
    assert "Share as a lesson" in [s.value for s in at.subheader]
    at.button(key="lesson_build").click().run(timeout=300)
    ok(at)
    nodes = [n for n in walk(at.main) if getattr(n, "key", None) == "lesson_download"
             or "lesson_download" in str(getattr(getattr(n, "proto", None), "id", ""))]
    assert nodes, "no download button after building"
    label = str(getattr(nodes[0], "proto", nodes[0]))
    assert "Download the lesson" in label and " MB)" in label, label[:300]
