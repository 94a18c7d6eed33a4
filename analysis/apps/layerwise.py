"""Apps on the layer-wise detector's precomputed explorers: Figs. 2/3/5/6/7/8, Tables 4, 6, 7, 8.

Each app reads :class:`~analysis.explore.LayerwiseExplorer` objects from a
:class:`~analysis.workbench.Workbench`, which builds each (architecture, model) once.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..detector_inputs import check_tau
from ..explore import TAU_MAX, TAU_MIN, TAU_STEP, LayerwiseExplorer
from ..models import ARCHITECTURES
from ..operating_point import tau_label
from ..paper_results import ADAPTIVE_BETAS, TABLE4_RATES
from .. import plotting
from ..plotting import BENIGN_COLOR, LOI_COLOR, POISONED_COLOR, histogram_figure, layerwise_curve_figure
from ..workbench import Workbench
from .base import FIGURE_WIDTH, App, check_model_choice, dropdown, percent, slider

#: The thresholds of every TPR/FPR-over-tau curve: 0.0, 0.1, ..., 4.0.
TAU_GRID = np.round(np.arange(0.0, TAU_MAX + TAU_STEP / 2, TAU_STEP), 6)


def model_layout(fig: go.Figure, height: int, title: str) -> go.Figure:
    """The model apps' common layout: fixed width, title, legend in one row below the lowest axis title.

    Parameters
    ----------
    fig : the figure, changed in place.
    height : its height in pixels.
    title : its title.

    Returns
    -------
    ``fig``, for chaining.
    """
    top, bottom = 90, 120
    fig.update_layout(title=title, template="plotly_white", width=FIGURE_WIDTH, height=height, barmode="overlay",
                      margin=dict(t=top, b=bottom, l=60, r=20),
                      legend=dict(orientation="h", yanchor="top", x=0, y=-70 / (height - top - bottom)))
    return fig


#: The left end (in %) of a log-scale FPR axis: an FPR of 0 is drawn there (:func:`log_fpr`).
FPR_FLOOR = 0.1


def log_fpr(fpr_percent) -> np.ndarray:
    """FPRs in % for a log axis: values under :data:`FPR_FLOOR` (0 among them, which a log axis cannot show) at it."""
    return np.maximum(np.asarray(fpr_percent, dtype=np.float64), FPR_FLOOR)


def model_text(explorer: LayerwiseExplorer) -> str:
    """One HTML line: MA, ASR and the target class's LOI and scored layers."""
    s = explorer.summary()
    return (f"MA {percent(s['ma'])}, ASR {percent(s['asr'])}; target class {s['target']}: LOI {s['loi']} of "
            f"{explorer.n_layers} ({explorer.layer_names[s['loi'] - 1]}), scored layers {s['score_layers']}")


class ModelApp(App):
    """An app whose first controls pick the architecture and the attack of a :class:`Workbench`.

    Parameters
    ----------
    workbench : the dataset's models.
    arch, attack : the model shown first (checked by :func:`~analysis.apps.base.check_model_choice`).
    extra : the app's other controls, name -> widget, in display order after the two dropdowns.
    """

    def __init__(self, workbench: Workbench, arch: str, attack: str, extra: dict) -> None:
        self.workbench = check_model_choice(workbench, arch, attack)
        controls = {"arch": dropdown(list(ARCHITECTURES), arch, "architecture"),
                    "attack": dropdown(list(workbench.attacks), attack, "attack")}
        super().__init__({**controls, **extra})

    def explorer(self) -> LayerwiseExplorer:
        """The explorer of the architecture and attack the controls show now."""
        return self.workbench.explorer(self.controls["arch"].value, self.controls["attack"].value)


