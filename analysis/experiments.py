"""The paper's experiments as functions returning tables (pandas DataFrames) and figures.

Each function takes a :class:`Study` (dataset, architectures, training profile, where models are
cached) and returns ``(table, figures)``. :mod:`analysis.reproduce` runs them, writes CSV,
Markdown and HTML, and resumes interrupted runs. Percentages everywhere.

Evaluation protocol shared by all detection tables: for run ``r`` the defender's reference set is
redrawn (a seeded, stratified share of the pooled reference + evaluation images, the same size
as the dataset's reference split; run 0 is the dataset's own split) and randomised defenses get
seed ``r``; TPR and FPR are reported as mean ± std over runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import paper_results as paper
from .attacks import ATTACKS, build_attack
from .checkpoints import DEFAULT_DIR, has_checkpoint
from .data import DatasetSplits, LabeledImages, stratified_fraction
from .detection import LayerwiseDetector
from .features import paper_layers, predict_classes
from .pipeline import AttackedModel, attacked_model
from .training import TrainConfig

PROFILES: dict[str, Callable[[str], TrainConfig]] = {
    "cpu": lambda arch: TrainConfig.cpu(arch),
    "paper": lambda arch: TrainConfig.paper(arch),
}


@dataclass
class Study:
    """Where and how models are obtained for one dataset.

    Models come from the zoo (``zoo_dir``) when it has them and the profile is ``cpu`` on digits,
    else from ``models_dir`` (trained there on first use, so interrupted runs resume).
    """

    data: DatasetSplits
    archs: tuple[str, ...] = ("resnet18", "mobilenetv2")
    profile: str = "cpu"
    runs: int = 5
    models_dir: Path = Path("results/models")
    zoo_dir: Path | None = DEFAULT_DIR
    progress: bool = True
    attacks: tuple[str, ...] = field(default_factory=lambda: tuple(a for a in paper.ATTACKS if a in ATTACKS))
    train_subset: int | None = None  # train on a seeded, stratified subset of this many images
    epochs: int | None = None  # override the profile's epochs
    _cache: dict = field(default_factory=dict, repr=False)

    def config(self, arch: str) -> TrainConfig:
        if self.profile not in PROFILES:
            raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {self.profile!r}")
        config = PROFILES[self.profile](arch)
        if self.epochs is not None:
            config.epochs = self.epochs
        return config

    def training_data(self) -> DatasetSplits:
        if self.train_subset is None or self.train_subset >= len(self.data.train):
            return self.data
        keep, _ = stratified_fraction(self.data.train.y.numpy(), self.train_subset / len(self.data.train), seed=0)
        return DatasetSplits(self.data.name, self.data.train.subset(keep), self.data.reference, self.data.test,
                             self.data.num_classes)

    def model(self, arch: str, attack: str, name: str | None = None, **settings) -> AttackedModel:
        """The attacked model for ``(arch, attack, settings)``: zoo, then cache, else trained and cached."""
        atk = build_attack(attack, **settings)
        name = name or f"{self.data.name}-{arch}-{attack}"
        key = (arch, name)
        if key not in self._cache:
            use_zoo = (self.zoo_dir is not None and self.profile == "cpu" and self.data.name == "digits"
                       and self.train_subset is None and self.epochs is None and has_checkpoint(name, self.zoo_dir))
            folder = self.zoo_dir if use_zoo else self.models_dir
            self._cache[key] = attacked_model(
                self.data.name, arch, atk, config=self.config(arch), checkpoints=folder, save=not use_zoo,
                progress=self.progress, data=self.training_data(), cache_dir=self.models_dir / "cache", name=name,
            )
            run = self._cache[key]
            if run.data is not self.data:  # evaluate on the full splits even when trained on a subset
                self._cache[key] = AttackedModel(run.model, run.attack, self.data,
                                                 run.attack.poisoned_test_set(self.data.test), run.train_seconds,
                                                 run.loaded_from)
        return self._cache[key]

    def clean(self, arch: str) -> tuple:
        """``(model, train seconds)`` of the clean model of ``arch`` (zoo, cache, else trained and cached)."""
        from .pipeline import clean_model

        key = (arch, "clean")
        if key not in self._cache:
            name = f"{self.data.name}-{arch}-clean"
            use_zoo = (self.zoo_dir is not None and self.profile == "cpu" and self.data.name == "digits"
                       and self.train_subset is None and self.epochs is None and has_checkpoint(name, self.zoo_dir))
            self._cache[key] = clean_model(self.data.name, arch, config=self.config(arch),
                                           checkpoints=self.zoo_dir if use_zoo else self.models_dir,
                                           save=not use_zoo, progress=self.progress, data=self.training_data())
        return self._cache[key]

    def redraw(self, run: int) -> tuple[LabeledImages, LabeledImages]:
        """Run ``run``'s (reference, evaluation) split; run 0 is the dataset's own split."""
        if run == 0:
            return self.data.reference, self.data.test
        pool = LabeledImages(torch.cat([self.data.reference.x, self.data.test.x]),
                             torch.cat([self.data.reference.y, self.data.test.y]))
        share = len(self.data.reference) / len(pool)
        ref_idx, eval_idx = stratified_fraction(pool.y.numpy(), share, seed=1000 + run)
        return pool.subset(ref_idx), pool.subset(eval_idx)


# ---------------------------------------------------------------------- detectors in one loop
class LayerwiseAsDefense:
    """The layer-wise detector behind the defenses' interface (suspicion = how far below mu, in sigmas)."""

    def __init__(self, tau: float = 2.5, **settings) -> None:
        self.detector = LayerwiseDetector(tau=tau, **settings)

    def fit(self, model, reference, train=None):
        self.detector.fit(model, reference)
        return self

    def predict(self, model, x) -> np.ndarray:
        return self.detector.predict(model, x)

    def score_samples(self, model, x) -> np.ndarray:
        found = self.detector.detect(model, x)
        mu = np.array([self.detector.mu_[int(t)] for t in found.predicted])
        sigma = np.array([max(self.detector.sigma_[int(t)], 1e-12) for t in found.predicted])
        sign = 1.0 if self.detector.metric == "cosine" else -1.0
        return sign * (mu - found.scores) / sigma


