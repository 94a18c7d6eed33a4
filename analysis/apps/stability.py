"""Figs. 9/10 live: the layer-wise detector's TPR and FPR over reference redraws (:class:`StabilityApp`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from ..comparison import build_detector
from ..detector_inputs import check_tau
from ..metrics import attack_success_rate, false_positive_rate, true_positive_rate
from ..models import ARCHITECTURES
from ..plotting import LOI_COLOR, stability_figure
from ..validation import check_choice, check_index
from ..workbench import Workbench
from .base import App, check_model_choice, dropdown, slider
from .committed import committed_table
from .shared import evaluation_inputs, page_layout


class StabilityApp(App):
    """Figs. 9/10: the layer-wise detector's TPR and FPR, mean ± std over reference redraws, per attack.

    Run ``r`` (``r = 0 .. runs-1``) refits the detector on :meth:`Study.redraw` ``(r)``'s reference set
    and scores that run's evaluation inputs (the rest, capped at ``max_eval`` benign and poisoned
    inputs as in Tables 1/2). Scores are cached per (architecture, attack, run): raising the number
    of runs computes only the new runs, and moving τ re-thresholds the cached scores.

    Parameters
    ----------
    workbench : the dataset's models.
    arch : the architecture shown first.
    runs : the number of redraws shown first (1..10).
    tau : the detector's threshold (standard deviations).
    max_eval : at most this many benign and this many poisoned inputs per run (None = all).
    attacks : the attacks shown (None = all of the workbench's).
    """

    MAX_RUNS = 10
    slow_controls = ("arch", "runs")  # each new (architecture, run) fits a detector per attack

    def __init__(self, workbench: Workbench, arch: str = "resnet18", runs: int = 3, tau: float = 2.5,
                 max_eval: int | None = 50, attacks: tuple[str, ...] | None = None) -> None:
        self.workbench = check_model_choice(workbench, arch)
        self.attacks = tuple(workbench.attacks) if attacks is None else tuple(attacks)
        if not self.attacks:
            raise ValueError(f"attacks: expected at least one of {list(workbench.attacks)}, got {attacks!r}")
        for attack in self.attacks:
            check_choice(attack, "attacks", workbench.attacks)
        check_index(runs, "runs", 1, self.MAX_RUNS)
        check_tau(tau, high=4.0)
        self.max_eval = None if max_eval is None else check_index(max_eval, "max_eval", 1)
        self._runs: dict[tuple[str, str, int], dict] = {}
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture", "200px"),
                          "runs": slider(runs, 1, self.MAX_RUNS, 1, "reference redraws", integer=True),
                          "tau": slider(float(tau), 0.0, 4.0, 0.1, "τ")})

    # ------------------------------------------------------------------ computation
    def run_result(self, arch: str, attack: str, run: int) -> dict:
        """Run ``run`` of ``(arch, attack)``: the fitted detector and its raw scores, computed once.

        Returns a dict: ``detector`` (the fitted :class:`~analysis.detection.LayerwiseDetector`),
        ``scores`` and ``predicted`` ``[n_benign + n_poisoned]`` (benign first), ``n_benign`` and
        ``asr`` (% of poisoned inputs classified as the target).
        """
        key = (arch, attack, run)
        if key not in self._runs:
            model, reference, benign, poisoned = evaluation_inputs(self.workbench, arch, attack, run, self.max_eval)
            detector = build_detector("layerwise", seed=run).fit(model.model, reference)
            found = detector.detect(model.model, torch.cat([benign.x, poisoned.x]))
            self._runs[key] = {"detector": detector, "scores": found.scores, "predicted": found.predicted,
                               "n_benign": len(benign), "n_poisoned": len(poisoned),
                               "asr": 100 * attack_success_rate(found.predicted[len(benign):], model.attack.target)}
        return self._runs[key]

    def per_run(self, arch: str, runs: int, tau: float) -> pd.DataFrame:
        """TPR and FPR (%) at ``tau`` of every attack and run ``0 .. runs-1``: columns attack, run, TPR, FPR, ASR."""
        needed = [(a, r) for a in self.attacks for r in range(runs) if (arch, a, r) not in self._runs]
        for attack, run in tqdm(needed, desc=f"{arch}: redraws", leave=False, disable=not self.workbench.study.progress):
            self.run_result(arch, attack, run)
        rows = []
        for attack in self.attacks:
            for run in range(runs):
                found = self.run_result(arch, attack, run)
                flagged = found["detector"].flag_scores(found["scores"], found["predicted"], tau)
                n = found["n_benign"]
                rows.append({"attack": attack, "run": run, "TPR": 100 * true_positive_rate(flagged[n:]),
                             "FPR": 100 * false_positive_rate(flagged[:n]), "ASR": found["asr"]})
        return pd.DataFrame(rows)

    def summary(self, arch: str, runs: int, tau: float) -> pd.DataFrame:
        """Per attack: TPR, TPR_std, FPR, FPR_std (population std over runs, as Tables 1/2) and the mean ASR."""
        table = self.per_run(arch, runs, tau)
        out = table.groupby("attack", sort=False).agg(
            TPR=("TPR", "mean"), TPR_std=("TPR", lambda v: np.std(v)), FPR=("FPR", "mean"),
            FPR_std=("FPR", lambda v: np.std(v)), ASR=("ASR", "mean")).reset_index()
        out.insert(1, "defense", "layerwise")
        return out

    def committed_summary(self, arch: str) -> pd.DataFrame | None:
        """The layer-wise rows of the committed ``tables12.csv`` for ``arch`` (τ = 2.5): attack, TPR, TPR_std, FPR, FPR_std, runs."""
        table = committed_table(self.workbench.data.name, "tables12.csv")
        if table is None:
            return None
        part = table[(table.arch == arch) & (table.defense == "layerwise") & table.attack.isin(self.attacks)]
        return part[["attack", "TPR", "TPR_std", "FPR", "FPR_std", "runs", "n_benign", "n_poisoned"]].reset_index(drop=True)

    # ------------------------------------------------------------------ drawing
    def draw(self, arch: str, runs: int, tau: float) -> tuple[go.Figure, str]:
        table = self.summary(arch, runs, tau)
        raw = self.per_run(arch, runs, tau)
        fig = stability_figure(table, arch)
        fig.update_traces(selector=dict(type="bar"), name="mean ± std", marker_color=LOI_COLOR, opacity=0.6)
        for col, metric in ((1, "TPR"), (2, "FPR")):
            fig.add_trace(go.Scatter(x=raw.attack, y=raw[metric], mode="markers", name="one run",
                                     legendgroup="runs", showlegend=col == 1,
                                     marker=dict(color="black", size=6, symbol="circle-open")), 1, col)
            fig.update_xaxes(title_text="attack", row=1, col=col)
            fig.update_yaxes(title_text=f"{metric} %", range=[0, 105], row=1, col=col)
        inputs = ("all evaluation inputs" if self.max_eval is None
                  else f"at most {self.max_eval} benign + {self.max_eval} poisoned inputs")
        page_layout(fig, 460, f"Figs. 9/10 on {self.workbench.data.name}: layer-wise detector ({arch}), τ = {tau:.1f}, "
                          f"{runs} reference redraw{'s' if runs > 1 else ''}<br>"
                          f"<sup>{inputs} per run; "
                          f"bars: mean, error bars: std, circles: single runs</sup>")
        lines = [f"{arch}, τ = {tau:.1f}, runs 0..{runs - 1} (run 0 = the dataset's own split), "
                 f"std over runs (population):"]
        for row in table.itertuples():
            note = " (no backdoor learned here: the 'poisoned' inputs are ordinary ones)" if row.ASR < 50 else ""
            lines.append(f"{row.attack}: TPR {row.TPR:.1f} ± {row.TPR_std:.1f} %, FPR {row.FPR:.1f} ± "
                         f"{row.FPR_std:.1f} %; ASR {row.ASR:.1f} %{note}")
        return fig, "<br>".join(lines)


__all__ = ["StabilityApp"]