class ExplorerApp(ModelApp):
    """Figs. 2/3/7/8: the layer-wise curves of one class, one layer's histograms, the score histogram at tau.

    Controls: architecture, attack, class (default the target), layer (default the class's LOI), tau.
    Panels: mean ± std cosine similarity per layer of benign and poisoned inputs predicted as the
    class (LOI-2..LOI shaded, LOI circled, the selected layer dotted); the similarity histograms at the
    selected layer; the detector's scores of the same inputs with the threshold mu - tau sigma.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets", tau: float = 2.5) -> None:
        check_tau(tau, low=TAU_MIN, high=TAU_MAX)
        self.workbench = workbench
        explorer = workbench.explorer(arch, attack)
        target = explorer.target
        extra = {"class_": dropdown(explorer.classes, target, "class", "140px"),
                 "layer": slider(explorer.detector.loi_[target], 1, explorer.n_layers, 1, "layer", integer=True),
                 "tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")}
        super().__init__(workbench, arch, attack, extra)

    def sync_controls(self, changed: str) -> None:
        if changed in ("arch", "attack"):
            explorer = self.explorer()
            self.controls["class_"].options = explorer.classes
            self.controls["class_"].value = explorer.target
            self.controls["layer"].max = explorer.n_layers
            self.controls["layer"].value = explorer.detector.loi_[explorer.target]
        elif changed == "class_":
            self.controls["layer"].value = self.explorer().detector.loi_[self.controls["class_"].value]

    def draw(self, arch: str, attack: str, class_: int, layer: int, tau: float) -> tuple[go.Figure, str]:
        return explorer_figure(self.workbench.explorer(arch, attack), class_, layer, tau, f"{arch} + {attack}")


def explorer_figure(explorer: LayerwiseExplorer, class_: int, layer: int, tau: float, label: str,
                    module_ticks: bool = False) -> tuple[go.Figure, str]:
    """The figure and readout of :class:`ExplorerApp` for any explorer (also used for a model of one's own).

    Panels: the layer-wise curves of the inputs classified as ``class_`` (LOI-2..LOI shaded, LOI circled,
    ``layer`` dotted), the similarity histograms at ``layer``, the score histogram with mu - tau sigma.
    ``module_ticks`` labels the curves' layers with their module paths too.
    """
    detector = explorer.detector
    layer = min(layer, explorer.n_layers)
    role = " (the attack's target)" if class_ == explorer.target else ""
    fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.16,
                        subplot_titles=(f"cosine similarity to the benign centroids of class {class_}{role}",
                                        f"layer {layer} ({explorer.layer_names[layer - 1]})",
                                        f"detector score (summed over layers {list(detector.score_layers_[class_])})"))
    benign, poisoned = explorer.curves(class_)
    layerwise_curve_figure(benign, poisoned, detector.loi_[class_], detector.score_layers_[class_],
                           selected_layer=layer, fig=fig, row=1, col=1, benign_name=f"benign, predicted {class_}")
    if module_ticks:
        fig.update_xaxes(ticktext=[f"{i}<br>{n}" for i, n in enumerate(explorer.layer_names, start=1)],
                         tickvals=list(range(1, explorer.n_layers + 1)), tickmode="array", row=1, col=1)
    on_benign, on_poisoned = explorer.histogram_data(layer, class_)
    histogram_figure(on_benign, on_poisoned, "", "cosine similarity", fig=fig, row=2, col=1)
    scores_benign, scores_poisoned = explorer.score_distribution(class_)
    plotting.plot_score_distribution(scores_benign, scores_poisoned, explorer.threshold(class_, tau), "",
                                     "summed similarity", threshold_label=f"μ − {tau:.1f}σ", fig=fig, row=2, col=2,
                                     showlegend=False)
    model_layout(fig, 780, f"{label}: inputs the model classifies as class {class_}")
    return fig, f"{model_text(explorer)}<br>{explorer.readout(tau)}<br>{class_text(explorer, class_, tau)}"


def class_text(explorer: LayerwiseExplorer, class_: int, tau: float) -> str:
    """One HTML line on the inputs classified as ``class_`` (the class the figure shows): its LOI, its scored
    layers, and how many of its benign and poisoned inputs the detector flags at ``tau``."""
    detector = explorer.detector
    benign, poisoned = explorer.score_distribution(class_)
    flagged = [int(detector.flag_scores(scores, np.full(len(scores), class_), tau).sum()) for scores in (benign, poisoned)]
    role = " (the attack's target)" if class_ == explorer.target else ""
    loi = int(detector.loi_[class_])
    return (f"<b>class {class_}</b>{role}: LOI {loi} ({explorer.layer_names[loi - 1]}), scored layers "
            f"{list(detector.score_layers_[class_])}; at &tau; = {tau:.1f} flagged {flagged[0]}/{len(benign)} benign "
            f"and {flagged[1]}/{len(poisoned)} poisoned inputs classified {class_}")


class ThresholdApp(ModelApp):
    """Fig. 5 and Table 8: TPR and FPR over tau with the current tau marked, and the ROC curve with the operating point.

    Controls: architecture, attack, metric (cosine, the paper's, or Euclidean, Table 8), tau.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets", tau: float = 2.5,
                 metric: str = "cosine") -> None:
        import ipywidgets as widgets

        extra = {"metric": widgets.ToggleButtons(options=["cosine", "euclidean"], value=metric, description="metric"),
                 "tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")}
        super().__init__(workbench, arch, attack, extra)

    def draw(self, arch: str, attack: str, metric: str, tau: float) -> tuple[go.Figure, str]:
        explorer = self.workbench.explorer(arch, attack, metric=metric)
        sweep = explorer.threshold_sweep(TAU_GRID)
        roc, here = explorer.roc(), explorer.rates(tau)
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
            f"TPR and FPR over the threshold τ (dashed: τ = {tau:.1f})",
            f"ROC curve (AUROC {100 * roc['auroc']:.1f} %), FPR on a log scale"))
        plotting.plot_threshold_sweep(sweep, x_title="τ (standard deviations)", fig=fig, row=1, col=1)
        fig.add_vline(x=tau, line_dash="dash", line_color="black", row=1, col=1)  # labelled in the panel's title
        fig.add_trace(go.Scatter(x=log_fpr(100 * roc["fpr"]), y=100 * roc["tpr"], name="ROC", line_shape="hv",
                                 line=dict(color=LOI_COLOR)), 1, 2)
        fig.add_trace(go.Scatter(x=log_fpr([100 * here["fpr"]]), y=[100 * here["tpr"]], mode="markers",
                                 name=f"τ = {tau:.1f}", marker=dict(size=12, color="black")), 1, 2)
        fig.update_yaxes(range=[-2, 102], row=1, col=1)
        fig.update_xaxes(title_text=f"FPR % (0 drawn at {FPR_FLOOR:g})", type="log", range=[np.log10(FPR_FLOOR), 2],
                         tickvals=[0.1, 0.5, 1, 5, 10, 50, 100], ticktext=["0.1", "0.5", "1", "5", "10", "50", "100"],
                         row=1, col=2)
        fig.update_yaxes(title_text="TPR %", range=[-2, 102], row=1, col=2)
        model_layout(fig, 460, f"{arch} + {attack}, {metric} detector")
        return fig, f"{model_text(explorer)}<br>{explorer.readout(tau)}; AUROC {percent(roc['auroc'])}"


