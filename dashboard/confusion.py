"""The confusion matrix at any class count, as a figure a browser can draw and a person can read.

Up to OVERVIEW_ABOVE classes the matrix is drawn whole, in class order, one cell per pair. Above that the
classes are ordered by similarity (compute.class_order: classes the model confuses sit side by side) and the
page shows either the **overview** (the ordered matrix summed into at most SIDE x SIDE blocks of neighbouring
classes) or a **zoom** (SIDE rows by SIDE columns of single classes, around a chosen true and predicted class).
Either way a figure holds at most SIDE x SIDE heatmap cells plus as many invisible click targets: the whole
1,000 x 1,000 matrix is never sent to the browser (the CSV download has it)."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

import ui

OVERVIEW_ABOVE = 30       # classes: above this, similarity order and overview / zoom
SIDE = 60                 # the most rows (and columns) one drawn matrix holds


def blocks(k: int) -> tuple[int, int]:
    """(classes per block, number of blocks) of the overview of k classes."""
    size = max(1, math.ceil(k / SIDE))
    return size, math.ceil(k / size)


def window(k: int, position: int, start: int | None) -> int:
    """The first ordered position of a SIDE-wide window that shows `position`: `start` when it already does
    (a click inside the zoom must not move the matrix under the pointer), else one centred on it."""
    if k <= SIDE:
        return 0
    if start is not None and 0 <= start <= k - SIDE and start <= position < start + SIDE:
        return start
    return int(min(max(position - SIDE // 2, 0), k - SIDE))


def overview(cm: np.ndarray, order: np.ndarray, mistakes_only: bool) -> dict:
    """The similarity-ordered matrix summed into blocks: counts (B, B), row share (B, B), and per block its
    ordered class range and per block pair its largest off-diagonal cell (true, pred) in class indices."""
    k = len(order)
    size, nb = blocks(k)
    m = cm[np.ix_(order, order)].astype(np.int64)
    if mistakes_only:
        np.fill_diagonal(m, 0)
    pad = nb * size - k
    mp = np.pad(m, ((0, pad), (0, pad)))
    counts = mp.reshape(nb, size, nb, size).sum(axis=(1, 3))
    rows = cm[order].sum(1)
    support = np.pad(rows, (0, pad)).reshape(nb, size).sum(1)
    share = np.divide(counts, support[:, None], out=np.zeros(counts.shape), where=support[:, None] > 0)
    off = cm[np.ix_(order, order)].astype(np.int64)
    np.fill_diagonal(off, -1)
    offp = np.pad(off, ((0, pad), (0, pad)), constant_values=-2).reshape(nb, size, nb, size).transpose(0, 2, 1, 3)
    best = offp.reshape(nb, nb, size * size).argmax(2)
    bi, bj = np.divmod(best, size)
    top_t = order[np.minimum(np.arange(nb)[:, None] * size + bi, k - 1)]
    top_p = order[np.minimum(np.arange(nb)[None, :] * size + bj, k - 1)]
    ranges = [(b * size, min(k, (b + 1) * size)) for b in range(nb)]
    return {"counts": counts, "share": share, "top_true": top_t, "top_pred": top_p, "ranges": ranges,
            "size": size}


def _layout(fig, n_rows: int, n_cols: int, ticks: bool) -> None:
    fig.update_xaxes(title_text="predicted class", tickangle=-90 if n_cols > 20 else -45 if n_cols > 6 else 0, range=[-0.5, n_cols - 0.5],
                     showgrid=False, zeroline=False, showticklabels=ticks, tickfont=dict(size=10 if n_cols > 20 else 12))
    fig.update_yaxes(title_text="true class", range=[n_rows - 0.5, -0.5], showgrid=False, zeroline=False,
                     showticklabels=ticks, tickfont=dict(size=10 if n_rows > 20 else 12))
    fig.update_layout(height=max(380, min(900, 40 * n_rows + 180)), margin=dict(t=10, b=10, l=10, r=10),
                      clickmode="event+select", plot_bgcolor="rgba(0,0,0,0)")


def _targets(n_rows: int, n_cols: int, custom: list, hover: str, size: int):
    """One invisible square per drawn cell at integer positions: plotly reports clicks on these points."""
    return go.Scatter(x=[j for i in range(n_rows) for j in range(n_cols)],
                      y=[i for i in range(n_rows) for j in range(n_cols)], customdata=custom, mode="markers",
                      showlegend=False, hovertemplate=hover,
                      marker=dict(symbol="square", size=size, color="rgba(0,0,0,0)"),
                      selected=dict(marker=dict(color="rgba(255,165,0,0.45)")),
                      unselected=dict(marker=dict(opacity=0)))


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


def cells_figure(cm: np.ndarray, cmn: np.ndarray, classes: list[str], rows: np.ndarray, cols: np.ndarray,
                 normalized: bool, mistakes_only: bool = False, mark: tuple | None = None) -> go.Figure:
    """Single-class cells: rows `rows` (true classes) by columns `cols` (predicted), at most SIDE x SIDE, with
    the cell `mark` (true, predicted) outlined when shown. Click targets carry [count, row share, true index,
    predicted index, 0]."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    sub = (cmn if normalized else cm)[np.ix_(rows, cols)]
    counts, shares = cm[np.ix_(rows, cols)], cmn[np.ix_(rows, cols)]
    if mistakes_only:
        sub = sub.astype(float)
        sub[rows[:, None] == cols[None, :]] = np.nan           # the correct answers left out: mistakes stand out
    n_r, n_c = len(rows), len(cols)
    few = n_r <= 20 and n_c <= 20
    text = [[(ui.pct(v) if normalized else f"{int(v):d}") if v == v else "" for v in row] for row in sub.tolist()]
    heat = go.Heatmap(z=sub, x=list(range(n_c)), y=list(range(n_r)), colorscale="Blues", hoverinfo="skip",
                      text=text if few else None, texttemplate="%{text}" if few else None,
                      zmin=0, zmax=1 if normalized and not mistakes_only else None,
                      colorbar=dict(title="share" if normalized else "images"))
    custom = [[int(counts[i, j]), float(shares[i, j]), int(rows[i]), int(cols[j]), 0]
              for i in range(n_r) for j in range(n_c)]
    cell = max(6, min(60, int(430 / max(n_r, n_c))))
    names_r, names_c = [classes[i] for i in rows], [classes[j] for j in cols]
    target = _targets(n_r, n_c, custom, "", int(cell * 0.9))
    target.update(text=[f"true <b>{names_r[i]}</b>, predicted <b>{names_c[j]}</b>" for i in range(n_r)
                        for j in range(n_c)],
                  hovertemplate=f"%{{text}}<br>%{{customdata[0]}} images (%{{customdata[1]:{ui.PCT_D3}}} of the row)"
                                "<extra>click to see them</extra>")
    fig = go.Figure([heat, target])
    _layout(fig, n_r, n_c, ticks=True)
    fig.update_xaxes(tickmode="array", tickvals=list(range(n_c)), ticktext=[_short(c) for c in names_c])
    fig.update_yaxes(tickmode="array", tickvals=list(range(n_r)), ticktext=[_short(c) for c in names_r])
    if mark is not None and mark[0] in rows and mark[1] in cols:
        i, j = int(np.flatnonzero(rows == mark[0])[0]), int(np.flatnonzero(cols == mark[1])[0])
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="#d62728", width=2))
    return fig


