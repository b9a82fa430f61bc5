"""ONNX files in: `python -m cnnlib import model.onnx --data ...` (see cnnlib.io.importer).

    python -m cnnlib import model.onnx --data photos/ --classes classes.txt --out checkpoints/model.pt

The file is parsed as data (protobuf), never executed, and converted to PyTorch with onnx2torch
(cnnlib.models.onnx_graph, the model family "onnx"). Before conversion the graph is made one CNN Lens can
hold, each step printed by the import:

    one input, one output   a float image tensor of rank 4 in, one score per class out; else one sentence
    NCHW                    an NHWC input (Keras / TensorFlow through tf2onnx) gets a Transpose in front, so
                            CNN Lens feeds (N, C, H, W) like every other model; the file's weights are untouched
    logits                  a final Softmax is dropped (the views need logits; CNN Lens applies softmax itself,
                            so the stored probabilities still equal the file's own outputs)
    Identity nodes          folded into their inputs (torch.onnx.export shares one zero bias through them)
    opset                   above 17, converted down (onnx.version_converter) when onnx2torch lacks the newer
                            operator versions; operators it still cannot convert: one sentence naming them
    image size              the input's H x W (square); a graph that takes any size needs --image-size

    is_onnx(path)                       does the file name end in .onnx?
    read_onnx(path)                     its ModelProto, or one sentence (missing, empty, not ONNX, no graph)
    prepare_graph(proto, name)          (proto, facts): the steps above, up to the conversion
    onnx_network(path, image_size=None) (network in eval(), get_model kwargs, facts): converted, checked,
                                        with the weights-free graph in kwargs["graph"]
"""
from __future__ import annotations

import os

from cnnlib.errors import CheckpointError, CNNLibError
from cnnlib.models.onnx_graph import require_onnx, build_onnx, encode_graph, to_torch, unsupported_operators

TARGET_OPSETS = (17, 13)     # tried in turn when onnx2torch lacks an operator version of a newer opset

__all__ = ["is_onnx", "onnx_network", "prepare_graph", "read_onnx"]


def is_onnx(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".onnx")


def read_onnx(path):
    """ModelProto of an ONNX file (external data next to it is read too), or the one sentence why not."""
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    name = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"the ONNX file {name} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes)")
    try:
        proto = onnx.load(path)
    except (DecodeError, RuntimeWarning, ValueError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{name} is not an ONNX model, or it is corrupt: its protobuf cannot be parsed") from None
    except OSError as e:
        raise CheckpointError(f"{name} cannot be read ({e.strerror or type(e).__name__}; an external data "
                              "file next to it may be missing)") from None
    except Exception as e:  # noqa: BLE001 - onnx's checker errors on external data paths and the like
        raise CheckpointError(f"{name} cannot be read as ONNX ({type(e).__name__}: {str(e)[:120]})") from None
    if not len(proto.graph.node) or not len(proto.graph.output):
        raise CheckpointError(f"{name} is not an ONNX model, or it is corrupt: it holds no graph of operators")
    return proto


def _dims(value) -> list:
    """The dims of a graph input/output: ints where fixed, None where symbolic or unknown."""
    shape = value.type.tensor_type.shape
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def _fold_identities(graph) -> int:
    """Identity nodes not producing a graph output: their consumers read the Identity's input instead."""
    outputs = {o.name for o in graph.output}
    alias, keep = {}, []
    for node in graph.node:
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)

    def root(name):
        while name in alias:
            name = alias[name]
        return name
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = root(name)
    if alias:
        del graph.node[:]
        graph.node.extend(keep)
    return len(alias)


def _drop_final_softmax(graph) -> bool:
    """A Softmax whose output is the graph's output (and used nowhere else) becomes an Identity."""
    out = graph.output[0].name
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get(out)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        return False
    used = sum(name == node.output[0] for n in graph.node for name in n.input)
    if used:
        return False
    node.op_type = "Identity"
    del node.attribute[:]
    return True


def _to_nchw(proto, value) -> None:
    """Prepend Transpose(perm 0, 3, 1, 2 inverse): a new NCHW input feeds the old NHWC name."""
    from onnx import helper

    graph = proto.graph
    n, h, w, c = value.type.tensor_type.shape.dim
    old = value.name
    new = helper.make_tensor_value_info(old + "_nchw", value.type.tensor_type.elem_type,
                                        [d.dim_param or d.dim_value or None for d in (n, c, h, w)])
    graph.node.insert(0, helper.make_node("Transpose", [new.name], [old], perm=[0, 2, 3, 1], name="cnnlens_nhwc"))
    index = list(graph.input).index(value)
    graph.input.remove(value)
    graph.input.insert(index, new)