class ScoreApp(ModelApp):
    """Fig. 6: distributions of the summed similarity of benign and poisoned inputs classified as the target, with the threshold."""

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets", tau: float = 2.5) -> None:
        super().__init__(workbench, arch, attack, {"tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")})

    def draw(self, arch: str, attack: str, tau: float) -> tuple[go.Figure, str]:
        explorer = self.workbench.explorer(arch, attack)
        target = explorer.target
        benign, poisoned = explorer.score_distribution(target)
        threshold = explorer.threshold(target, tau)
        fig = plotting.plot_score_distribution(benign, poisoned, threshold, "", f"score: summed similarity at layers "
                                               f"{list(explorer.detector.score_layers_[target])}",
                                               threshold_label=f"μ − {tau:.1f}σ")
        model_layout(fig, 440, f"{arch} + {attack}: scores of inputs classified as the target class {target}")
        below_b, below_p = int(np.sum(benign < threshold)), int(np.sum(poisoned < threshold))
        text = (f"threshold μ − τσ = {threshold:.3f}: {below_p}/{len(poisoned)} poisoned and {below_b}/{len(benign)} "
                f"benign inputs classified as {target} fall below it<br>{explorer.readout(tau)}")
        return fig, text


def variant_table(explorers: dict) -> pd.DataFrame:
    """MA, ASR, TPR and FPR (%, at each detector's tau) and the target's LOI per model variant (index: the dict's keys, sorted)."""
    rows = {}
    for key in sorted(explorers):
        s = explorers[key].model_rates()  # analysis.explore.model_rates, as table4_rates computes each row
        rows[key] = {"MA %": s["MA"], "ASR %": s["ASR"], "TPR %": s["TPR"], "FPR %": s["FPR"], "LOI": s["LOI"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def _variant_figure(explorers: dict, selected, label: str, title: str) -> go.Figure:
    """Curves of the selected variant beside MA, ASR, TPR and FPR (τ of its detector) over all variants."""
    explorer = explorers[selected]
    target = explorer.target
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1, subplot_titles=(
        f"{label} = {selected:g}: similarity to class {target}'s centroids", f"over {label} ({tau_label(explorer.detector, symbol='τ')})"))
    benign, poisoned = explorer.curves(target)
    layerwise_curve_figure(benign, poisoned, explorer.detector.loi_[target], explorer.detector.score_layers_[target],
                           fig=fig, row=1, col=1)
    keys = sorted(explorers)
    table = variant_table(explorers)
    for metric, color in (("MA", "gray"), ("ASR", "orange"), ("TPR", POISONED_COLOR), ("FPR", BENIGN_COLOR)):
        fig.add_trace(go.Scatter(x=[f"{k:g}" for k in keys], y=table[f"{metric} %"], mode="lines+markers",
                                 name=metric, line=dict(color=color)), 1, 2)
    fig.add_vline(x=keys.index(selected), line_dash="dot", line_color="black", row=1, col=2)
    fig.update_xaxes(title_text=label, type="category", row=1, col=2)
    fig.update_yaxes(title_text="%", range=[-2, 102], row=1, col=2)
    return model_layout(fig, 480, title)


class RateApp(App):
    """Table 4: BadNets at poisoning rates 1, 3, 5 and 10 % on the first architecture: ASR, TPR, FPR and curves."""

    def __init__(self, workbench: Workbench, arch: str = "resnet18", rate: float = 0.05) -> None:
        import ipywidgets as widgets

        self.workbench, self.arch = workbench, arch
        rates = sorted(TABLE4_RATES)
        super().__init__({"rate": widgets.ToggleButtons(options=[(f"{100 * r:g} %", r) for r in rates], value=rate,
                                                        description="poisoning rate")})

    def explorers(self) -> dict[float, LayerwiseExplorer]:
        """One explorer per poisoning rate (fraction), BadNets on ``arch``."""
        return {rate: self.workbench.explorer(self.arch, "badnets", rate=rate) for rate in sorted(TABLE4_RATES)}

    def table(self) -> pd.DataFrame:
        """:func:`variant_table` over the rates (index: rate in %)."""
        return variant_table({100 * r: e for r, e in self.explorers().items()}).rename_axis("rate %")

    def draw(self, rate: float) -> tuple[go.Figure, str]:
        explorers = {100 * r: e for r, e in self.explorers().items()}
        fig = _variant_figure(explorers, 100 * rate, "rate %", f"{self.arch} + BadNets at several poisoning rates")
        explorer = explorers[100 * rate]
        return fig, f"rate {100 * rate:g} %: {model_text(explorer)}<br>{explorer.readout()}"


class AdaptiveApp(App):
    """Table 7: the adaptive attack at penalty beta: MA, ASR, TPR, FPR, and the curves it flattens."""

    def __init__(self, workbench: Workbench, arch: str = "resnet18", beta: float = 0.0) -> None:
        import ipywidgets as widgets

        self.workbench = workbench
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture"),
                          "beta": widgets.ToggleButtons(options=[(f"{b:g}", b) for b in ADAPTIVE_BETAS], value=beta,
                                                        description="β")})

    def explorers(self, arch: str | None = None) -> dict[float, LayerwiseExplorer]:
        """One explorer per shipped beta on ``arch`` (default: the selected architecture)."""
        arch = arch or self.controls["arch"].value
        return {b: self.workbench.explorer(arch, "adaptive", beta=b) for b in ADAPTIVE_BETAS}

    def table(self, arch: str | None = None) -> pd.DataFrame:
        """:func:`variant_table` over beta (index: beta)."""
        return variant_table(self.explorers(arch)).rename_axis("beta")

    def draw(self, arch: str, beta: float) -> tuple[go.Figure, str]:
        explorers = self.explorers(arch)
        fig = _variant_figure(explorers, beta, "β", f"{arch}: adaptive attack against the layer-wise detector")
        explorer = explorers[beta]
        return fig, f"β = {beta:g}: {model_text(explorer)}<br>{explorer.readout()}"


