"""Exercises generated from the model: the student predicts, then the page reveals the model's answer.

    make_exercises(model, layout, x_uint8, labels, preds) -> [{"kind", "question", "data", "answer", ...}]

Kinds (every answer computed here by torch from the real network, never written by hand):

    unit    compute one unit of the first convolution from its patch and kernel (answer: the conv's output,
            checked to 2 decimals); data: image, layer, channel, row, col
    class   which class will the model choose for this image (answer: the class index)
    wrong   which of two images does the model get wrong (answer: the image index)
    relu    the BatchNorm (or conv) gives this value: what does the activation after it give (answer: its output)
    edge    which of these first-layer filters responds most to this edge (answer: the filter index; data: the
            edge picture as PNG and the filters offered)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from cnnlib.lesson.graph import runner


def _question_unit(rng, run, layout, x, i) -> dict:
    name = layout["editable"]
    out = run(x[i])[name]               # (C, h, w)
    c, h, w = out.shape
    ch, r, col = int(rng.integers(c)), int(rng.integers(h)), int(rng.integers(w))
    return {"kind": "unit", "question": f"Image {i}: compute unit ({r}, {col}) of channel {ch} of {name} from "
                                        "its patch, kernel and bias (2 decimals).",
            "data": {"image": int(i), "layer": name, "channel": ch, "row": r, "col": col},
            "answer": float(out[ch, r, col])}


def _question_relu(rng, run, layout, x, i) -> dict | None:
    types = {r["name"]: r for r in layout["layers"]}
    for row in layout["layers"]:
        nxt = types.get(row.get("next") or "")
        if row["type"] in ("BatchNorm2d", "Conv2d") and nxt is not None and nxt["type"] in (
                "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "SiLU", "ELU", "GELU", "Hardtanh"):
            outs = run(x[i])
            before, after = outs[row["name"]], outs[nxt["name"]]
            flat = np.flatnonzero(before.ravel() < 0) if rng.random() < 0.7 else np.arange(before.size)
            flat = flat if flat.size else np.arange(before.size)
            k = int(rng.choice(flat))
            ch, r, col = np.unravel_index(k, before.shape)
            return {"kind": "relu", "question": f"Image {i}: {row['name']} gives {before[ch, r, col]:.4f} at channel "
                                                f"{ch}, ({r}, {col}). What does {nxt['name']} ({nxt['type']}) give?",
                    "data": {"image": int(i), "layer": nxt["name"], "before_layer": row["name"], "channel": int(ch),
                             "row": int(r), "col": int(col), "input": float(before[ch, r, col])},
                    "answer": float(after[ch, r, col])}
    return None


def _edge_image(shape, vertical: bool) -> np.ndarray:
    c, h, w = shape
    img = np.full((c, h, w), 40, np.uint8)
    if vertical:
        img[:, :, w // 2:] = 215
    else:
        img[:, h // 2:, :] = 215
    return img


def _question_edge(rng, run, shape, layout, vertical: bool) -> dict:
    from cnnlib.io.webpage import png
    name = layout["editable"]
    img = _edge_image(shape, vertical)
    out = run(img)[name]                # (C, h, w)
    score = np.abs(out - out.mean(axis=(1, 2), keepdims=True)).mean(axis=(1, 2))   # strongest response to the edge
    best = int(score.argmax())
    others = [int(j) for j in rng.permutation([j for j in range(len(score)) if j != best])[:3]]
    choices = sorted([best, *others])
    return {"kind": "edge", "question": f"Which of these {name} filters responds most to this "
                                        f"{'vertical' if vertical else 'horizontal'} edge (largest mean |response "
                                        "- its average| over the map)?",
            "data": {"layer": name, "png": png(img), "choices": choices,
                     "scores": {str(j): float(score[j]) for j in choices}},
            "answer": best}


def make_exercises(model: nn.Module, layout: dict, x: np.ndarray, labels, preds, probs=None, seed: int = 0) -> list[dict]:
    """A handful of each kind the lesson's images allow (see the module docstring). Questions about the model's
    choice use images whose top class leads by at least 0.01 where there are such (no coin-flip answers)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    raw, memo = runner(model, layout), {}

    def run(img):                     # one forward pass per distinct image
        key = np.asarray(img).tobytes()
        if key not in memo:
            memo[key] = raw(img)
        return memo[key]
    classes = [str(k) for k in model.meta["classes"]]
    if probs is not None and len(probs[0]) > 1:
        top2 = np.sort(np.asarray(probs), 1)[:, -2:]
        clear = [i for i in range(n) if top2[i, 1] - top2[i, 0] >= 0.01]
    else:
        clear = list(range(n))
    order = [int(i) for i in rng.permutation(n)]
    picks = ([i for i in order if i in clear] + [i for i in order if i not in clear])[:3]
    out = [_question_unit(rng, run, layout, x, i) for i in picks]
    for i in picks:
        k = len(classes)
        if k <= 10:
            choices = list(range(k))
        else:
            with torch.no_grad():
                top = np.argsort(-run(x[i])["logits"])[:4].tolist()
            choices = sorted(set(top) | ({int(labels[i])} if labels is not None else set()))
        out.append({"kind": "class", "question": f"Which class will the model choose for image {i}?",
                    "data": {"image": i, "choices": choices}, "answer": int(preds[i])})
    if labels is not None:
        wrong = [i for i in clear if int(labels[i]) != int(preds[i])]
        right = [i for i in clear if int(labels[i]) == int(preds[i])]
        for a, b in list(zip(rng.permutation(wrong).tolist(), rng.permutation(right).tolist()))[:2]:
            pair = [int(a), int(b)] if rng.random() < 0.5 else [int(b), int(a)]
            out.append({"kind": "wrong", "question": f"The model gets one of images {pair[0]} and {pair[1]} wrong. "
                                                     "Which one?",
                        "data": {"images": pair}, "answer": int(a)})
    for i in picks[:2]:
        q = _question_relu(rng, run, layout, x, i)
        if q:
            out.append(q)
    out += [_question_edge(rng, run, model.meta["input_shape"], layout, v) for v in (True, False)]
    return out
