"""Fig. 1 app: PCA pictures of the latent layer beside any layer, for one attacked model.

:class:`PCAApp` shows two scatter plots of the same inputs (benign evaluation inputs and poisoned
inputs that the model classifies as the attack's target class), each projected on the two
principal components of the reference features at one layer: left the latent layer (the paper's
Fig. 1), right the layer picked with the slider (default: the target class's LOI). Projections
come from :class:`analysis.projection.Projector`, one per model, which computes a layer the first
time it is shown and keeps it.
"""
from __future__ import annotations

import dataclasses

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explore import LayerwiseExplorer
from ..models import ARCHITECTURES
from ..paths import RESULTS_DIR
from ..projection import FITS, Projection, Projector, add_projection, layer_label
from ..workbench import Workbench
from .base import FIGURE_WIDTH, App, check_model_choice, dropdown, percent, slider


#: The columns of Table 5 shown in the notebook: ours beside the paper's.
TABLE5_COLUMNS = ["arch", "defense", "features", "TPR", "FPR", "AUROC", "paper_TPR", "paper_FPR"]


def table5(workbench: Workbench, arch: str = "resnet18") -> pd.DataFrame:
    """Table 5 for one architecture, one run (the dataset's own reference split): AC, SCAn and the layer-wise
    detector on latent vs critical features, our TPR, FPR and AUROC (%) beside the paper's TPR and FPR.

    Runs :func:`analysis.critical_features.table5_features` on the workbench's models; slow on 2 CPU cores
    (minutes: AC and SCAn cluster every evaluation input twice).
    """
    from ..critical_features import table5_features

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {ARCHITECTURES}, got {arch!r}")
    study = dataclasses.replace(workbench.study, archs=(arch,), runs=1)  # shares the workbench's loaded models
    table, _ = table5_features(study)
    return table[TABLE5_COLUMNS].round(1)


def committed_table5(dataset: str = "digits") -> pd.DataFrame | None:
    """The committed Table 5 (``docs/results/<dataset>/table5.csv``, mean over 5 runs), ours beside the paper's
    TPR/FPR (%), or None when this dataset has none."""
    path = RESULTS_DIR / dataset / "table5.csv"
    return pd.read_csv(path)[TABLE5_COLUMNS].round(1) if path.exists() else None


def projection_text(projection: Projection, label: str) -> str:
    """One HTML line: a projection's separability and explained variance."""
    fitted = "reference features" if projection.fit == "reference" else "inputs shown"
    return (f"<b>{label}</b>, {projection.n_features} features: separability {percent(projection.separability)}; "
            f"PC1 + PC2 explain {percent(projection.explained_variance.sum())} of the variance of the {fitted} "
            f"({percent(projection.explained_variance[0])} + {percent(projection.explained_variance[1])})")


def latent_label(projection: Projection, loi: int) -> str:
    """``"latent layer (pool, the classifier's input)"``, or ``"latent = layer 18 (pool, LOI)"``."""
    if projection.layer is None:
        return f"latent layer ({projection.module}, the classifier's input)"
    return f"latent = {layer_label(projection, loi)}"


class PCAApp(App):
    """Fig. 1: PCA of the latent layer (left, fixed) beside the selected layer (right).

    Controls: architecture, attack, layer (1..L of the architecture, default the target class's LOI),
    what the PCA is fitted on (the reference features of all classes, or the inputs shown).
    Readout: the inputs counted, then separability (AUROC of the best straight line through the
    picture, :func:`analysis.projection.separability`) and explained variance at both layers.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets",
                 fit: str = "reference") -> None:
        import ipywidgets as widgets

        check_model_choice(workbench, arch, attack)
        if fit not in FITS:
            raise ValueError(f"fit: expected one of {FITS}, got {fit!r}")
        self.workbench = workbench
        self._projectors: dict[tuple[str, str], Projector] = {}
        explorer = workbench.explorer(arch, attack)
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture"),
                          "attack": dropdown(list(workbench.attacks), attack, "attack"),
                          "layer": slider(self.loi(explorer), 1, explorer.n_layers, 1, "layer", integer=True),
                          "fit": widgets.ToggleButtons(options=[("reference (all classes)", "reference"),
                                                                ("inputs shown", "inputs")],
                                                       value=fit, description="PCA fitted on",
                                                       style={"description_width": "initial", "button_width": "180px"})})

    @staticmethod
    def loi(explorer: LayerwiseExplorer) -> int:
        """The target class's layer of interest (1-indexed)."""
        return int(explorer.detector.loi_[explorer.target])

    def projector(self, arch: str, attack: str) -> Projector:
        """The :class:`Projector` of that model (built once, reusing the explorer's predictions)."""
        key = (arch, attack)
        if key not in self._projectors:
            run, explorer = self.workbench.model(arch, attack), self.workbench.explorer(arch, attack)
            self._projectors[key] = Projector(run.model, run.data.reference, run.data.test, run.poisoned_test,
                                              run.attack.target, benign_predicted=explorer.benign_predicted,
                                              poisoned_predicted=explorer.poisoned_predicted)
        return self._projectors[key]

    def sync_controls(self, changed: str) -> None:
        if changed in ("arch", "attack"):
            explorer = self.workbench.explorer(self.controls["arch"].value, self.controls["attack"].value)
            layer = self.controls["layer"]
            layer.max = max(layer.max, explorer.n_layers)  # widen first so the value never clamps on the way
            layer.value = self.loi(explorer)
            layer.max = explorer.n_layers

    def draw(self, arch: str, attack: str, layer: int, fit: str) -> tuple[go.Figure, str]:
        explorer = self.workbench.explorer(arch, attack)
        projector = self.projector(arch, attack)
        layer = min(layer, projector.n_layers)
        loi, target = self.loi(explorer), projector.target
        latent, selected = projector.project("latent", fit), projector.project(layer, fit)
        left, right = latent_label(latent, loi), f"selected {layer_label(selected, loi)}"
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(left, right))
        add_projection(fig, latent, 1, 1, target=target)
        add_projection(fig, selected, 1, 2, showlegend=False, target=target)
        fig.update_layout(title=f"{arch} + {attack}: PCA of the features of inputs classified as the target class "
                                f"{target}", template="plotly_white", width=FIGURE_WIDTH, height=480,
                          margin=dict(t=90, b=60, l=60, r=20), legend=dict(orientation="h", y=-0.18))
        scored = ", ".join(str(int(i)) for i in explorer.detector.score_layers_[target])
        fitted = (f"{len(projector.reference)} reference inputs of all classes" if fit == "reference"
                  else f"the {latent.n_benign + latent.n_poisoned} inputs shown")
        counts = (f"target class {target}: LOI {loi} of {projector.n_layers}, scored layers {scored}; "
                  f"{latent.n_benign} benign evaluation inputs and {latent.n_poisoned}/{projector.n_poisoned_test} "
                  f"poisoned inputs classified as {target}; PCA fitted on {fitted}")
        text = "<br>".join([counts, projection_text(latent, left), projection_text(selected, right)])
        return fig, text


__all__ = ["PCAApp", "committed_table5", "latent_label", "projection_text", "table5"]