class SingleLayerApp(ModelApp):
    """Table 6: TPR and FPR when scoring on one layer only, per layer, beside the LOI rule."""

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "wanet", tau: float = 2.5) -> None:
        super().__init__(workbench, arch, attack, {"tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")})

    def draw(self, arch: str, attack: str, tau: float) -> tuple[go.Figure, str]:
        explorer = self.workbench.explorer(arch, attack)
        table = explorer.single_layer_table(tau)
        labels = [str(i) for i in table.index]
        target = explorer.target
        scored = set(explorer.detector.score_layers_[target])
        fig = go.Figure()
        fig.add_trace(go.Bar(x=labels, y=table["TPR %"], name="TPR", marker_color=POISONED_COLOR))
        fig.add_trace(go.Bar(x=labels, y=table["FPR %"], name="FPR", marker_color=BENIGN_COLOR))
        fig.update_xaxes(title_text=f"layer scored alone (LOI rule: layers {sorted(scored)})", type="category")
        fig.update_yaxes(title_text="%", range=[0, 102])
        model_layout(fig, 440, f"{arch} + {attack}: one layer vs the LOI rule (τ = {tau:.1f})")
        fig.update_layout(barmode="group")
        best = table.drop(index="LOI rule")["TPR %"].idxmax()
        text = (f"best single layer: {best} (TPR {table.loc[best, 'TPR %']:.1f} %, FPR {table.loc[best, 'FPR %']:.1f} %); "
                f"LOI rule (layers {sorted(scored)}): TPR {table.loc['LOI rule', 'TPR %']:.1f} %, "
                f"FPR {table.loc['LOI rule', 'FPR %']:.1f} %")
        return fig, text


__all__ = ["AdaptiveApp", "ExplorerApp", "FPR_FLOOR", "ModelApp", "RateApp", "ScoreApp", "SingleLayerApp", "TAU_GRID",
           "ThresholdApp", "class_text", "explorer_figure", "log_fpr", "model_layout", "model_text", "variant_table"]
