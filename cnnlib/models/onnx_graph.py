"""ONNX graphs as PyTorch networks: the model family "onnx" (`get_model("onnx", graph=...)`).

A converted network (a torch.fx GraphModule) cannot be stored in a checkpoint without pickling code, so a
checkpoint stores the ONNX graph itself, which is data: its weights are cut out (the checkpoint's state_dict
holds them, as for every other model) and the rest is serialized as base64 text in the model's kwargs. At
load time the graph is converted again with onnx2torch (pinned in requirements.txt), its missing weights
filled with zeros of the right shape, and then the state dict is loaded over it. Nothing in the graph is
executed as Python: onnx2torch maps each ONNX operator to a fixed torch module, and node names, which
torch.fx copies into the Python source it generates, are reduced to letters, digits and _ . / - first.

    encode_graph(proto, strip=True)  ModelProto -> base64 text, weights (initializers of >= STRIP_MIN elements) cut out
    decode_graph(text)               base64 text -> ModelProto with the cut weights as zeros (refuses external data)
    unsupported_operators(proto)     ["Op (opset N)", ...] that onnx2torch has no converter for
    safe_node_names(proto)           node names that torch.fx can write into its generated source as plain strings
    to_torch(proto)                  onnx2torch's network in eval(), or one sentence naming what it cannot convert
    require_onnx()                   the onnx module, or one sentence saying which packages to install
    build_onnx(graph, ...)           the network a checkpoint's stored graph describes (get_model("onnx", ...))
"""
from __future__ import annotations

import base64
import binascii
import re

from cnnlib.errors import CNNLibError

ONNX_FAMILY = "onnx"
STRIP_MIN = 16                     # initializers this large are weights (the state dict holds them)
MAX_ZERO_BYTES = 4 * 2 ** 30       # a stored graph asking for more zero-filled weights than this is refused
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_./-]")   # torch.fx writes module names into Python source, unescaped
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")

__all__ = ["ONNX_FAMILY", "build_onnx", "decode_graph", "encode_graph", "require_onnx", "safe_node_names", "to_torch",
           "unsupported_operators"]


def require_onnx():
    try:
        import onnx
        import onnx2torch  # noqa: F401
    except ImportError:
        raise CNNLibError("ONNX models need the onnx and onnx2torch packages: pip install onnx==1.23.2 "
                          "onnx2torch==1.5.15 (or pip install 'cnnlib[onnx]')") from None
    return onnx


def _elements(t) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def _has_data(t) -> bool:
    return any(len(getattr(t, f)) for f in _DATA_FIELDS)


def encode_graph(proto, strip: bool = True) -> str:
    """The graph as base64 text; with `strip`, initializers of >= STRIP_MIN elements lose their values
    (dims and type stay): the checkpoint's state dict carries them."""
    onnx = require_onnx()
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    if strip:
        for t in copy.graph.initializer:
            if _elements(t) >= STRIP_MIN:
                for f in _DATA_FIELDS:
                    t.ClearField(f)
    return base64.b64encode(copy.SerializeToString()).decode("ascii")


def decode_graph(text: str):
    """ModelProto from encode_graph's text; cut initializers come back as zeros. One sentence when the
    text is not such a graph, names external data files, or would need absurd memory."""
    onnx = require_onnx()
    import numpy as np
    from onnx import helper, numpy_helper
    from google.protobuf.message import DecodeError

    if not isinstance(text, str) or not text:
        raise CNNLibError("the stored ONNX graph is missing (model kwargs 'graph' must be base64 text)")
    try:
        proto = onnx.ModelProto.FromString(base64.b64decode(text.encode("ascii"), validate=True))
    except (binascii.Error, UnicodeEncodeError, ValueError, DecodeError):
        raise CNNLibError("the stored ONNX graph is damaged: it is not base64 text of an ONNX model") from None
    if not len(proto.graph.node):
        raise CNNLibError("the stored ONNX graph is damaged: it holds no operators")
    total = 0
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise CNNLibError(f"the stored ONNX graph refers to an external data file for {t.name!r}; CNN Lens "
                              "only loads weights stored inside the checkpoint")
        if not _has_data(t) and _elements(t) > 0:
            try:
                dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            except (KeyError, ValueError, TypeError):
                raise CNNLibError(f"the stored ONNX graph gives the weight {t.name!r} an unknown data type") from None
            if any(int(d) < 0 for d in t.dims):
                raise CNNLibError(f"the stored ONNX graph gives the weight {t.name!r} a negative size")
            total += _elements(t) * np.dtype(dtype).itemsize
            if total > MAX_ZERO_BYTES:
                raise CNNLibError("the stored ONNX graph asks for more than 4 GiB of weights; refusing to build it")
            t.CopyFrom(numpy_helper.from_array(np.zeros(tuple(int(d) for d in t.dims), dtype), t.name))
    return proto


def _opsets(proto) -> dict[str, int]:
    return {(o.domain or ""): int(o.version) for o in proto.opset_import}


def unsupported_operators(proto) -> list[str]:
    """Operators of the main graph (in order of first use) that onnx2torch cannot convert, as "Op (opset N)"
    ("domain.Op" outside the standard domain)."""
    require_onnx()
    from onnx2torch.node_converters.registry import get_converter

    opsets, seen, out = _opsets(proto), set(), []
    for node in proto.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        key = (domain, node.op_type)
        if key in seen:
            continue
        seen.add(key)
        version = opsets.get(domain, opsets.get("", 1))
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            out.append(f"{domain + '.' if domain else ''}{node.op_type} (opset {version})")
    return out


def safe_node_names(proto) -> int:
    """Rename, in place, every node whose name holds a character other than letters, digits, _ . / -: the names
    become module names that torch.fx writes into generated source as getattr(self, "<name>") without escaping,
    so a quote in a node name would be Python code run on the first forward pass. Returns how many changed."""
    changed = 0
    for node in proto.graph.node:
        clean = _UNSAFE_NAME.sub("_", node.name)[:200]
        if clean != node.name:
            node.name, changed = clean, changed + 1
    return changed


def to_torch(proto):
    """onnx2torch's conversion of `proto` (node names made safe first, in place), in eval(); one sentence
    naming the operators it lacks, or what else stopped it."""
    require_onnx()
    from onnx2torch import convert

    safe_node_names(proto)
    missing = unsupported_operators(proto)
    if missing:
        them = "them" if len(missing) > 1 else "it"
        raise CNNLibError(f"the ONNX graph uses {'operators' if len(missing) > 1 else 'the operator'} "
                          f"{', '.join(missing)}, which onnx2torch 1.5.15 cannot convert to PyTorch; export the "
                          f"model without {them} (or at another opset) and import again")
    try:
        net = convert(proto)
    except NotImplementedError as e:
        raise CNNLibError(f"onnx2torch cannot convert this ONNX graph: {str(e).splitlines()[0][:200]}") from None
    except Exception as e:  # noqa: BLE001 - whatever the converter trips on, the user gets one sentence
        raise CNNLibError(f"onnx2torch could not convert the ONNX graph ({type(e).__name__}: "
                          f"{(str(e).splitlines() or ['?'])[0][:160]})") from None
    return net.eval()


def build_onnx(graph: str = "", num_classes: int | None = None, in_channels: int | None = None,
               image_size: int | None = None, input_name: str | None = None):
    """get_model("onnx", graph=..., ...): the stored graph converted again (weights zero until the
    checkpoint's state dict is loaded). The other kwargs are facts for readers, not used to build."""
    import torch

    with torch.device("cpu"):   # onnx2torch copies real weights in: it cannot build on the meta device
        return to_torch(decode_graph(graph))
