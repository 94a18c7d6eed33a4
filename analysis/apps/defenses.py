"""Tables 1/2 live: every detector on one attacked model (:class:`DefenseApp`), beside the paper and the committed run.

The detectors of :mod:`analysis.defenses` run through :func:`analysis.comparison.build_detector` and
:func:`analysis.comparison.run_detector_scores` on the inputs the paper's protocol prescribes
(:func:`analysis.apps.shared.evaluation_inputs`: :meth:`analysis.study.Study.redraw`, capped by the same seeded
subsample as :func:`analysis.experiments.tables12_detection`), with budgets small enough for a laptop's CPU.
Results are cached per (architecture, attack), so moving a control back to a setting seen before costs nothing.
The committed full run (``docs/results/<dataset>/tables12.csv``, :mod:`analysis.apps.committed`) is read from the
file, and every panel says which numbers are live and which are committed. Figs. 9/10 live in
:mod:`analysis.apps.stability`, Fig. 11 in :mod:`analysis.apps.runtime`.
"""
from __future__ import annotations

import dataclasses

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from .. import paper_results as paper
from ..comparison import available_defenses, build_detector, paper_cell, paper_key, run_detector_scores
from ..features import predict_classes
from ..metrics import attack_success_rate
from ..models import ARCHITECTURES
from ..plotting import BENIGN_COLOR, LOI_COLOR, POISONED_COLOR, roc_figure
from ..validation import check_choice, check_index
from ..workbench import Workbench
from .base import App, check_model_choice, dropdown
from .committed import committed_table
from .shared import LABELS, evaluation_inputs, page_layout

#: What the heatmap of committed results can show, by control value: column(s) of ``tables12.csv``.
HEAT_METRICS = ("TPR − FPR", "TPR", "FPR", "AUROC")

#: The paper's table for an architecture: ResNet-18 rows sit beside CIFAR-10 (Table 1), MobileNetV2 beside GTSRB (Table 2).
PAPER_TABLES = {"resnet18": ("Table 1, CIFAR-10 ResNet-18", paper.TABLE1_CIFAR10),
                "mobilenetv2": ("Table 2, GTSRB MobileNetV2", paper.TABLE2_GTSRB)}


