"""Apps comparing the detectors: Tables 1/2 (:class:`DefenseApp`), Figs. 9/10 (:class:`StabilityApp`), Fig. 11 (:class:`RuntimeApp`).

Everything live runs the detectors of :mod:`analysis.defenses` through
:func:`analysis.comparison.build_detector` and :func:`analysis.comparison.run_detector_scores` on the
inputs the paper's protocol prescribes (:meth:`analysis.study.Study.redraw`, capped by the
same seeded subsample as :func:`analysis.experiments.tables12_detection`), with budgets small enough
for a laptop's CPU. Results are cached per (architecture, attack[, run]), so moving a control back
to a setting seen before costs nothing. Committed results of the full runs
(``docs/results/<dataset>/tables12.csv``, ``fig11.csv``, ``docs/results/defense_runtime*.md``) are
read from the files, and every panel says which numbers are live and which are committed.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from .. import paper_results as paper
from ..comparison import VARIANTS, _cap, _paper_cell, available_defenses, build_detector, run_detector_scores
from ..experiments import detector_runtime, stability_figure
from ..data import LabeledImages
from ..detector_inputs import check_tau
from ..features import predict_classes
from ..metrics import attack_success_rate, false_positive_rate, true_positive_rate
from ..models import ARCHITECTURES
from ..paths import RESULTS_DIR
from ..plotting import BENIGN_COLOR, LOI_COLOR, POISONED_COLOR, roc_figure
from ..workbench import Workbench
from .base import FIGURE_WIDTH, App, check_model_choice, dropdown, slider

#: Display names of the detectors (the paper's abbreviations; ``ac-ref`` is AC with the reference criterion).
LABELS = {"rs": "RS", "shrinkpad": "ShPd", "fp": "FP", "ac": "AC", "strip": "STRIP", "scan": "SCAn",
          "layerwise": "Ours", "ac-ref": "AC-ref", "scale-up": "SCALE-UP", "ibd-psc": "IBD-PSC", "ted": "TED",
          "layerwise-trajectory": "Ours, trajectory", "layerwise-trajectory-fpr5": "Ours, trajectory @5%"}

#: What the heatmap of committed results can show, by control value: column(s) of ``tables12.csv``.
HEAT_METRICS = ("TPR − FPR", "TPR", "FPR", "AUROC")

#: The paper's table for an architecture: ResNet-18 rows sit beside CIFAR-10 (Table 1), MobileNetV2 beside GTSRB (Table 2).
PAPER_TABLES = {"resnet18": ("Table 1, CIFAR-10 ResNet-18", paper.TABLE1_CIFAR10),
                "mobilenetv2": ("Table 2, GTSRB MobileNetV2", paper.TABLE2_GTSRB)}


def _layout(fig: go.Figure, height: int, title: str, legend_y: float = -0.2) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", width=FIGURE_WIDTH, height=height,
                      margin=dict(t=100, b=60, l=60, r=20), legend=dict(orientation="h", y=legend_y))
    return fig


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name}: expected an integer {bounds}, got {value!r}")
    return int(value)


def _check_choice(value, name: str, options) -> None:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")


def evaluation_inputs(workbench: Workbench, arch: str, attack: str, run: int, max_eval: int | None):
    """The inputs of run ``run`` as :func:`analysis.experiments.tables12_detection` draws them.

    Parameters
    ----------
    workbench : where the model and the dataset come from.
    arch, attack : the attacked model.
    run : the reference redraw (:meth:`Study.redraw`; 0 = the dataset's own split).
    max_eval : cap on benign and on poisoned inputs (seeded subsamples, seeds ``1000 + run`` and
        ``2000 + run`` as in Tables 1/2); None = all.

    Returns
    -------
    ``(model, reference, benign, poisoned)``: the ``AttackedModel`` and three ``LabeledImages``
    (poisoned = the benign evaluation images of non-target classes with the trigger, true labels kept).
    """
    model = workbench.model(arch, attack)
    reference, benign = workbench.study.redraw(run)
    # the same draw as _cap(poisoned_test_set(benign), ...), triggering only the images drawn (triggers act per image)
    drawn = _cap(benign.of_class_not(model.attack.target), max_eval, 2000 + run)
    poisoned = LabeledImages(model.attack.apply_trigger(drawn.x), drawn.y.clone())
    return model, reference, _cap(benign, max_eval, 1000 + run), poisoned


def committed_path(dataset: str, name: str) -> Path:
    """``docs/results/<dataset>/<name>``: a committed result of ``python -m analysis reproduce``."""
    return RESULTS_DIR / dataset / name


def committed_table(dataset: str, name: str) -> pd.DataFrame | None:
    """The committed CSV ``docs/results/<dataset>/<name>`` (None when this dataset has none)."""
    path = committed_path(dataset, name)
    return pd.read_csv(path) if path.exists() else None


def committed_protocol(dataset: str) -> str | None:
    """The protocol line of ``docs/results/<dataset>/REPORT.md`` (runs, inputs, RS/STRIP samples), or None."""
    path = committed_path(dataset, "REPORT.md")
    if not path.exists():
        return None
    return next((line for line in path.read_text().splitlines() if line.startswith("Profile")), None)


def committed_stability(dataset: str, arch: str, defenses=("fp", "ac", "scan", "layerwise")) -> pd.DataFrame | None:
    """Committed std (percentage points) of TPR and FPR over runs per attack and detector (``tables12.csv``).

    Returns a table indexed by attack with columns ``(metric, detector)``, or None without committed results.
    """
    table = committed_table(dataset, "tables12.csv")
    if table is None:
        return None
    part = table[(table.arch == arch) & table.defense.isin(defenses)]
    wide = part.pivot(index="attack", columns="defense", values=["TPR_std", "FPR_std"])
    order = [a for a in paper.ATTACKS if a in wide.index]
    return wide.loc[order, [(m, d) for m in ("TPR_std", "FPR_std") for d in defenses if (m, d) in wide.columns]]


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
            _check_choice(name, "defenses", known)
        _check_choice(defense, "defense", ("all",) + self.defenses)
        _check_choice(heat, "heat", HEAT_METRICS)
        self.max_eval = _check_int(max_eval, "max_eval", 1)
        self.samples = _check_int(samples, "samples", 1)
        self.run = _check_int(run, "run", 0)
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
        _layout(fig, 560, f"Tables 1/2 on {self.workbench.data.name}: which detector catches {attack}?", -0.32)
        fig.update_layout(barmode="group")
        return fig, self.readout_html(arch, attack, defense)

    def readout_html(self, arch: str, attack: str, defense: str) -> str:
        """The readout: the live setup, then per selected detector its live, paper and committed numbers."""
        table = self.results(arch, attack)["table"]
        title, paper_table = PAPER_TABLES.get(arch, ("paper", {}))
        lines = [self.setup_text(arch, attack)]
        for name in (self.defenses if defense == "all" else (defense,)):
            row = table.loc[name]
            ptpr, pfpr = _paper_cell(paper_table, name, attack)
            base = VARIANTS.get(name, (name, {}))[0]
            as_paper = f"paper's {LABELS[base]}" if base != name else "paper"
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


# ---------------------------------------------------------------------- Figs. 9/10
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
            _check_choice(attack, "attacks", workbench.attacks)
        _check_int(runs, "runs", 1, self.MAX_RUNS)
        check_tau(tau, high=4.0)
        self.max_eval = None if max_eval is None else _check_int(max_eval, "max_eval", 1)
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
            detector = build_detector("layerwise", seed=run).fit(model.model, reference).detector_
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
        _layout(fig, 460, f"Figs. 9/10 on {self.workbench.data.name}: layer-wise detector ({arch}), τ = {tau:.1f}, "
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


# ---------------------------------------------------------------------- Fig. 11
class RuntimeApp(App):
    """Fig. 11: seconds to fit and run the layer-wise detector, AC and SCAn on the same inputs, and their ratios.

    Timed live with :func:`analysis.experiments.detector_runtime` (median of ``repeats`` runs with
    rotating order) on the BadNets model: fit on the reference split, detection on all benign and
    poisoned evaluation inputs in one call, as the paper's Fig. 11. Timings depend on the machine and
    its load: the ratio to the layer-wise detector, from the same repeats, is what compares across
    machines. The "time again" button reruns the timing of the current setting.

    Parameters
    ----------
    workbench : the dataset's models.
    arch : the architecture timed first.
    repeats : repeats per detector (median), 1..5.
    detectors : the detectors timed; must include ``"layerwise"``.
    max_inputs : cap on the detection inputs (None = all, as the paper).
    """

    slow_controls = ("arch", "repeats")  # each new setting times every detector

    def __init__(self, workbench: Workbench, arch: str = "resnet18", repeats: int = 1,
                 detectors: tuple[str, ...] = ("layerwise", "ac", "scan"), max_inputs: int | None = None) -> None:
        self.workbench = check_model_choice(workbench, arch)
        _check_int(repeats, "repeats", 1, 5)
        if "layerwise" not in detectors:
            raise ValueError(f"detectors: expected a tuple including 'layerwise', got {detectors!r}")
        for name in detectors:
            _check_choice(name, "detectors", available_defenses(include_recent=True))
        self.detectors = tuple(detectors)
        self.max_inputs = None if max_inputs is None else _check_int(max_inputs, "max_inputs", 1)
        self._timings: dict[tuple[str, int], pd.DataFrame] = {}
        self.committed = committed_table(workbench.data.name, "fig11.csv")
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture", "200px"),
                          "repeats": slider(repeats, 1, 5, 1, "repeats (median)", integer=True)})
        self.button = widgets.Button(description="time again", icon="refresh")
        self.button.on_click(lambda _: self.time_again())
        self.children[0].children = tuple(self.children[0].children) + (self.button,)

    def inputs(self, arch: str):
        """``(model, reference, inputs)``: the BadNets model, its reference split and ``[N, C, H, W]`` detection inputs."""
        run = self.workbench.model(arch, "badnets")
        inputs = torch.cat([run.data.test.x, run.poisoned_test.x])
        if self.max_inputs is not None and len(inputs) > self.max_inputs:
            keep = np.sort(np.random.default_rng(0).choice(len(inputs), size=self.max_inputs, replace=False))
            inputs = inputs[torch.as_tensor(keep)]
        return run.model, run.data.reference, inputs

    def timings(self, arch: str, repeats: int) -> pd.DataFrame:
        """:func:`detector_runtime`'s table for ``(arch, repeats)`` (cached until :meth:`time_again`)."""
        key = (arch, repeats)
        if key not in self._timings:
            model, reference, inputs = self.inputs(arch)
            self._timings[key] = detector_runtime(model, reference, inputs, self.detectors, repeats).set_index("detector")
        return self._timings[key]

    def time_again(self) -> None:
        """Forget the current setting's timings and time it again."""
        self._timings.pop((self.controls["arch"].value, self.controls["repeats"].value), None)
        with self.busy(f"timing {', '.join(self.detectors)} again…"):
            self.refresh()

    def committed_source(self, arch: str) -> str:
        """Where the committed ratios come from: the file and its torch threads."""
        part = self.committed[self.committed.arch == arch]
        threads = f", {int(part.threads.iloc[0])} threads" if len(part) and "threads" in part else ""
        return f"docs/results/{self.workbench.data.name}/fig11.csv{threads}"

    def setup_text(self) -> str:
        """What is timed (plain text, no timings): detectors, reference and input counts, repeats."""
        arch, repeats = self.controls["arch"].value, self.controls["repeats"].value
        _, reference, inputs = self.inputs(arch)
        return (f"{self.workbench.data.name} {arch} + BadNets: detectors {', '.join(self.detectors)}; fit on "
                f"{len(reference)} reference images, detection on {len(inputs)} inputs in one call; median of "
                f"{repeats} repeat{'s' if repeats > 1 else ''}")

    def draw(self, arch: str, repeats: int) -> tuple[go.Figure, str]:
        table = self.timings(arch, repeats)
        labels = [LABELS.get(n, n) for n in table.index]
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
            "live: seconds (fit + detection)", "live: total time ÷ the layer-wise detector's"))
        fig.add_trace(go.Bar(x=labels, y=table.fit_s, name="fit", marker_color="#aec7e8"), 1, 1)
        fig.add_trace(go.Bar(x=labels, y=table.detect_s, name="detection", marker_color=LOI_COLOR), 1, 1)
        fig.add_trace(go.Bar(x=labels, y=table.total_vs_layerwise, name="ratio (live)", marker_color="#ff7f0e",
                             text=[f"{v:.2f}" for v in table.total_vs_layerwise], textposition="inside", insidetextanchor="middle"), 1, 2)
        if self.committed is not None:
            part = self.committed[self.committed.arch == arch].set_index("detector").reindex(table.index).dropna(
                subset=["total_vs_layerwise"])
            if len(part):
                fig.add_trace(go.Scatter(x=[LABELS.get(n, n) for n in part.index], y=part.total_vs_layerwise,
                                         mode="markers", name=f"ratio, committed ({self.committed_source(arch)})",
                                         marker=dict(symbol="diamond", size=12, color="black")), 1, 2)
        fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=2)
        fig.update_xaxes(title_text="detector", row=1, col=1)
        fig.update_xaxes(title_text="detector", row=1, col=2)
        fig.update_yaxes(title_text="seconds", row=1, col=1)
        top = max(1.5, float(table.total_vs_layerwise.max()) * 1.2)
        fig.update_yaxes(title_text="ratio (1 = as fast as layer-wise)", range=[0, top], row=1, col=2)
        _layout(fig, 440, f"Fig. 11 on {self.workbench.data.name}: CPU time of the detectors ({arch} + BadNets)")
        fig.update_layout(barmode="stack")
        threads = torch.get_num_threads()
        lines = [self.setup_text() + f"; {threads} torch thread{'s' if threads > 1 else ''}"]
        for name, row in table.iterrows():
            lines.append(f"{LABELS.get(name, name)}: fit {row.fit_s:.2f} s + detection {row.detect_s:.2f} s = "
                         f"{row.total_s:.2f} s, {row.total_vs_layerwise:.2f} × the layer-wise detector")
        return fig, "<br>".join(lines)


__all__ = ["DefenseApp", "HEAT_METRICS", "LABELS", "RESULTS_DIR", "RuntimeApp", "StabilityApp", "committed_path",
           "committed_protocol",
           "committed_stability", "committed_table", "evaluation_inputs"]