def build_detector(name: str, seed: int = 0, **settings):
    """``layerwise`` or a baseline defense from :mod:`analysis.defenses`, with a seed where it is randomised."""
    if name == "layerwise":
        return LayerwiseAsDefense(**settings)
    from .defenses import build_defense

    defense = build_defense(name, **settings)
    if hasattr(defense, "seed"):
        defense.seed = seed
    return defense


def available_defenses() -> tuple[str, ...]:
    try:
        from .defenses import DEFENSES
    except ImportError:
        return ("layerwise",)
    return tuple(d for d in paper.DEFENSES if d in DEFENSES or d == "layerwise")


def _detect_rates(detector, model, benign: LabeledImages, poisoned: LabeledImages) -> tuple[float, float, float]:
    started = time.perf_counter()
    tpr = float(np.mean(detector.predict(model, poisoned))) * 100
    fpr = float(np.mean(detector.predict(model, benign))) * 100
    return tpr, fpr, time.perf_counter() - started


def _paper_table(arch: str) -> dict:
    return paper.TABLE1_CIFAR10 if arch == "resnet18" else paper.TABLE2_GTSRB


# ---------------------------------------------------------------------- Table 3
def table3_attacks(study: Study) -> tuple[pd.DataFrame, list]:
    """Per attack: MA (and the clean model's), ASR, training time, and the layer-wise detector at tau = 2.5.

    Beside the paper's Table 3 (MA, ASR) and Tables 1/2 (its detector's TPR, FPR).
    """
    rows = []
    for arch in study.archs:
        bench = "cifar10-resnet18" if arch == "resnet18" else "gtsrb-mobilenetv2"
        clean, clean_seconds = study.clean(arch)
        clean_ma = float(np.mean(predict_classes(clean, study.data.test) == study.data.test.y.numpy())) * 100
        rows.append({"arch": arch, "attack": "clean", "MA": clean_ma, "train_s": clean_seconds})
        for attack in study.attacks:
            run = study.model(arch, attack)
            detector = LayerwiseDetector().fit(run.model, run.data.reference)
            found_b, found_p = detector.detect(run.model, run.data.test), detector.detect(run.model, run.poisoned_test)
            paper_ma, paper_asr = paper.TABLE3[bench][attack]
            paper_tpr, paper_fpr = _paper_table(arch)["layerwise"][attack]
            ma = float(np.mean(found_b.predicted == run.data.test.y.numpy())) * 100
            rows.append({"arch": arch, "attack": attack, "MA": ma, "MA_vs_clean": ma - clean_ma,
                         "ASR": float(np.mean(found_p.predicted == run.attack.target)) * 100,
                         "train_s": run.train_seconds, "LOI": detector.loi_[run.attack.target],
                         "TPR": found_p.flagged.mean() * 100, "FPR": found_b.flagged.mean() * 100,
                         "paper_MA": paper_ma, "paper_ASR": paper_asr, "paper_TPR": paper_tpr, "paper_FPR": paper_fpr})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Tables 1/2 and Figs. 9/10
