"""Pictures and figures of the teaching pages: number grids (Plotly heatmaps with the values written in the
cells), crop boxes, diverging maps, the toy convolution, the layer strip, the sanity-check row."""
from __future__ import annotations

import numpy as np
import pictures
import plotly.graph_objects as go

PAD_COLOUR = "#d9d9d9"


def images(x, size: int) -> list[np.ndarray]:
    """uint8 or [0, 1] images (N, C, H, W) enlarged crisply to about `size` px."""
    return [pictures.enlarge(im, size) for im in np.asarray(x)]


def crop_boxes(padded, offsets, hw, size: int) -> list[np.ndarray]:
    """The padded images with the crop window outlined in yellow (1 px, before enlarging)."""
    out = []
    h, w = int(hw[0]), int(hw[1])
    for im, (dy, dx) in zip(np.asarray(padded), np.asarray(offsets)):
        rgb = np.repeat(im, 3, 0) if im.shape[0] == 1 else im[:3].copy()
        rgb = rgb.transpose(1, 2, 0).copy()
        big = pictures.enlarge(rgb, size)
        f = big.shape[0] / rgb.shape[0]
        y0, x0, y1, x1 = int(dy * f), int(dx * f), int((dy + h) * f) - 1, int((dx + w) * f) - 1
        yellow = np.array([255, 215, 0], np.uint8)
        big = big.copy()
        big[y0:y0 + 2, x0:x1 + 1] = yellow
        big[y1 - 1:y1 + 1, x0:x1 + 1] = yellow
        big[y0:y1 + 1, x0:x0 + 2] = yellow
        big[y0:y1 + 1, x1 - 1:x1 + 1] = yellow
        out.append(big)
    return out


def normalized(x, size: int) -> list[np.ndarray]:
    """Normalised images (N, C, H, W): each image's channels side by side in a diverging map (±3 std)."""
    from cnnlib import viz
    out = []
    for im in np.asarray(x, np.float32):
        v = np.clip((im / 3.0 + 1.0) / 2.0, 0.0, 1.0)                    # -3 -> 0, 0 -> 0.5, +3 -> 1
        tiles = [viz.enlarge(viz.colorize(c, "RdBu_r"), size) for c in v]
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        row = [tiles[0]]
        for t in tiles[1:]:
            row += [gap, t]
        out.append(np.concatenate(row, 1))
    return out


def norm_table(b: dict) -> list[dict]:
    names = ["red", "green", "blue"] if len(b["mean"]) == 3 else [f"channel {i}" for i in range(len(b["mean"]))]
    z = np.asarray(b["normalized"], np.float64)
    return [{"channel": n, "dataset mean (of value/255)": round(float(m), 4), "dataset std": round(float(s), 4),
             "batch mean after": round(float(z[:, i].mean()), 3), "batch std after": round(float(z[:, i].std()), 3)}
            for i, (n, m, s) in enumerate(zip(names, b["mean"], b["std"]))]


# ----------------------------------------------------------------------------- number grids

def fmt(v, digits: int = 3) -> str:
    return "pad" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}g}"