# ---------------------------------------------------------------------- Tables 1/2
class DefenseApp(App):
    """Tables 1/2: TPR, FPR and AUROC of every detector on one attacked model, live, beside the committed full run.

    Controls: architecture, attack, detector (one of :func:`available_defenses` or ``"all"``), and
    what the heatmap shows. Left panel (live): TPR, FPR and AUROC of every detector on the same
    inputs, the selected one highlighted. Right panel (committed, ``docs/results/<dataset>/tables12.csv``):
    the chosen metric over all attacks × detectors for the architecture, mean over that file's runs.

    Parameters
    ----------
    workbench : the dataset's models.
    arch, attack : the model shown first.
    defense : the detector highlighted first (``"all"``: none).
    defenses : the detectors run (None = :func:`available_defenses`: the paper's seven and ``ac-ref``; any of
        ``available_defenses(include_recent=True)``: also SCALE-UP, IBD-PSC, TED and the layer-wise options).
    max_eval : at most this many benign and this many poisoned inputs (seeded subsamples).
    samples : noisy copies (RS) and blends (STRIP) per input (paper: 100).
    run : the reference redraw (0 = the dataset's own reference/evaluation split).
    heat : the committed metric shown in the heatmap, one of :data:`HEAT_METRICS`.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets",
                 defense: str = "layerwise", *, defenses: tuple[str, ...] | None = None, max_eval: int = 40,
                 samples: int = 10, run: int = 0, heat: str = "TPR − FPR") -> None:
        self.workbench = check_model_choice(workbench, arch, attack)
        known = available_defenses(include_recent=True)
        self.defenses = available_defenses() if defenses is None else tuple(defenses)
        if not self.defenses:
            raise ValueError(f"defenses: expected at least one of {list(known)}, got {defenses!r}")
        for name in self.defenses:
            check_choice(name, "defenses", known)
        check_choice(defense, "defense", ("all",) + self.defenses)
        check_choice(heat, "heat", HEAT_METRICS)
        self.max_eval = check_index(max_eval, "max_eval", 1)
        self.samples = check_index(samples, "samples", 1)
        self.run = check_index(run, "run", 0)
        # the Study's own rule for which setting of RS and STRIP `samples` sets (a copy: the workbench's is untouched)
        self._settings_study = dataclasses.replace(workbench.study, defense_samples=self.samples)
        self._results: dict[tuple[str, str], dict] = {}
        self.committed = committed_table(workbench.data.name, "tables12.csv")
        options = [("all", "all")] + [(LABELS.get(d, d), d) for d in self.defenses]
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture", "200px"),
                          "attack": dropdown(list(workbench.attacks), attack, "attack", "160px"),
                          "defense": dropdown(options, defense, "detector", "230px"),
                          "heat": widgets.ToggleButtons(options=list(HEAT_METRICS), value=heat,
                                                        description="committed",
                                                        style={"button_width": "100px"})})

    # ------------------------------------------------------------------ computation
    def results(self, arch: str, attack: str) -> dict:
        """Every detector on ``(arch, attack)``, computed on first use and cached.

        Returns a dict: ``table`` (DataFrame indexed by detector: TPR, FPR, AUROC in %, seconds),
        ``curves`` (detector -> suspicion scores of the benign and of the poisoned inputs, for :meth:`roc`),
        ``n_benign``, ``n_poisoned``, ``n_reference`` and ``asr`` (% of the poisoned inputs the
        model classifies as the target).
        """
        key = (arch, attack)
        if key not in self._results:
            model, reference, benign, poisoned = evaluation_inputs(self.workbench, arch, attack, self.run, self.max_eval)
            rows, curves = {}, {}
            for name in tqdm(self.defenses, desc=f"{arch} + {attack}", leave=False,
                             disable=not self.workbench.study.progress):
                torch.manual_seed(self.run)
                detector = build_detector(name, seed=self.run, **self._settings_study.detector_settings(name))
                found = run_detector_scores(detector, model.model, reference, benign, poisoned, train=model.data.train)
                rows[name], curves[name] = found.metrics, (found.suspicion_benign, found.suspicion_poisoned)
            self._results[key] = {
                "table": pd.DataFrame.from_dict(rows, orient="index"), "curves": curves, "n_benign": len(benign),
                "n_poisoned": len(poisoned), "n_reference": len(reference),
                "asr": 100 * attack_success_rate(predict_classes(model.model, poisoned), model.attack.target)}
        return self._results[key]

    def roc(self, arch: str | None = None, attack: str | None = None, max_fpr: float = 1.0) -> go.Figure:
        """ROC curves of every detector on the live inputs of ``(arch, attack)`` (default: the controls' values).

        The same run as the left panel (cached); each curve's legend gives its AUROC. ``max_fpr`` < 1 zooms on
        the low-FPR end, where the TPR at FPR <= 1 % or 5 % is read.
        """
        arch, attack = arch or self.controls["arch"].value, attack or self.controls["attack"].value
        found = self.results(arch, attack)
        curves = {LABELS.get(name, name): scores for name, scores in found["curves"].items()}
        fig = roc_figure(curves, f"ROC curves, live: {arch} + {attack} ({found['n_benign']} benign + "
                                 f"{found['n_poisoned']} poisoned inputs, one run)", max_fpr=max_fpr)
        fig.update_layout(height=460)
        return fig

    def committed_grid(self, arch: str, metric: str) -> pd.DataFrame | None:
        """The committed ``metric`` (one of :data:`HEAT_METRICS`) as a table attacks × detectors (None without a file)."""
        if self.committed is None:
            return None
        part = self.committed[self.committed.arch == arch]
        if part.empty:
            return None
        values = part.TPR - part.FPR if metric == "TPR − FPR" else part[metric]
        grid = part.assign(value=values).pivot(index="attack", columns="defense", values="value")
        return grid.loc[[a for a in self.workbench.attacks if a in grid.index],
                        [d for d in self.defenses if d in grid.columns]]

    def _committed_protocol(self, arch: str) -> str:
        part = self.committed[self.committed.arch == arch]
        return (f"{int(part.runs.iloc[0])} runs × {int(part.n_benign.iloc[0])} benign + "
                f"{int(part.n_poisoned.iloc[0])} poisoned inputs")

    def setup_text(self, arch: str | None = None, attack: str | None = None) -> str:
        """One line (plain text): the live budget, the inputs and the model's ASR on them."""
        arch, attack = arch or self.controls["arch"].value, attack or self.controls["attack"].value
        found = self.results(arch, attack)
        split = "the dataset's own reference/evaluation split" if self.run == 0 else f"reference redraw {self.run}"
        return (f"live: {self.workbench.data.name}, {arch} + {attack}, one run on {split}: fit on "
                f"{found['n_reference']} reference images, {found['n_benign']} benign + {found['n_poisoned']} poisoned "
                f"inputs (seeded subsample, at most {self.max_eval} each), RS/STRIP with {self.samples} noisy "
                f"copies/blends per input (paper: 100); ASR on these poisoned inputs {found['asr']:.1f} %")

    # ------------------------------------------------------------------ drawing
    def draw(self, arch: str, attack: str, defense: str, heat: str) -> tuple[go.Figure, str]:
        found = self.results(arch, attack)
        table = found["table"]
        grid = self.committed_grid(arch, heat)
        names = list(table.index)
        labels = [LABELS.get(n, n) for n in names]
        right = (f"committed: {heat} % over attacks × detectors<br>({self._committed_protocol(arch)}, mean)"
                 if grid is not None else f"no committed tables12.csv for {self.workbench.data.name} {arch}")
        fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.14, subplot_titles=(
            f"live: {arch} + {attack}<br>({found['n_benign']} benign + {found['n_poisoned']} poisoned inputs, one run)",
            right))
        opacity = [1.0 if defense in ("all", n) else 0.3 for n in names]
        for metric, color in (("TPR", POISONED_COLOR), ("FPR", BENIGN_COLOR), ("AUROC", LOI_COLOR)):
            fig.add_trace(go.Bar(x=labels, y=table[metric], name=f"{metric} (live)", marker_color=color,
                                 marker_opacity=opacity), 1, 1)
        fig.update_xaxes(title_text="detector", tickangle=-40, row=1, col=1)
        fig.update_yaxes(title_text="%", range=[0, 105], row=1, col=1)
        if grid is not None:
            diverging = heat == "TPR − FPR"
            fig.add_trace(go.Heatmap(z=grid.values, x=[LABELS.get(d, d) for d in grid.columns], y=list(grid.index),
                                     zmin=-100 if diverging else 0, zmax=100,
                                     colorscale="RdBu" if diverging else "Blues", texttemplate="%{z:.0f}",
                                     colorbar=dict(title=f"{heat} %", x=1.02, len=0.8), name="committed"), 1, 2)
            rows = list(grid.index)
            cols = list(grid.columns)
            if attack in rows:
                y0, y1 = rows.index(attack) - 0.5, rows.index(attack) + 0.5
                x0, x1 = ((cols.index(defense) - 0.5, cols.index(defense) + 0.5) if defense in cols
                          else (-0.5, len(cols) - 0.5))
                fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line=dict(color="black", width=3),
                              row=1, col=2)
            fig.update_xaxes(title_text="detector", tickangle=-40, row=1, col=2)
            fig.update_yaxes(title_text="attack", autorange="reversed", row=1, col=2)
        page_layout(fig, 560, f"Tables 1/2 on {self.workbench.data.name}: which detector catches {attack}?", -0.32)
        fig.update_layout(barmode="group")
        return fig, self.readout_html(arch, attack, defense)

    def readout_html(self, arch: str, attack: str, defense: str) -> str:
        """The readout: the live setup, then per selected detector its live, paper and committed numbers."""
        table = self.results(arch, attack)["table"]
        title, paper_table = PAPER_TABLES.get(arch, ("paper", {}))
        lines = [self.setup_text(arch, attack)]
        for name in (self.defenses if defense == "all" else (defense,)):
            row = table.loc[name]
            ptpr, pfpr = paper_cell(paper_table, name, attack)
            base = paper_key(name)
            as_paper = f"paper's {LABELS[base]}" if base not in (None, name) else "paper"
            label = "Ours (the layer-wise detector)" if name == "layerwise" else LABELS.get(name, name)
            paper_part = (f"{as_paper} ({title}): TPR {ptpr:.2f} %, FPR {pfpr:.2f} %" if np.isfinite(ptpr)
                          else "not in the paper")
            line = f"<b>{label}</b>: live TPR {row.TPR:.1f} %, FPR {row.FPR:.1f} %, AUROC {row.AUROC:.1f} %; {paper_part}"
            if self.committed is not None:
                hit = self.committed[(self.committed.arch == arch) & (self.committed.attack == attack)
                                     & (self.committed.defense == name)]
                if len(hit):
                    c = hit.iloc[0]
                    line += (f"; committed: TPR {c.TPR:.1f} ± {c.TPR_std:.1f} %, FPR {c.FPR:.1f} ± {c.FPR_std:.1f} %")
            lines.append(line)
        return "<br>".join(lines)


__all__ = ["DefenseApp", "HEAT_METRICS", "PAPER_TABLES"]