def tables12_detection(study: Study, defenses: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, list]:
    """TPR and FPR of every detector on every attack, mean ± std over runs, beside Tables 1/2."""
    defenses = defenses or available_defenses()
    rows = []
    for arch in study.archs:
        for attack in study.attacks:
            run = study.model(arch, attack)
            for defense in defenses:
                results = []
                for r in range(study.runs):
                    reference, benign = study.redraw(r)
                    poisoned = run.attack.poisoned_test_set(benign)
                    detector = build_detector(defense, seed=r).fit(run.model, reference, train=run.data.train)
                    results.append(_detect_rates(detector, run.model, benign, poisoned))
                tpr, fpr, seconds = np.array(results).T
                ptpr, pfpr = _paper_table(arch)[defense][attack]
                rows.append({"arch": arch, "attack": attack, "defense": defense, "TPR": tpr.mean(),
                             "TPR_std": tpr.std(), "FPR": fpr.mean(), "FPR_std": fpr.std(), "runs": study.runs,
                             "predict_s": seconds.mean(), "paper_TPR": ptpr, "paper_FPR": pfpr})
    table = pd.DataFrame(rows)
    return table, [(f"fig9_10_stability_{arch}", stability_figure(table[table.arch == arch], arch))
                   for arch in study.archs]