def grid(values, title: str, mask=None, mark=None, star=None, colorscale: str = "RdBu", cell: int = 46,
         digits: int = 3, key_points: bool = False, ticks=None, box=None) -> go.Figure:
    """A small matrix with each value written in its cell; `mask` (bool) cells drawn grey as padding, `mark`
    (i, j) outlined in black, `star` (i, j) outlined in orange. key_points: invisible scatter points over the
    cells (to receive clicks). ticks: (row labels, column labels)."""
    v = np.asarray(values, np.float64)
    h, w = v.shape
    mask = np.zeros_like(v, bool) if mask is None else np.asarray(mask, bool)
    shown = np.where(mask, np.nan, v)
    text = [[("pad" if mask[i, j] else fmt(v[i, j], digits)) for j in range(w)] for i in range(h)]
    vmax = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 1.0
    fig = go.Figure(go.Heatmap(z=shown, text=text, texttemplate="%{text}" if h * w <= 400 else None,
                               colorscale=colorscale, zmid=0, zmin=-vmax or -1, zmax=vmax or 1, showscale=False,
                               hovertemplate="row %{y}, column %{x}: %{z:.4g}<extra></extra>", xgap=1, ygap=1,
                               textfont=dict(size=11 if w <= 7 else 9)))
    for pos, colour in ((mark, "black"), (star, "#ff7f0e")):
        if pos is not None:
            i, j = pos
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                          line=dict(color=colour, width=3))
    if box is not None:                                   # (r0, c0, r1, c1) inclusive: a window
        r0, c0, r1, c1 = box
        fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5,
                      line=dict(color="#ff7f0e", width=4))
    ys, xs = np.nonzero(mask)
    if len(ys):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="square", size=cell * 0.8, color=PAD_COLOUR)))
    if key_points:
        fig.add_trace(go.Scatter(x=[j for i in range(h) for j in range(w)], y=[i for i in range(h) for j in range(w)],
                                 mode="markers", showlegend=False, hovertemplate="click: output cell (%{y}, %{x})"
                                 "<extra></extra>", marker=dict(symbol="square", size=cell * 0.8,
                                                                color="rgba(0,0,0,0)"),
                                 selected=dict(marker=dict(color="rgba(255,165,0,0.35)")),
                                 unselected=dict(marker=dict(opacity=0))))
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False, side="top", constrain="domain",
                     tickmode="array" if ticks else "auto", tickvals=list(range(w)) if ticks else None,
                     ticktext=ticks[1] if ticks else None)
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x",
                     tickmode="array" if ticks else "auto", tickvals=list(range(h)) if ticks else None,
                     ticktext=ticks[0] if ticks else None)
    fig.update_layout(title=dict(text=title, font=dict(size=13), y=0.98, yanchor="top"), height=cell * h + 70,
                      margin=dict(t=52, b=4, l=28, r=4), plot_bgcolor="rgba(0,0,0,0)",
                      clickmode="event+select" if key_points else None)
    return fig


def feature_map(raw, title: str, y: int, x: int) -> go.Figure:
    """One channel's map (h, w) as a clickable heatmap: invisible scatter points over the cells receive the
    clicks; the chosen unit (y, x) is outlined."""
    v = np.asarray(raw, np.float64)
    h, w = v.shape
    fig = go.Figure(go.Heatmap(z=v, colorscale="Viridis", hoverinfo="skip", colorbar=dict(thickness=10)))
    px = max(6, min(28, int(380 / max(h, w))))
    points = go.Scattergl if h * w > 2500 else go.Scatter     # a 112 x 112 map's 12,544 SVG targets took seconds to draw
    fig.add_trace(points(
        x=[j for i in range(h) for j in range(w)], y=[i for i in range(h) for j in range(w)],
        customdata=[float(v[i, j]) for i in range(h) for j in range(w)], mode="markers", showlegend=False,
        marker=dict(symbol="square", size=int(px * 0.9), color="rgba(0,0,0,0)"),
        selected=dict(marker=dict(color="rgba(255,165,0,0.45)")), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="row %{y}, column %{x}: %{customdata:.4g}<extra>click to write this unit out</extra>"))
    fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, line=dict(color="#ff2d2d", width=3))
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False, constrain="domain", title_text="column")
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x", title_text="row")
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=px * h + 110,
                      margin=dict(t=40, b=10, l=10, r=10), clickmode="event+select", plot_bgcolor="rgba(0,0,0,0)")
    return fig


def probability_bar(classes, probs, predicted: int, height_per: int = 22) -> go.Figure:
    order = list(np.argsort(probs)[::-1][:10])[::-1]
    fig = go.Figure(go.Bar(x=[float(probs[i]) for i in order], y=[classes[i] for i in order], orientation="h",
                           marker_color=["#d62728" if i == predicted else "#1f77b4" for i in order],
                           text=[f"{100 * probs[i]:.1f}%" for i in order], textposition="auto", cliponaxis=False))
    fig.update_layout(height=60 + height_per * len(order), margin=dict(t=10, b=10, l=5, r=30),
                      xaxis=dict(range=[0, 1], tickformat=".0%"))
    return fig
