"""Plotly figures of the layer-wise analysis, and a self-contained HTML report."""
from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BENIGN_COLOR", "LOI_COLOR", "PLOTLY_JS", "POISONED_COLOR", "histogram_figure",
           "layerwise_curve_figure", "make_html_offline", "plot_score_distribution", "plot_threshold_sweep",
           "roc_figure", "stability_figure", "write_figure_html", "write_html_report"]

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


def plot_threshold_sweep(sweep: pd.DataFrame, title: str = "Fig. 5: impact of the threshold tau", *,
                         x_title: str = "tau", fig: go.Figure | None = None, row: int | None = None,
                         col: int | None = None) -> go.Figure:
    """Fig. 5 (and Table 8's curves): TPR and FPR over the threshold tau, the plot of :func:`analysis.explore.threshold_sweep`.

    Parameters
    ----------
    sweep : pandas.DataFrame
        Columns ``tau``, ``TPR`` and ``FPR`` (%), as :func:`analysis.explore.threshold_sweep` returns them.
        With columns ``arch`` and ``attack`` (the batch experiment's mean over redraws, one block of rows per
        model), one pair of curves per model, named ``"TPR <arch> <attack>"`` / ``"FPR <arch> <attack>"``,
        with markers, FPR dashed; without them, one pair named ``"TPR"`` / ``"FPR"`` in the poisoned / benign
        colours (the live app's single model).
    title : str
        The title of a standalone figure (ignored when drawing into ``fig``).
    x_title : str
        The x axis title.
    fig, row, col : plotly.graph_objects.Figure, int, int
        Draw into that subplot of ``fig`` (its layout left alone but for the axes titles) instead of a new figure.

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig``, or the new figure.
    """
    standalone = fig is None
    fig = go.Figure() if standalone else fig
    cell = _cell(row, col)
    if {"arch", "attack"} <= set(sweep.columns):
        for (arch, attack), part in sweep.groupby(["arch", "attack"]):
            fig.add_trace(go.Scatter(x=part.tau, y=part.TPR, mode="lines+markers", name=f"TPR {arch} {attack}"), **cell)
            fig.add_trace(go.Scatter(x=part.tau, y=part.FPR, mode="lines+markers", name=f"FPR {arch} {attack}",
                                     line=dict(dash="dash")), **cell)
    else:
        fig.add_trace(go.Scatter(x=sweep.tau, y=sweep.TPR, name="TPR", line=dict(color=POISONED_COLOR)), **cell)
        fig.add_trace(go.Scatter(x=sweep.tau, y=sweep.FPR, name="FPR", line=dict(color=BENIGN_COLOR)), **cell)
    fig.update_xaxes(title_text=x_title, **cell)
    fig.update_yaxes(title_text="%", **cell)
    if standalone:
        fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_score_distribution(benign: np.ndarray, poisoned: np.ndarray, threshold: float | None, title: str = "",
                            x_title: str = "score", *, threshold_label: str = "threshold", fig: go.Figure | None = None,
                            row: int | None = None, col: int | None = None, showlegend: bool = True) -> go.Figure:
    """Fig. 6: the detector's scores of benign and poisoned inputs predicted as one class, and its threshold.

    The plot of :func:`analysis.explore.score_distribution`: overlaid histograms (:func:`histogram_figure`)
    with the threshold ``mu - tau sigma`` dashed.

    Parameters
    ----------
    benign, poisoned : numpy.ndarray
        The scores ``[Nb]`` and ``[Np]`` of the inputs predicted as the class.
    threshold : float or None
        The class's threshold (none drawn when None or not finite).
    title, x_title : str
        The title of a standalone figure, and the x axis title.
    threshold_label : str
        The threshold line's annotation.
    fig, row, col, showlegend :
        As :func:`histogram_figure`: draw into that subplot of ``fig``; ``showlegend`` False hides the entries.

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig``, or the new figure.
    """
    return histogram_figure(benign, poisoned, title, x_title, threshold=threshold, threshold_label=threshold_label,
                            fig=fig, row=row, col=col, showlegend=showlegend)


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, *, fig: go.Figure | None = None,
               row: int | None = None, col: int | None = None, max_fpr: float = 1.0,
               mark_fpr: float | None = None) -> go.Figure:
    """ROC curves, one per detector: ``curves[name] = (suspicion of benign [n], suspicion of poisoned [m])``.

    Each curve is :func:`analysis.metrics.roc_points` of its scores (higher = more suspicious) and its legend
    gives the AUROC (:func:`analysis.metrics.auroc`); a detector whose scores hold NaN or inf (e.g. inputs of
    a class without reference samples) is listed without a curve. ``max_fpr`` < 1 zooms the x axis on the
    low-FPR end, where a deployable detector operates. Dotted: the chance diagonal. ``mark_fpr`` (e.g. 0.01)
    draws a dashed line at that FPR and a dot at each detector's TPR there (:func:`analysis.metrics.tpr_at_fpr`),
    and puts that TPR in the legend. A curve identical to an earlier one (two detectors that share a score and
    differ only in their threshold) is drawn dashed and says so in its legend, rather than hiding under it. A
    standalone figure puts its legend in rows below the axes, so that long entries do not squeeze the plot.
    """
    from .metrics import auroc, roc_points, tpr_at_fpr

    standalone = fig is None
    fig = go.Figure() if standalone else fig
    cell = _cell(row, col)
    drawn: dict[tuple[bytes, bytes], str] = {}  # each curve's points -> the first detector drawn with them
    for name, (benign, poisoned) in curves.items():
        benign, poisoned = np.asarray(benign, dtype=np.float64), np.asarray(poisoned, dtype=np.float64)
        if not (np.all(np.isfinite(benign)) and np.all(np.isfinite(poisoned))):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{name} (no finite scores)"), **cell)
            continue
        fpr, tpr = roc_points(benign, poisoned)
        label = f"{name} (AUROC {100 * auroc(benign, poisoned):.1f}"
        if mark_fpr is not None:
            at_mark = 100 * tpr_at_fpr(benign, poisoned, mark_fpr)
            label += f", TPR {at_mark:.1f} at FPR ≤ {100 * mark_fpr:g} %"
        key = (fpr.tobytes(), tpr.tobytes())
        same_as = drawn.setdefault(key, name)
        line = {}
        if same_as != name:
            label += f"; same curve as {same_as}"
            line = {"line": dict(dash="dash")}
        group = {"legendgroup": name} if mark_fpr is not None else {}  # the line and its dot toggle together
        trace = go.Scatter(x=fpr * 100, y=tpr * 100, mode="lines", line_shape="hv", name=label + ")", **line, **group)
        fig.add_trace(trace, **cell)
        if mark_fpr is not None:
            fig.add_trace(go.Scatter(x=[100 * mark_fpr], y=[at_mark], mode="markers", legendgroup=name,
                                     showlegend=False, marker=dict(size=9), hovertemplate=f"{name}: %{{y:.1f}} %"),
                          **cell)
    fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(dash="dot", color="gray"),
                             name="chance", showlegend=False), **cell)
    if mark_fpr is not None:
        fig.add_trace(go.Scatter(x=[100 * mark_fpr] * 2, y=[0, 101], mode="lines", showlegend=False,
                                 line=dict(dash="dash", color="black", width=1), name=f"FPR {100 * mark_fpr:g} %"), **cell)
    fig.update_xaxes(title_text="FPR % (benign inputs flagged)", range=[0, 100 * max_fpr], **cell)
    fig.update_yaxes(title_text="TPR % (poisoned inputs flagged)", range=[0, 101], **cell)
    if standalone:
        fig.update_layout(title=title, template="plotly_white", margin=dict(b=80 + 22 * len(curves)),
                          legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"))
    return fig


def stability_figure(table: pd.DataFrame, arch: str) -> go.Figure:
    """Figs. 9/10: mean TPR and FPR with std error bars per detector and attack.

    ``table``: one row per (defense, attack) with columns ``TPR``, ``TPR_std``, ``FPR``, ``FPR_std`` (%), as
    :func:`analysis.experiments.tables12_detection` writes them.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("TPR %", "FPR %"))
    for defense, part in table.groupby("defense", sort=False):
        for col, metric in ((1, "TPR"), (2, "FPR")):
            fig.add_trace(go.Bar(x=part.attack, y=part[metric], name=defense, legendgroup=defense,
                                 showlegend=col == 1, error_y=dict(type="data", array=part[f"{metric}_std"])),
                          row=1, col=col)
    fig.update_layout(title=f"Stability over runs ({arch}), mean ± std", barmode="group", template="plotly_white")
    return fig


def write_html_report(path: str | Path, title: str, summary: dict[str, object], figures: Sequence[go.Figure],
                      *, paper: dict[str, object] | None = None, paper_name: str = "paper",
                      captions: Sequence[str] | None = None, intro: str = "") -> Path:
    """One HTML file that opens offline: a summary table and the figures, plotly.js embedded once.

    Parameters
    ----------
    path : the file written (its folder is created).
    title : the page's heading.
    summary : our numbers, one table row per key.
    figures : plotly figures, in order.
    paper : the paper's number per key of ``summary``, shown in a column ``paper_name`` beside ours
        (keys it lacks show "–").
    captions : one paragraph (plain text) under each figure saying what it shows.
    intro : one paragraph (plain text) under the heading.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if captions is not None and len(captions) != len(figures):
        raise ValueError(f"captions: expected one per figure ({len(figures)}), got {len(captions)}")
    header = (f"<tr><th></th><th>ours</th><th>{html.escape(paper_name)}</th></tr>" if paper is not None else "")
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td>"
        + (f"<td>{html.escape(str(paper.get(k, '–')))}</td>" if paper is not None else "") + "</tr>"
        for k, v in summary.items())
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}th,td{text-align:left;padding-right:1.5em}"
        "p.caption{color:#333;margin:0 0 2em 0}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(intro)}</p>" if intro else "",
        f"<table>{header}{rows}</table>",
    ]
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
        if captions is not None:
            parts.append(f"<p class='caption'>{html.escape(captions[i])}</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


#: plotly.js as :func:`write_figure_html` writes it once per folder, beside the HTML files that load it.
PLOTLY_JS = "plotly.min.js"
#: A ``<script src=...>`` tag that loads plotly.js from outside the machine (plotly's ``include_plotlyjs="cdn"``).
_REMOTE_PLOTLY = re.compile(r'<script[^>]*\ssrc="https?://[^"]*plotly[^"]*\.js"[^>]*>\s*</script>')
#: A ``<script src=...>`` tag that loads the ``plotly.min.js`` beside the page (:func:`write_figure_html`).
_OWN_PLOTLY = re.compile(r'<script[^>]*\ssrc="plotly\.min\.js"[^>]*>\s*</script>')


def _write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js`` from the installed plotly package (left alone when it exists)."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLY_JS
    if not path.exists():
        path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def write_figure_html(figure: go.Figure, path: str | Path) -> Path:
    """Write ``figure`` as a standalone HTML page that opens offline.

    The page loads ``plotly.min.js`` from its own folder (written there once, from the installed
    plotly package), so a folder of figures carries plotly.js once and no page fetches anything
    from the internet or holds an absolute path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs="directory", full_html=True)  # plotly copies plotly.min.js once
    return path


def make_html_offline(folder: str | Path) -> list[Path]:
    """Make every HTML page under ``folder`` load plotly.js from one ``folder/plotly.min.js``.

    Two kinds of pages are rewritten; the figures themselves are not touched:

    - pages that load plotly.js from a CDN (written before :func:`write_figure_html` existed,
      ``include_plotlyjs="cdn"``): the remote ``<script>`` tag is replaced by one that loads
      ``folder/plotly.min.js`` by a relative path (e.g. ``../plotly.min.js`` from a subfolder);
    - pages in a subfolder that load their folder's own copy (``src="plotly.min.js"``, as
      :func:`write_figure_html` writes them, e.g. a new ``reproduce`` folder under ``docs/results``)
      when that copy is byte for byte ``folder/plotly.min.js``: they load the shared one instead,
      and the copy, which no page then loads, is deleted. A copy of another plotly.js version is left
      alone with its pages.

    ``folder/plotly.min.js`` is written from the installed plotly package when a page needs it and it is
    missing. Returns the pages rewritten.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"folder: expected a directory, got {str(folder)!r}")
    shared = folder / PLOTLY_JS
    same_as_shared: dict[Path, bool] = {}  # per folder copy, compared once (plotly.js is ~4.7 MB)

    def is_duplicate(copy: Path) -> bool:
        if copy not in same_as_shared:
            same_as_shared[copy] = copy.read_bytes() == _write_plotly_js(folder).read_bytes()
        return same_as_shared[copy]

    rewritten = []
    for page in sorted(path for path in folder.rglob("*.html") if path.is_file()):  # a folder named x.html: no page
        text = page.read_text(encoding="utf-8")
        tag = f'<script charset="utf-8" src="{Path(os.path.relpath(shared, page.parent)).as_posix()}"></script>'
        local, count = _REMOTE_PLOTLY.subn(tag, text)
        copy = page.parent / PLOTLY_JS
        if page.parent != folder and copy.is_file() and _OWN_PLOTLY.search(local) and is_duplicate(copy):
            local, moved = _OWN_PLOTLY.subn(tag, local)
            count += moved
        if count:
            _write_plotly_js(folder)
            page.write_text(local, encoding="utf-8")
            rewritten.append(page)
    for copy in [c for c, duplicate in same_as_shared.items() if duplicate]:
        if not any(_OWN_PLOTLY.search(page.read_text(encoding="utf-8")) for page in copy.parent.glob("*.html")):
            copy.unlink()  # the same bytes as the shared copy, and no page loads it any more
    return rewritten