def stability_figure(table: pd.DataFrame, arch: str):
    """Figs. 9/10: mean TPR and FPR with std error bars per detector and attack."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("TPR %", "FPR %"))
    for defense, part in table.groupby("defense", sort=False):
        for col, metric in ((1, "TPR"), (2, "FPR")):
            fig.add_trace(go.Bar(x=part.attack, y=part[metric], name=defense, legendgroup=defense,
                                 showlegend=col == 1, error_y=dict(type="data", array=part[f"{metric}_std"])),
                          row=1, col=col)
    fig.update_layout(title=f"Stability over runs ({arch}), mean ± std", barmode="group", template="plotly_white")
    return fig


# ---------------------------------------------------------------------- Table 4
def table4_rates(study: Study, rates: tuple[float, ...] = (0.01, 0.03, 0.05, 0.10)) -> tuple[pd.DataFrame, list]:
    """BadNets at several poisoning rates on the first architecture: MA, ASR, TPR, FPR (Table 4)."""
    arch = study.archs[0]
    rows = []
    for rate in rates:
        name = f"{study.data.name}-{arch}-badnets" + ("" if rate == 0.05 else f"-r{rate:g}")
        run = study.model(arch, "badnets", name=name, rate=rate)
        detector = LayerwiseDetector().fit(run.model, run.data.reference)
        found_p, found_b = detector.detect(run.model, run.poisoned_test), detector.detect(run.model, run.data.test)
        ma, asr, ptpr, pfpr = paper.TABLE4_RATES[rate]
        rows.append({"arch": arch, "rate": rate * 100,
                     "MA": float(np.mean(found_b.predicted == run.data.test.y.numpy())) * 100,
                     "ASR": float(np.mean(found_p.predicted == run.attack.target)) * 100,
                     "TPR": found_p.flagged.mean() * 100, "FPR": found_b.flagged.mean() * 100,
                     "paper_MA": ma, "paper_ASR": asr, "paper_TPR": ptpr, "paper_FPR": pfpr})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 5
def table5_features(study: Study) -> tuple[pd.DataFrame, list]:
    """AC, SCAn and the layer-wise detector on latent vs critical features (BadNets, last architecture)."""
    arch = study.archs[-1]
    run = study.model(arch, "badnets")
    target = run.attack.target
    layers = paper_layers(run.model)
    base = LayerwiseDetector().fit(run.model, run.data.reference)
    critical = [layers[layer - 1] for layer in base.score_layers_[target]]
    latent_index = layers.index(run.model.latent_layer) + 1 if run.model.latent_layer in layers else len(layers) - 1
    rows = []
    for defense in [d for d in ("ac", "scan", "layerwise") if d in available_defenses()]:
        for kind in ("latent", "critical"):
            if defense == "layerwise":
                settings = {"score_layers": [latent_index]} if kind == "latent" else {}
            else:
                settings = {"layers": [run.model.latent_layer] if kind == "latent" else critical}
            results = []
            for r in range(study.runs):
                reference, benign = study.redraw(r)
                detector = build_detector(defense, seed=r, **settings).fit(run.model, reference, train=run.data.train)
                results.append(_detect_rates(detector, run.model, benign, run.attack.poisoned_test_set(benign))[:2])
            tpr, fpr = np.array(results).T
            p = paper.TABLE5_FEATURES[defense]
            rows.append({"arch": arch, "defense": defense, "features": kind, "TPR": tpr.mean(), "TPR_std": tpr.std(),
                         "FPR": fpr.mean(), "FPR_std": fpr.std(),
                         "paper_TPR": p[0] if kind == "latent" else p[1], "paper_FPR": p[2] if kind == "latent" else p[3]})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 6
def table6_single_layers(study: Study) -> tuple[pd.DataFrame, list]:
    """Scoring on each single layer vs the LOI rule (WaNet and IAD on the first architecture)."""
    arch = study.archs[0]
    rows = []
    for attack in [a for a in ("wanet", "iad") if a in study.attacks]:
        run = study.model(arch, attack)
        n_layers = len(paper_layers(run.model))
        ours = LayerwiseDetector().fit(run.model, run.data.reference)
        for layer in list(range(1, n_layers + 1)) + ["ours"]:
            detector = ours if layer == "ours" else LayerwiseDetector(score_layers=[layer]).fit(run.model, run.data.reference)
            tpr, fpr, _ = _detect_rates(detector, run.model, run.data.test, run.poisoned_test)
            p = paper.TABLE6_SINGLE_LAYER[attack]
            ptpr = p["ours_tpr"] if layer == "ours" else (p["tpr"][layer - 1] if layer <= len(p["tpr"]) else np.nan)
            pfpr = p["ours_fpr"] if layer == "ours" else (p["fpr"][layer - 1] if layer <= len(p["fpr"]) else np.nan)
            rows.append({"arch": arch, "attack": attack, "layer": str(layer), "loi": ours.loi_[run.attack.target],
                         "TPR": tpr, "FPR": fpr, "paper_TPR": ptpr, "paper_FPR": pfpr})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 7
def table7_adaptive(study: Study, betas: tuple[float, ...] = paper.TABLE7_BETAS) -> tuple[pd.DataFrame, list]:
    """The adaptive attack per beta: MA, ASR and TPR/FPR of AC, SCAn and the layer-wise detector."""
    if "adaptive" not in ATTACKS:
        return pd.DataFrame(), []
    arch = study.archs[0]
    rows = []
    for beta in betas:
        run = study.model(arch, "adaptive", name=f"{study.data.name}-{arch}-adaptive-b{beta:g}", beta=beta)
        row = {"arch": arch, "beta": beta,
               "MA": float(np.mean(predict_classes(run.model, run.data.test) == run.data.test.y.numpy())) * 100,
               "ASR": float(np.mean(predict_classes(run.model, run.poisoned_test) == run.attack.target)) * 100}
        for defense in [d for d in ("ac", "scan", "layerwise") if d in available_defenses()]:
            detector = build_detector(defense).fit(run.model, run.data.reference, train=run.data.train)
            row[f"{defense}_TPR"], row[f"{defense}_FPR"], _ = _detect_rates(detector, run.model, run.data.test,
                                                                          run.poisoned_test)
        paper_row = paper.adaptive_row(beta) or {}
        row.update({f"paper_{k}": v for k, v in paper_row.items()})
        rows.append(row)
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 8 and Fig. 5
def _tau_sweep(study: Study, arch: str, attack: str, metric: str, taus) -> list[dict]:
    run = study.model(arch, attack)
    rows = []
    for r in range(study.runs):
        reference, benign = study.redraw(r)
        poisoned = run.attack.poisoned_test_set(benign)
        detector = LayerwiseDetector(metric=metric).fit(run.model, reference)
        found_p, found_b = detector.detect(run.model, poisoned), detector.detect(run.model, benign)
        for tau in taus:
            rows.append({"run": r, "tau": tau,
                         "TPR": detector.flag_scores(found_p.scores, found_p.predicted, tau).mean() * 100,
                         "FPR": detector.flag_scores(found_b.scores, found_b.predicted, tau).mean() * 100})
    return rows


def table8_metrics(study: Study) -> tuple[pd.DataFrame, list]:
    """Cosine vs Euclidean over tau (IAD, first architecture), mean ± std over runs."""
    attack = "iad" if "iad" in study.attacks else "badnets"
    arch = study.archs[0]
    frames = []
    for metric in ("euclidean", "cosine"):
        sweep = pd.DataFrame(_tau_sweep(study, arch, attack, metric, paper.TABLE8_TAUS))
        summary = sweep.groupby("tau").agg(TPR=("TPR", "mean"), TPR_std=("TPR", "std"), FPR=("FPR", "mean"),
                                            FPR_std=("FPR", "std")).reset_index()
        summary.insert(0, "metric", metric)
        summary["paper_TPR"] = [v[0] for v in paper.TABLE8_METRICS[metric]]
        summary["paper_FPR"] = [v[1] for v in paper.TABLE8_METRICS[metric]]
        frames.append(summary)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "attack", attack)
    table.insert(0, "arch", arch)
    return table, []


def fig5_threshold(study: Study, taus=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0)) -> tuple[pd.DataFrame, list]:
    """TPR and FPR over tau for BadNets and WaNet on every architecture (Fig. 5)."""
    import plotly.graph_objects as go

    rows = []
    for arch in study.archs:
        for attack in [a for a in ("badnets", "wanet") if a in study.attacks]:
            for row in _tau_sweep(study, arch, attack, "cosine", taus):
                rows.append({"arch": arch, "attack": attack, **row})
    raw = pd.DataFrame(rows)
    table = raw.groupby(["arch", "attack", "tau"]).agg(TPR=("TPR", "mean"), FPR=("FPR", "mean")).reset_index()
    fig = go.Figure()
    for (arch, attack), part in table.groupby(["arch", "attack"]):
        fig.add_trace(go.Scatter(x=part.tau, y=part.TPR, mode="lines+markers", name=f"TPR {arch} {attack}"))
        fig.add_trace(go.Scatter(x=part.tau, y=part.FPR, mode="lines+markers", name=f"FPR {arch} {attack}",
                                 line=dict(dash="dash")))
    fig.update_layout(title="Fig. 5: impact of the threshold tau", xaxis_title="tau", yaxis_title="%",
                      template="plotly_white")
    return table, [("fig5_threshold", fig)]


# ---------------------------------------------------------------------- Figs. 2/3/7/8 and 6
def figs_layerwise_curves(study: Study) -> tuple[pd.DataFrame, list]:
    """Layer-wise mean cosine similarity, benign target-class vs poisoned inputs (Figs. 2/3/7/8)."""
    from .plotting import layerwise_curve_figure

    rows, figures = [], []
    for arch in study.archs:
        for attack in study.attacks:
            run = study.model(arch, attack)
            target = run.attack.target
            detector = LayerwiseDetector().fit(run.model, run.data.reference)
            poisoned_pred = predict_classes(run.model, run.poisoned_test)
            captured = run.poisoned_test.subset(np.flatnonzero(poisoned_pred == target))
            benign = detector.layerwise_similarity(run.model, run.data.test.of_class(target), target)
            poisoned = (detector.layerwise_similarity(run.model, captured, target) if len(captured)
                        else np.empty((0, detector.n_layers_)))
            gap = benign.mean(0) - (poisoned.mean(0) if len(poisoned) else np.nan)
            for layer in range(detector.n_layers_):
                rows.append({"arch": arch, "attack": attack, "layer": layer + 1, "benign": benign[:, layer].mean(),
                             "poisoned": poisoned[:, layer].mean() if len(poisoned) else np.nan,
                             "gap": gap[layer], "loi": detector.loi_[target]})
            figures.append((f"curves_{arch}_{attack}", layerwise_curve_figure(
                benign, poisoned, detector.loi_[target], detector.score_layers_[target],
                title=f"{arch} + {attack}: cosine similarity to class {target}'s benign centroids")))
    return pd.DataFrame(rows), figures


def fig6_scores(study: Study) -> tuple[pd.DataFrame, list]:
    """Distributions of the summed similarity of benign and poisoned inputs (Fig. 6; LC when available)."""
    from .plotting import histogram_figure

    attack = "lc" if "lc" in study.attacks else "badnets"
    rows, figures = [], []
    for arch in study.archs:
        run = study.model(arch, attack)
        target = run.attack.target
        detector = LayerwiseDetector().fit(run.model, run.data.reference)
        found_b, found_p = detector.detect(run.model, run.data.test), detector.detect(run.model, run.poisoned_test)
        benign = found_b.scores[found_b.predicted == target]
        poisoned = found_p.scores[found_p.predicted == target]
        rows.append({"arch": arch, "attack": attack, "benign_mean": benign.mean(), "poisoned_mean":
                     poisoned.mean() if len(poisoned) else np.nan, "threshold": detector.thresholds()[target]})
        figures.append((f"fig6_scores_{arch}_{attack}", histogram_figure(
            benign, poisoned, f"{arch} + {attack}: summed similarity at layers {list(detector.score_layers_[target])}",
            "score", threshold=detector.thresholds()[target])))
    return pd.DataFrame(rows), figures


# ---------------------------------------------------------------------- Fig. 11
def fig11_runtime(study: Study) -> tuple[pd.DataFrame, list]:
    """CPU seconds of fit + predict on all benign and poisoned evaluation inputs (Fig. 11), and ratios."""
    rows = []
    for arch in study.archs:
        run = study.model(arch, "badnets")
        inputs = LabeledImages(torch.cat([run.data.test.x, run.poisoned_test.x]),
                               torch.cat([run.data.test.y, run.poisoned_test.y]))
        for defense in [d for d in ("layerwise", "ac", "scan") if d in available_defenses()]:
            started = time.perf_counter()
            build_detector(defense).fit(run.model, run.data.reference).predict(run.model, inputs)
            rows.append({"arch": arch, "defense": defense, "seconds": time.perf_counter() - started})
    table = pd.DataFrame(rows)
    if len(table):
        base = table[table.defense == "layerwise"].set_index("arch").seconds
        table["ratio_to_layerwise"] = table.seconds / table.arch.map(base)
    return table, []


EXPERIMENTS: dict[str, Callable[[Study], tuple[pd.DataFrame, list]]] = {
    "table3": table3_attacks,
    "tables12": tables12_detection,
    "table4": table4_rates,
    "table5": table5_features,
    "table6": table6_single_layers,
    "table7": table7_adaptive,
    "table8": table8_metrics,
    "fig5": fig5_threshold,
    "curves": figs_layerwise_curves,
    "fig6": fig6_scores,
    "fig11": fig11_runtime,
}
