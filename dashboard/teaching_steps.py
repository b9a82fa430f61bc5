"""The forward-pass page's step panels: one unit's conv, BatchNorm, activation and pool written out with the real
numbers (cnnlib.teach.strip.unit_arithmetic), the classifier head and softmax (head_arithmetic), and the toy
convolution widget. Each step shows `result` (the arithmetic) beside `hook` (the model's own value)."""
from __future__ import annotations

import numpy as np
import streamlit as st
import teaching
import teaching_draw as draw
import ui

CELL = 40


def f(v, d: int = 6) -> str:
    return f"{v:.{d}g}"


def agree(step: dict) -> None:
    """The arithmetic's result beside the forward hook's value (what the model itself computed)."""
    r, h = step["result"], step["hook"]
    ok = abs(r - h) <= 1e-4 * max(1.0, abs(h))
    st.markdown(f"{':green[:material/check_circle:]' if ok else ':orange[:material/warning:]'} `result = {f(r)}` · `hook = {f(h)}` — the arithmetic "
                f"{'agrees with' if ok else 'differs from'} the value the model computed in its forward pass "
                f"(a hook on `{step['layer']}`).")


def _chart(fig, key: str) -> None:
    ui.show_chart(fig, key=key, filename=key, modebar=False)


def conv(u: dict, prefix: str) -> None:
    c = u["conv"]
    norm = u.get("normalize")
    k = np.asarray(c["kernel"])
    cg, kh, kw = k.shape
    contrib = np.asarray(c["products"]).sum((1, 2))
    rows, cols = c["rows"], c["cols"]
    st.markdown(f"**Convolution · `{c['layer']}`** ({c['type']}, {kh}×{kw} kernel, stride {c['stride'][0]}, "
                f"padding {c['padding'][0]}): output channel {u['channel']} at row {u['y']}, column {u['x']} reads "
                f"rows {rows[0]}…{rows[-1]} and columns {cols[0]}…{cols[-1]} of **all {cg} input channels** "
                "(grey *pad* cells lie outside the image: zero padding). It multiplies each value by the kernel "
                "weight in the same place and adds everything up.")
    options = list(range(cg))
    default = [int(i) for i in np.argsort(-np.abs(contrib), kind="stable")[:3]]
    shown = options if cg <= 3 else st.multiselect(
        f"Input channels shown (of {cg}; preselected: the 3 that add the most)", options, max_selections=4,
        format_func=lambda i: f"channel {c['input_channels'][i]} (adds {contrib[i]:+.3g})",
        **ui.kept(f"{prefix}_inch", default, options))
    mask = np.asarray(c["padding_mask"])
    for i in shown or default[:1]:
        ch = c["input_channels"][i]
        cols_ = st.columns(4 if norm else 3)
        j = 0
        if norm:
            with cols_[0]:
                _chart(draw.grid(np.asarray(norm["raw"])[i], f"pixel values (ch {ch}) in [0, 1]", mask, cell=CELL,
                                 colorscale="Greys"), f"{prefix}_raw_{i}")
                st.caption(f"normalised: (value − {norm['mean'][i]:.4g}) / {norm['std'][i]:.4g}")
            j = 1
        with cols_[j]:
            _chart(draw.grid(np.asarray(c["patch"])[i], f"input patch, channel {ch}", mask, cell=CELL),
                   f"{prefix}_patch_{i}")
        with cols_[j + 1]:
            _chart(draw.grid(k[i], f"kernel weights, channel {ch}", cell=CELL), f"{prefix}_kernel_{i}")
        with cols_[j + 2]:
            _chart(draw.grid(np.asarray(c["products"])[i], f"products (sum {contrib[i]:.4g})", mask, cell=CELL),
                   f"{prefix}_prod_{i}")
    bias = c["bias"]
    st.markdown(f"Sum of all {cg}×{kh}×{kw} = {cg * kh * kw} products = **{f(c['sum'])}**"
                + (f"; plus the bias **{f(bias)}** = **{f(c['result'])}**." if bias is not None else
                   f" (this conv has no bias: a BatchNorm follows) = **{f(c['result'])}**."))
    agree(c)


def batchnorm(s: dict) -> None:
    st.markdown(f"**BatchNorm · `{s['layer']}`** — rescales the value with statistics of the whole training set "
                f"(*{s['statistics']}* mean μ and variance σ²) and two learned numbers γ (scale) and β (shift):")
    st.latex(r"y = \gamma \cdot \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta = "
             rf"{s['gamma']:.4g} \cdot \frac{{{s['input']:.4g} - ({s['mean']:.4g})}}"
             rf"{{\sqrt{{{s['var']:.4g} + {s['eps']:.0e}}}}} + ({s['beta']:.4g}) = "
             rf"{s['gamma']:.4g} \cdot {s['normalized']:.4g} + ({s['beta']:.4g}) = {s['result']:.6g}")
    agree(s)


def activation(s: dict) -> None:
    verdict = " — negative, so it is cut to 0: this unit is *off* for this image." \
        if s["type"] == "ReLU" and s["input"] < 0 else ""
    st.markdown(f"**Activation · `{s['layer']}`** ({s['type']}: `{s['formula']}`) of x = {f(s['input'])} "
                f"= **{f(s['result'])}**{verdict}")
    agree(s)


