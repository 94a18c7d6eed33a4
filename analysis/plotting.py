"""Plotly figures of the layer-wise analysis, and a self-contained HTML report."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

BENIGN_COLOR = "#2ca02c"
POISONED_COLOR = "#d62728"
LOI_COLOR = "#1f77b4"


def _cell(row: int | None, col: int | None) -> dict:
    """``row``/``col`` keyword arguments for a subplot, or none for a plain figure."""
    return {} if row is None else {"row": row, "col": col}


def layerwise_curve_figure(
    benign: np.ndarray,
    poisoned: np.ndarray,
    loi: int,
    score_layers: Sequence[int] | None = None,
    title: str = "Layer-wise cosine similarity to the target class's benign centroids",
    selected_layer: int | None = None,
    *,
    fig: go.Figure | None = None,
    row: int | None = None,
    col: int | None = None,
    benign_name: str = "benign (target class)",
) -> go.Figure:
    """Mean ± std per layer of ``[N, L]`` similarity matrices (Fig. 2): benign target-class vs poisoned.

    The layers scored (LOI-2..LOI by default) are shaded and the LOI circled. With ``fig``, ``row``
    and ``col`` the curves are drawn into that subplot of ``fig`` (``title`` becomes its axis title's
    context and the figure's layout is left alone); otherwise a new figure is returned.
    """
    standalone = fig is None
    fig = go.Figure() if standalone else fig
    cell = _cell(row, col)
    n_layers = benign.shape[1]
    layers = np.arange(1, n_layers + 1)
    for name, values, color in ((benign_name, benign, BENIGN_COLOR), ("poisoned", poisoned, POISONED_COLOR)):
        if len(values) == 0:
            continue
        mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
        fig.add_trace(
            go.Scatter(x=layers, y=mean, mode="lines+markers", name=f"{name} (n={len(values)})",
                       line=dict(color=color), error_y=dict(type="data", array=std, visible=True, thickness=1)),
            **cell,
        )
    scored = list(score_layers) if score_layers is not None else [loi - 2, loi - 1, loi]
    fig.add_vrect(x0=min(scored) - 0.4, x1=max(scored) + 0.4, fillcolor=LOI_COLOR, opacity=0.12, line_width=0,
                  annotation_text="scored layers", annotation_position="top left", **cell)
    if len(benign):
        fig.add_trace(go.Scatter(x=[loi], y=[float(np.nanmean(benign[:, loi - 1]))], mode="markers", name=f"LOI = {loi}",
                                 marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(color=LOI_COLOR, width=3))),
                      **cell)
    if selected_layer is not None:
        fig.add_vline(x=selected_layer, line_dash="dot", line_color="gray", **cell)
    fig.update_xaxes(title_text="layer (1 = first block)", tickmode="linear", dtick=1, **cell)
    fig.update_yaxes(title_text="cosine similarity", **cell)
    if standalone:
        fig.update_layout(title=title, template="plotly_white", legend=dict(x=0.01, y=0.01))
    return fig


def histogram_figure(
    benign: np.ndarray, poisoned: np.ndarray, title: str, x_title: str, threshold: float | None = None,
    *, fig: go.Figure | None = None, row: int | None = None, col: int | None = None,
    threshold_label: str = "threshold", showlegend: bool = True,
) -> go.Figure:
    """Overlaid histograms of a per-input quantity for benign and poisoned inputs, with an optional threshold line.

    With ``fig``, ``row`` and ``col`` they are drawn into that subplot (legend entries grouped per subplot).
    """
    standalone = fig is None
    fig = go.Figure() if standalone else fig
    cell = _cell(row, col)
    group = f"hist{row}{col}"
    fig.add_trace(go.Histogram(x=benign, name=f"benign (n={len(benign)})", marker_color=BENIGN_COLOR, opacity=0.6,
                               histnorm="probability", legendgroup=group, showlegend=showlegend), **cell)
    fig.add_trace(go.Histogram(x=poisoned, name=f"poisoned (n={len(poisoned)})", marker_color=POISONED_COLOR,
                               opacity=0.6, histnorm="probability", legendgroup=group, showlegend=showlegend), **cell)
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=threshold, line_dash="dash", line_color="black", annotation_text=threshold_label, **cell)
    fig.update_xaxes(title_text=x_title, **cell)
    fig.update_yaxes(title_text="share of inputs", **cell)
    if standalone:
        fig.update_layout(title=title, barmode="overlay", template="plotly_white")
    return fig


def image_grid_figure(benign: np.ndarray, poisoned: np.ndarray, title: str = "benign (top) vs poisoned (bottom)") -> go.Figure:
    """Two rows of images ``[n, 3, H, W]`` in [0, 1] (Fig. 4 gallery)."""
    from plotly.subplots import make_subplots

    n = len(benign)
    fig = make_subplots(rows=2, cols=n, horizontal_spacing=0.01, vertical_spacing=0.02)
    for row, images in enumerate((benign, poisoned), start=1):
        for col in range(n):
            rgb = (np.clip(np.transpose(np.asarray(images[col]), (1, 2, 0)), 0, 1) * 255).astype(np.uint8)
            fig.add_trace(go.Image(z=rgb), row=row, col=col + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10), height=260)
    return fig


def write_html_report(path: str | Path, title: str, summary: dict[str, object], figures: Sequence[go.Figure]) -> Path:
    """One HTML file: a summary table and the figures (plotly.js embedded once, so it opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}th{text-align:left;padding-right:1em}</style>",
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>",
    ]
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
