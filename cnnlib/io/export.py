"""A checkpoint -> a file other tools run: ONNX, TorchScript or safetensors, with a model card beside it.

    python -m cnnlib export checkpoints/simple_cnn.pt --format onnx --out simple_cnn.onnx
    export_checkpoint("checkpoints/simple_cnn.pt", "onnx", "simple_cnn.onnx")  -> ["simple_cnn.onnx", "simple_cnn.onnx.md"]

ONNX and TorchScript hold the network *with its normalization folded in* (modelops.Normalized):

    images float32 (N, C, H, W), RGB (or gray) in [0, 1], N free  -->  logits float32 (N, K)

so a consumer only resizes (preprocessing: shorter side to `resize`, centre crop `crop`) and divides by 255.
The class names, statistics and preprocessing travel inside the file: ONNX metadata_props, TorchScript
extra file `cnnlens.json`, safetensors metadata (all strings; JSON where structured). The safetensors
file holds the bare state dict (cnnlib parameter names, no normalization): `get_model(name, **kwargs)`
plus `load_state_dict` rebuilds the checkpoint's network.
"""
from __future__ import annotations

import json
import os
import warnings

import torch
from cnnlib.errors import CNNLibError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}


def export_metadata(meta: dict, folded: bool = True) -> dict[str, str]:
    """The facts a consumer needs, as {str: str} (what ONNX and safetensors metadata can hold)."""
    c, h, w = meta["input_shape"]
    pre = meta.get("preprocessing") or {"resize": 0, "crop": 0}
    return {
        "cnnlens.model": meta["model"]["name"],
        "cnnlens.kwargs": json.dumps(meta["model"].get("kwargs", {})),
        "cnnlens.classes": json.dumps(list(meta["classes"])),
        "cnnlens.input_shape": json.dumps([c, h, w]),
        "cnnlens.normalization": json.dumps(meta["normalization"]),
        "cnnlens.preprocessing": json.dumps(pre),
        "cnnlens.input": f"float32 (N, {c}, {h}, {w}) {'gray' if c == 1 else 'RGB'} in [0, 1]"
                         + (", normalization folded in" if folded else ", then (x - mean) / std"),
    }


def _wrapped(model):
    """Normalized(net): raw [0, 1] images in, logits out; eval mode, fp32, CPU."""
    from cnnlib.modelops import Normalized, working_copy
    net = working_copy(model).float().cpu().eval()
    return Normalized(net, model.meta).eval()