def pool(s: dict, prefix: str) -> None:
    kh, kw = s["kernel_size"]
    kind = "largest" if "argmax" in s else "average"
    st.markdown(f"**Pooling · `{s['layer']}`** ({s['type']} {kh}×{kw}, stride {s['stride'][0]}): the unit falls in "
                f"the window of pooled output (row {s['window'][0]}, column {s['window'][1]}), which keeps the "
                f"**{kind}** of its {kh * kw} values (black box: our unit; orange box: the maximum).")
    c1, c2 = st.columns([1, 2])
    with c1:
        _chart(draw.grid(s["values"], "the pooling window", s["padding_mask"], mark=s["unit_at"],
                         star=s.get("argmax"), cell=CELL + 6, colorscale="Viridis"), f"{prefix}_pool")
    with c2:
        won = "argmax" in s and tuple(s["argmax"]) == tuple(s["unit_at"])
        st.markdown(f"Pooled value = **{f(s['result'])}**."
                    + (" Our unit is the maximum: its value travels on to the next layer." if won else
                       " Another unit of the window is larger, so ours is dropped here." if "argmax" in s else ""))
        agree(s)


def unit_steps(u: dict, prefix: str) -> None:
    for s in u["steps"]:
        if s["kind"] == "conv":
            conv(u, prefix)
        elif s["kind"] == "batchnorm":
            batchnorm(s)
        elif s["kind"] == "activation":
            activation(s)
        elif s["kind"] == "pool":
            pool(s, prefix)
        if s["kind"] != "normalize":
            st.divider()


def head(h: dict) -> None:
    t = h["class"]
    st.markdown(f"The last layer, **`{h['layer']}`**, reads a vector of {len(h['input'])} numbers (the output of "
                f"`{h['features_from']}`, shape {' × '.join(map(str, h['features_shape']))}). The logit of "
                f"**{t}** is the sum of weight × input over all of them, plus a bias. The largest terms:")
    rows = [{"unit": r["unit"], "input": round(r["input"], 5), "weight": round(r["weight"], 5),
             "weight × input": round(r["contribution"], 5)} for r in h["top"]]
    st.dataframe(rows, hide_index=True, key="fp_head_top", width="stretch")
    bias = h["bias"] or 0.0
    line = (f"top {len(rows)} terms {sum(r['contribution'] for r in h['top']):.5g} + the other "
            f"{len(h['input']) - len(rows)} terms {h['rest']:.5g} = {h['sum']:.5g}; + bias {bias:.5g} = "
            f"{h['fc_output']:.5g}")
    if h["scale"] != 1.0:
        line += f"; × the model's output scale {h['scale']:g}"
    st.markdown(f"{line} → logit of **{t}** = **{h['logit']:.5g}** (the model's own: "
                f"{float(h['model_logits'][h['target']]):.5g}).")
    sm = h["softmax"]
    st.markdown("**Softmax** turns the logits into probabilities: subtract the largest logit (for numerical "
                f"safety; max = {sm['max']:.4g}), take exp of each, divide by their sum "
                f"**Σ exp = {sm['sum']:.5g}**:")
    table = [{"class": c, "logit": round(float(lg), 4), "logit − max": round(float(s), 4),
              "exp(logit − max)": round(float(e), 5), "probability = exp / Σ": f"{100 * float(p):.2f}%",
              "model": f"{100 * float(mp):.2f}%"}
             for c, lg, s, e, p, mp in zip(h["classes"], h["logits"], sm["shifted"], sm["exp"], sm["probs"],
                                           h["model_probs"])]
    st.dataframe(table, hide_index=True, key="fp_softmax", width="stretch")


def _toy_clicked() -> None:
    state = st.session_state.get("fp_toy_out")
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    if points:
        ui.remember("fp_toy_i", int(points[0]["y"]))
        ui.remember("fp_toy_j", int(points[0]["x"]))


def toy_widget() -> None:
    """Kernel size, stride and padding on a toy input: the output size follows; an output cell's window lights up."""
    c1, c2, c3, c4 = st.columns(4)
    size = c1.slider("Input size", 4, 7, **ui.kept("fp_toy_size", 6))
    kernel = c2.slider("Kernel size", 1, 5, **ui.kept("fp_toy_k", 3))
    stride = c3.slider("Stride", 1, 3, **ui.kept("fp_toy_s", 1))
    padding = c4.slider("Padding", 0, 2, **ui.kept("fp_toy_p", 0))
    try:
        out = teaching.toy_output_size(size, kernel, stride, padding)
    except Exception as e:  # noqa: BLE001 - CNNLibError: the kernel does not fit
        st.warning(ui.one_sentence(str(e)))
        return
    st.markdown(f"Output size = ⌊({size} + 2·{padding} − {kernel}) / {stride}⌋ + 1 = **{out} × {out}**")
    toy = teaching.toy(size, kernel, stride, padding)
    i = min(int(ui.value("fp_toy_i", 0)), out - 1)
    j = min(int(ui.value("fp_toy_j", 0)), out - 1)
    cell = toy["cells"][i * out + j]
    (r0, c0), (r1, c1_) = cell["indices"][0], cell["indices"][-1]
    pad = np.ones_like(toy["padded"], bool)
    pad[padding:padding + size, padding:padding + size] = False
    a, b, c = st.columns([3, 2, 3])
    with a:
        _chart(draw.grid(toy["padded"], "input (grey: padding zeros)", pad, cell=34, colorscale="Greys",
                         box=(r0, c0, r1, c1_)), "fp_toy_in")
    with b:
        _chart(draw.grid(toy["kernel"], "kernel", cell=34), "fp_toy_kernel")
    with c:
        ui.show_chart(draw.grid(toy["output"], "output: click a cell", mark=(i, j), cell=34, key_points=True),
                      key="fp_toy_out", filename="toy-output", modebar=False, on_select=_toy_clicked,
                      selection_mode=("points",))
    st.caption(f"Output cell ({i}, {j}) = sum of the orange window × kernel = {cell['value']:g}. "
               "A larger stride skips positions (smaller output); padding adds zeros around so the kernel can "
               "centre on the border pixels (larger output).")