def prepare_graph(proto, name: str = "the ONNX model"):
    """(proto, facts) made convertible as the module docstring says; facts: {"layout", "channels", "size",
    "softmax_dropped", "identities", "opset", "opset_from", "input"}. One sentence for what CNN Lens cannot take."""
    onnx = require_onnx()
    graph = proto.graph
    weights = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CNNLibError(f"{name} has {len(inputs)} input(s) and {len(graph.output)} output(s); CNN Lens takes "
                          "a classifier with one image input and one output of class scores")
    value = inputs[0]
    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise CNNLibError(f"{name}'s input {value.name!r} is not float32 "
                          f"({onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)}); export it with a "
                          "float32 image input (scaled pixels), as CNN Lens feeds")
    dims = _dims(value)
    if len(dims) != 4:
        raise CNNLibError(f"{name}'s input {value.name!r} has rank {len(dims)} ({dims}); CNN Lens takes image "
                          "batches of rank 4, (N, C, H, W) or (N, H, W, C)")
    small = lambda d: d is not None and d <= 4   # noqa: E731 - a channel axis: 1 (gray), 3 (RGB), 4
    layout = "NHWC" if small(dims[3]) and not small(dims[1]) else "NCHW"
    if not small(dims[1]) and layout == "NCHW":
        raise CNNLibError(f"{name}'s input {value.name!r} has the shape {dims}, where neither axis 1 nor axis 3 "
                          "is a channel count (1 or 3); export it with a fixed channel axis")
    channels, h, w = (dims[3], dims[1], dims[2]) if layout == "NHWC" else (dims[1], dims[2], dims[3])
    if h is not None and w is not None and h != w:
        raise CNNLibError(f"{name} takes {h} x {w} images; CNN Lens needs a square input: export the model at "
                          f"{max(h, w)} x {max(h, w)}")
    facts = {"layout": layout, "channels": channels, "size": h if h is not None else w,
             "input": value.name + ("_nchw" if layout == "NHWC" else "")}
    if layout == "NHWC":
        _to_nchw(proto, value)
    facts.update(softmax_dropped=_drop_final_softmax(graph), identities=_fold_identities(graph))
    opset = {(o.domain or ""): o.version for o in proto.opset_import}.get("", 0)
    facts.update(opset=opset, opset_from=opset)
    missing = len(unsupported_operators(proto))
    if missing:     # a lower opset is kept only where onnx2torch then lacks fewer operators
        from onnx import version_converter
        for target in (t for t in TARGET_OPSETS if t < opset):
            try:
                lower = version_converter.convert_version(proto, target)
            except Exception:  # noqa: BLE001 - an operator the version converter has no adapter for
                continue
            left = len(unsupported_operators(lower))
            if left < missing:
                proto, facts["opset"], missing = lower, target, left
            if not missing:
                break
    return proto, facts


def _runs(net, x) -> bool:
    import torch
    try:
        with torch.inference_mode():
            net(x)
    except Exception:  # noqa: BLE001 - any failure means no
        return False
    return True


def _same(a, b, x) -> bool:
    import torch
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    return ya.shape == yb.shape and bool(torch.allclose(ya, yb, rtol=1e-4, atol=1e-5))


def onnx_network(path, image_size: int | None = None):
    """(network in eval(), kwargs for get_model("onnx", **kwargs), facts) for an ONNX file; see the module
    docstring. kwargs: graph (weights-free base64 graph), num_classes, in_channels, image_size."""
    import torch

    name = os.path.basename(str(path))
    proto, facts = prepare_graph(read_onnx(path), name)
    size = facts["size"]
    if image_size and size and int(image_size) != size:
        raise CNNLibError(f"{name} takes {size} x {size} images, not --image-size {image_size}; leave "
                          "--image-size out (the file's own size is used) or export the model at that size")
    size = int(image_size or size or 0)
    if size < 1:
        raise CNNLibError(f"{name} takes images of any size; pass --image-size N, the size it was trained at")
    net = to_torch(proto)
    c = int(facts["channels"])
    probe = torch.rand(2, c, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            out = net(probe)
    except Exception as e:  # noqa: BLE001 - the converted network cannot run on its own input shape
        if _runs(net, probe[:1]):
            raise CNNLibError(f"{name} takes one image at a time only (its graph fixes the batch size at 1); "
                              "export it with a free batch axis (torch.onnx.export(..., dynamic_axes={'x': {0: "
                              "'batch'}}); tf2onnx leaves it free by default)") from None
        raise CNNLibError(f"{name} converted to PyTorch but cannot run on a {c} x {size} x {size} image "
                          f"({type(e).__name__}: {(str(e).splitlines() or ['?'])[0][:120]})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CNNLibError(f"{name}'s output for 2 images has the shape {shape}; CNN Lens takes a classifier "
                          "whose output is (N, classes)")
    kwargs = {"num_classes": int(out.shape[1]), "in_channels": c, "image_size": size}
    state = net.state_dict()
    for strip in (True, False):   # weights cut out of the stored graph, unless the graph needs them to build
        graph = encode_graph(proto, strip=strip)
        rebuilt = build_onnx(graph)
        try:
            rebuilt.load_state_dict(state, strict=True)
        except RuntimeError:
            continue
        if _same(net, rebuilt.eval(), probe):
            facts["weights_in_graph"] = not strip
            return net, {"graph": graph, **kwargs}, facts
    raise CNNLibError(f"{name} converts to PyTorch, but the converted network cannot be rebuilt from its "
                      "stored graph and weights; CNN Lens cannot keep it as a checkpoint")