def export_onnx(model, out: str) -> None:
    """ONNX with a free batch axis. torch 2.15 still ships the TorchScript-based exporter: on a 2-core CPU
    it is ~6x faster than the torch.export-based one (mobilenet_v3_small: 2.4 s against 15 s) and needs no
    onnxscript; the torch.export-based exporter is the fallback where the old one is gone or fails."""
    import onnx

    wrapper = _wrapped(model)
    example = torch.rand(2, *model.meta["input_shape"])      # (2, C, H, W): batch 2 so the axis stays free
    names = {"input_names": ["images"], "output_names": ["logits"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                   # its deprecation notice is not for our users
            torch.onnx.export(wrapper, (example,), out, dynamo=False, opset_version=17,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names)
    except Exception as legacy_error:  # noqa: BLE001 - the old exporter is missing or cannot do this model
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise legacy_error from None
        program = torch.onnx.export(wrapper, (example,), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        program.save(out, external_data=False)
    proto = onnx.load(out)
    for key, value in export_metadata(model.meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, out)


def export_torchscript(model, out: str) -> None:
    wrapper = _wrapped(model)
    example = torch.rand(2, *model.meta["input_shape"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # torch.jit's deprecation notice
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, out, _extra_files={"cnnlens.json": json.dumps(export_metadata(model.meta))})


def export_safetensors(model, out: str) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}  # no shared storage
    save_file(sd, out, metadata={"format": "pt", **export_metadata(model.meta, folded=False)})


def model_card(meta: dict, fmt: str, filename: str) -> str:
    """A Hugging Face style model card: YAML header (JSON values are valid YAML), then a short body."""
    name, classes = meta["model"]["name"], list(meta["classes"])
    data, metrics = meta.get("data", {}), meta.get("metrics", {})
    c, h, w = meta["input_shape"]
    pre = meta.get("preprocessing") or {"resize": 0, "crop": 0}
    recipe = (meta.get("config") or {}).get("recipe", "?")
    dataset = data.get("name", "?")
    acc = metrics.get("test_acc")
    library = {"onnx": "onnx", "torchscript": "pytorch", "safetensors": "timm" if name.startswith("timm/") else "pytorch"}[fmt]
    arch = name.split("/")[-1]
    j = json.dumps
    header = [
        "---",
        f"library_name: {library}",
        "pipeline_tag: image-classification",
        "tags:", "- image-classification", "- cnn-lens", f"- {j(arch)}", f"- {fmt}",
        "datasets:", f"- {j(dataset)}",
        "metrics:", "- accuracy",
        f"classes: {j(classes)}",
        f"dataset: {j(dataset)}",
        f"preprocessing: {j({**pre, **meta['normalization'], 'input_shape': [c, h, w]})}",
        f"recipe: {j(recipe)}",
        "model-index:",
        f"- name: {j(name)}",
        "  results:",
        "  - task: {type: image-classification}",
        f"    dataset: {{name: {j(dataset)}, type: {j(dataset)}}}",
        "    metrics:",
        f"    - {{type: accuracy, value: {j(acc)}, name: test accuracy}}",
        "---",
    ]
    folded = fmt != "safetensors"
    source = meta.get("source") or {}
    origin = f"a checkpoint imported from {source.get('weights')}" if source.get("imported") else "a trained checkpoint"
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
    steps = []
    if pre.get("resize"):
        steps.append(f"scale the shorter side to {pre['resize']} px")
    if pre.get("crop"):
        steps.append(f"take the centre {pre['crop']} x {pre['crop']}")
    steps.append(f"resize to {w} x {h} if it still differs")
    body = [
        "", f"# {arch} on {dataset}", "",
        f"`{filename}` was exported by CNN Lens (`python -m cnnlib export`, format {fmt}) from {origin}.",
        f"It classifies {'grayscale' if c == 1 else 'RGB'} images into {len(classes)} classes: {shown}.", "",
        "**Test accuracy**: " + (f"{acc:.2%} on {data.get('sizes', {}).get('test', '?')} test images." if acc is not None else "not measured."),
        "", "## Input", "",
        f"1. Decode the image as {'L' if c == 1 else 'RGB'}; {'; '.join(steps)}.",
        f"2. float32 (N, {c}, {h}, {w}) in [0, 1] (pixels / 255).",
        ("3. Nothing else: the normalization (mean " + j(meta['normalization']['mean']) + ", std "
         + j(meta['normalization']['std']) + ") is folded into the network; the output is logits (N, "
         + str(len(classes)) + ").") if folded else
        ("3. Subtract mean " + j(meta['normalization']['mean']) + " and divide by std "
         + j(meta['normalization']['std']) + "; rebuild the network with cnnlib.models.registry.get_model("
         + j(name) + ", **kwargs) (kwargs in the file's metadata) and load this state dict."),
        "",
    ]
    return "\n".join(header + body)


def export_checkpoint(ckpt, fmt: str, out: str | None = None) -> list[str]:
    """Export a checkpoint (path or loaded dict) as `fmt`; returns [the file, its model card]."""
    from cnnlib.inference import load_model

    if fmt not in FORMATS:
        raise CNNLibError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = load_model(ckpt, "cpu")
    if out is None:
        if not isinstance(ckpt, (str, os.PathLike)):
            raise CNNLibError("export needs an output path (--out FILE)")
        out = os.path.splitext(str(ckpt))[0] + FORMATS[fmt]
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    try:
        {"onnx": export_onnx, "torchscript": export_torchscript, "safetensors": export_safetensors}[fmt](model, out)
    except CNNLibError:
        raise
    except Exception as e:  # noqa: BLE001 - an architecture the exporter cannot handle: one sentence
        raise CNNLibError(f"cannot export {model.meta['model']['name']} as {fmt}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}") from None
    card = out + ".md"
    with open(card, "w", encoding="utf-8") as f:
        f.write(model_card(model.meta, fmt, os.path.basename(out)))
    return [out, card]