def overview_figure(ov: dict, classes: list[str], order: np.ndarray, normalized: bool) -> go.Figure:
    """The block overview. Click targets carry [count, row share, largest cell's true, its predicted, 1]."""
    z = ov["share"] if normalized else ov["counts"]
    nb = len(ov["ranges"])
    label = [f"{_short(classes[order[a]], 14)} +{b - a - 1}" if b - a > 1 else _short(classes[order[a]], 14)
             for a, b in ov["ranges"]]
    heat = go.Heatmap(z=z, x=list(range(nb)), y=list(range(nb)), colorscale="Blues", hoverinfo="skip",
                      colorbar=dict(title="share" if normalized else "images"))
    custom = [[int(ov["counts"][i, j]), float(ov["share"][i, j]), int(ov["top_true"][i, j]),
               int(ov["top_pred"][i, j]), 1] for i in range(nb) for j in range(nb)]
    first_last = [f"{classes[order[a]]} … {classes[order[b - 1]]}" if b - a > 1 else classes[order[a]]
                  for a, b in ov["ranges"]]
    target = _targets(nb, nb, custom, "", max(6, int(430 / nb * 0.9)))
    target.update(text=[f"true <b>{first_last[i]}</b><br>predicted <b>{first_last[j]}</b>" for i in range(nb)
                        for j in range(nb)],
                  hovertemplate=f"%{{text}}<br>%{{customdata[0]}} images (%{{customdata[1]:{ui.PCT_D3}}} of these "
                                "rows)<extra>click to zoom in</extra>")
    fig = go.Figure([heat, target])
    _layout(fig, nb, nb, ticks=True)
    fig.update_xaxes(tickmode="array", tickvals=list(range(0, nb, 2)), ticktext=label[::2],
                     title_text=f"predicted class (blocks of {ov['size']} similar classes)")
    fig.update_yaxes(tickmode="array", tickvals=list(range(0, nb, 2)), ticktext=label[::2],
                     title_text=f"true class (blocks of {ov['size']} similar classes)")
    return fig


def most_confused(cm: np.ndarray, classes: list[str], top: int = 200) -> list[dict]:
    """The `top` off-diagonal cells with the most images, largest first, with both directions' counts."""
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    support = cm.sum(1)
    out = []
    for f in flat.tolist():
        t, p = divmod(int(f), cm.shape[1])
        if off[t, p] <= 0:
            break
        out.append({"true class": classes[t], "predicted as": classes[p], "images": int(off[t, p]),
                    "share of the true class": 100 * off[t, p] / max(int(support[t]), 1),
                    "the other way round": int(off[p, t])})
    return out
