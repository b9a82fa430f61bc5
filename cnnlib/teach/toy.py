"""Convolution sizes and a toy convolution for an interactive widget: what a kernel, a stride and padding do.

    conv_output_size(size, kernel, stride, padding, dilation)   floor((size + 2p - d(k-1) - 1) / s) + 1
    toy_convolution(input (H, W), kernel (k, k), stride, padding)   a small 2-D convolution with, for every
                                                                output cell, the input cells it reads
"""
from __future__ import annotations

import numpy as np

from cnnlib.errors import CNNLibError

def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a conv or pool: floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1."""
    if min(size, kernel, stride, dilation) < 1 or padding < 0:
        raise CNNLibError(f"size, kernel, stride and dilation must be >= 1 and padding >= 0; got size={size}, "
                          f"kernel={kernel}, stride={stride}, padding={padding}, dilation={dilation}")
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise CNNLibError(f"a {kernel}x{kernel} kernel (dilation {dilation}) does not fit a {size}-pixel side "
                          f"with padding {padding}")
    return int(out)


def toy_convolution(inp, kernel, stride: int = 1, padding: int = 0, dilation: int = 1) -> dict:
    """A single-channel convolution (cross-correlation, as nn.Conv2d) of inp (H, W) with kernel (k, k), with
    every output cell's arithmetic, for a widget that highlights what each output reads.

    Returns {"input" (H, W), "padded" (H + 2p, W + 2p) (zeros around), "kernel" (k, k), "output" (H', W'),
    "stride", "padding", "dilation", "cells": row-major list of {"out": (i, j), "indices": [(r, c), ...] in
    `padded` coordinates (k*k, kernel order), "in_image": [bool, ...] (False: a padding zero),
    "products" (k, k), "value"}}.
    """
    a = np.asarray(inp, dtype=np.float64)
    kern = np.asarray(kernel, dtype=np.float64)
    if a.ndim != 2 or kern.ndim != 2:
        raise CNNLibError(f"toy_convolution takes a 2-D input and a 2-D kernel, got {a.shape} and {kern.shape}")
    (h, w), (kh, kw) = a.shape, kern.shape
    ho = conv_output_size(h, kh, stride, padding, dilation)
    wo = conv_output_size(w, kw, stride, padding, dilation)
    padded = np.pad(a, padding)
    out, cells = np.zeros((ho, wo)), []
    for i in range(ho):
        for j in range(wo):
            idx = [(i * stride + u * dilation, j * stride + v * dilation) for u in range(kh) for v in range(kw)]
            vals = np.array([padded[r, c] for r, c in idx]).reshape(kh, kw)
            products = vals * kern
            out[i, j] = products.sum()
            cells.append({"out": (i, j), "indices": idx,
                          "in_image": [padding <= r < padding + h and padding <= c < padding + w for r, c in idx],
                          "products": products, "value": float(out[i, j])})
    return {"input": a, "padded": padded, "kernel": kern, "output": out, "stride": stride, "padding": padding,
            "dilation": dilation, "cells": cells}
