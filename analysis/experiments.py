"""The paper's experiments as functions returning tables (pandas DataFrames) and figures.

Each function takes a :class:`Study` (dataset, architectures, training profile, where models are
cached) and returns ``(table, figures)``. Each is registered, with its title and the models it loads, in
:data:`analysis.experiment_registry.EXPERIMENTS`, which :mod:`analysis.reproduce` reads to run them, write
CSV, Markdown and HTML, and resume interrupted runs. The attacks an experiment picks from the study come
from the rules of :mod:`analysis.model_plan`, which its registry entry's plan uses too. Percentages everywhere.

Evaluation protocol shared by all detection tables: for run ``r`` the defender's reference set is
redrawn (a seeded, stratified share of the pooled reference + evaluation images, the same size
as the dataset's reference split; run 0 is the dataset's own split) and randomised defenses get
seed ``r``; TPR and FPR are reported as mean ± std over runs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import paper_results as paper
# DETECTION_COLUMNS, LAYERWISE_OPTIONS, VARIANTS, DetectorRun, run_detector and the Study's names are re-exported
# for code written before analysis.study and analysis.comparison were split off this module
from .comparison import (DETECTION_COLUMNS, LAYERWISE_OPTIONS, VARIANTS, DetectorRun, available_defenses,  # noqa: F401
                         build_detector, cap, detector_runtime, paper_key, run_detector, run_detector_scores,
                         summarize_runs)
from .critical_features import table5_features
from .detection import LayerwiseDetector
from .features import predict_classes
from .metrics import (attack_metrics, attack_success_rate, false_positive_rate, main_accuracy, trigger_psnr,
                      true_positive_rate)
from .model_plan import (badnets_and_wanet_else_first, badnets_only, iad_else_badnets, lc_and_badnets_else_first,
                         wanet_and_iad)
from .projection import fig1_pca  # noqa: F401 - Fig. 1 (registered as analysis.projection:fig1_pca)
from .study import OWN_TABLE_ATTACKS, PROFILES, Study, default_attacks  # noqa: F401
from .zoo import badnets_rate_name

# table5_features (analysis.critical_features) and trigger_psnr (analysis.metrics) live below this batch layer,
# since the apps use them too; they are re-exported here for code written before they moved
__all__ = ["MIN_FIG6_POISONED", "fig11_runtime", "fig5_threshold", "fig6_scores", "figs_layerwise_curves",
           "table3_attacks", "table4_rates", "table5_features", "table6_single_layers", "table7_adaptive",
           "table8_metrics", "tables12_detection", "trigger_psnr"]


# ---------------------------------------------------------------------- Table 3
def table3_attacks(study: Study) -> tuple[pd.DataFrame, list]:
    """Per attack: MA (and the clean model's), ASR, training time, and the layer-wise detector at tau = 2.5.

    Beside the paper's Table 3 (MA, ASR) and Tables 1/2 (its detector's TPR, FPR).
    """
    rows = []
    for arch in study.archs:
        clean, clean_seconds = study.clean(arch)
        clean_ma = attack_metrics(clean, study.data.test)["ma"] * 100
        rows.append({"arch": arch, "attack": "clean", "MA": clean_ma, "train_s": clean_seconds})
        for attack in study.attacks:
            run = study.model(arch, attack)
            detector = LayerwiseDetector().fit(run.model, run.data.reference)
            found_b, found_p = detector.detect(run.model, run.data.test), detector.detect(run.model, run.poisoned_test)
            ma = main_accuracy(found_b.predicted, run.data.test.y.numpy()) * 100
            rows.append({"arch": arch, "attack": attack, "MA": ma, "MA_vs_clean": ma - clean_ma,
                         "ASR": attack_success_rate(found_p.predicted, run.attack.target) * 100,
                         "train_s": run.train_seconds, "LOI": detector.loi_[run.attack.target],
                         "PSNR_dB": trigger_psnr(run.attack, run.data.test, run.poisoned_test),
                         "bit_acc": run.attack.quality(run.data.test)["bit_accuracy"] * 100
                         if hasattr(run.attack, "quality") else np.nan,
                         "TPR": true_positive_rate(found_p.flagged) * 100, "FPR": false_positive_rate(found_b.flagged) * 100,
                         **paper.paper_columns("table3", arch, attack),
                         **paper.paper_columns("tables12", arch, attack, "layerwise")})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Tables 1/2 and Figs. 9/10
def tables12_detection(study: Study, defenses: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, list]:
    """Every detector on every attack, mean ± std over runs, beside Tables 1/2; ROC curves of run 0.

    ``defenses``: default :func:`available_defenses` ``(include_recent=True)``: the paper's seven, ``ac-ref``,
    SCALE-UP, IBD-PSC, TED and the layer-wise options. Run ``r``: the reference set is redrawn
    (:meth:`Study.redraw`), randomised defenses get seed ``r``, and every detector sees the same inputs: the
    run's benign evaluation images and their triggered non-target versions, each capped at ``study.max_eval``
    by a seeded subsample (RS and STRIP cost one forward pass per neighbour or blend: 100 per input at the
    paper's settings, ``study.defense_samples`` when set). Fine-Pruning fine-tunes on the model's training
    set. Columns: :data:`DETECTION_COLUMNS` (mean and ``_std``), seconds, and the paper's TPR / FPR.
    Figures: Figs. 9/10 per architecture, and ``roc_<arch>_<attack>``, every detector's ROC curve on run 0's inputs.
    """
    from .plotting import roc_figure, stability_figure

    defenses = defenses or available_defenses(include_recent=True)
    rows, rocs = [], []
    for arch in study.archs:
        for attack in study.attacks:
            run = study.model(arch, attack)
            results: dict[str, list[dict]] = {name: [] for name in defenses}
            curves = {}
            for r in range(study.runs):
                reference, benign = study.redraw(r)
                poisoned = cap(run.attack.poisoned_test_set(benign), study.max_eval, 2000 + r)
                benign = cap(benign, study.max_eval, 1000 + r)
                for name in tqdm(defenses, desc=f"{arch} {attack} run {r}", leave=False, disable=not study.progress):
                    detector = build_detector(name, seed=r, **study.detector_settings(name))
                    found = run_detector_scores(detector, run.model, reference, benign, poisoned, train=run.data.train)
                    results[name].append(found.metrics)
                    if r == 0:
                        curves[name] = (found.suspicion_benign, found.suspicion_poisoned)
            for name in defenses:
                rows.append({"arch": arch, "attack": attack, "defense": name, **summarize_runs(results[name]),
                             "runs": study.runs, "n_benign": len(benign), "n_poisoned": len(poisoned),
                             **paper.paper_columns("tables12", arch, attack, paper_key(name))})
            rocs.append((f"roc_{arch}_{attack}", roc_figure(
                curves, f"ROC curves, {arch} + {attack} (run 0: {len(curves[defenses[0]][0])} benign, "
                        f"{len(curves[defenses[0]][1])} poisoned inputs)")))
    table = pd.DataFrame(rows)
    return table, [(f"fig9_10_stability_{arch}", stability_figure(table[table.arch == arch], arch))
                   for arch in study.archs] + rocs


# ---------------------------------------------------------------------- Table 4
def table4_rates(study: Study, rates: tuple[float, ...] = (0.01, 0.03, 0.05, 0.10)) -> tuple[pd.DataFrame, list]:
    """BadNets at several poisoning rates on the first architecture: MA, ASR, TPR, FPR (Table 4)."""
    arch = study.archs[0]
    from .explore import model_rates  # the compute of the live RateApp too

    rows = []
    for rate in rates:
        name = badnets_rate_name(study.data.name, arch, rate)
        run = study.model(arch, "badnets", name=name, rate=rate)
        detector = LayerwiseDetector().fit(run.model, run.data.reference)
        found_p, found_b = detector.detect(run.model, run.poisoned_test), detector.detect(run.model, run.data.test)
        measured = model_rates(detector, run.attack.target, run.data.test.y.numpy(), found_b.predicted, found_b.scores,
                               found_p.predicted, found_p.scores)
        rows.append({"arch": arch, "rate": rate * 100, **{key: measured[key] for key in ("MA", "ASR", "TPR", "FPR")},
                     **paper.paper_columns("table4", arch, "badnets", at=rate)})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 6
def table6_single_layers(study: Study) -> tuple[pd.DataFrame, list]:
    """Scoring on each single layer vs the LOI rule (WaNet and IAD on the first architecture).

    One forward pass per input set (:meth:`analysis.explore.LayerwiseExplorer.single_layer_table`): each
    single-layer detector is the LOI detector's :meth:`~LayerwiseDetector.with_score_layers` ``([l])``, which
    equals ``LayerwiseDetector(score_layers=[l]).fit(model, reference)`` without running the model again.
    """
    from .explore import LayerwiseExplorer

    arch = study.archs[0]
    rows = []
    for attack in wanet_and_iad(study.attacks):
        run = study.model(arch, attack)
        ours = LayerwiseDetector().fit(run.model, run.data.reference)
        explorer = LayerwiseExplorer(run.model, ours, run.data.test, run.poisoned_test, run.attack.target)
        for layer, rates in explorer.single_layer_table().iterrows():
            at = "ours" if layer == "LOI rule" else layer
            rows.append({"arch": arch, "attack": attack, "layer": str(at), "loi": ours.loi_[run.attack.target],
                         "TPR": rates["TPR %"], "FPR": rates["FPR %"],
                         **paper.paper_columns("table6", arch, attack, at=at)})
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 7
def table7_adaptive(study: Study, betas: tuple[float, ...] | None = None) -> tuple[pd.DataFrame, list]:
    """The adaptive attack per beta (every architecture): MA, ASR and TPR/FPR of AC, SCAn and the layer-wise detector.

    One run on the dataset's own reference/evaluation split, as the paper's Table 7. ``betas``: default
    ``study.adaptive_betas`` (:data:`analysis.paper_results.ADAPTIVE_BETAS` unless the study sets others).
    """
    rows = []
    for arch in study.archs:
        for beta in (study.adaptive_betas if betas is None else betas):
            run = study.adaptive_model(arch, beta)
            measured = attack_metrics(run.model, run.data.test, run.poisoned_test, run.attack.target)
            row = {"arch": arch, "beta": beta, "MA": measured["ma"] * 100, "ASR": measured["asr"] * 100}
            for defense in ("ac", "ac-ref", "scan", "layerwise"):
                found = run_detector(build_detector(defense), run.model, run.data.reference, run.data.test,
                                     run.poisoned_test, train=run.data.train)
                row[f"{defense}_TPR"], row[f"{defense}_FPR"] = found["TPR"], found["FPR"]
            row.update(paper.paper_columns("table7", arch, "adaptive", at=beta))
            rows.append(row)
    return pd.DataFrame(rows), []


# ---------------------------------------------------------------------- Table 8 and Fig. 5
def _tau_sweep(study: Study, arch: str, attack: str, metric: str, taus) -> list[dict]:
    """:func:`analysis.explore.threshold_sweep` (the live ThresholdApp's compute) on each redraw: rows run, tau, TPR, FPR."""
    from .explore import threshold_sweep

    run = study.model(arch, attack)
    rows = []
    for r in range(study.runs):
        reference, benign = study.redraw(r)
        poisoned = run.attack.poisoned_test_set(benign)
        detector = LayerwiseDetector(metric=metric).fit(run.model, reference)
        found_p, found_b = detector.detect(run.model, poisoned), detector.detect(run.model, benign)
        sweep = threshold_sweep(detector, found_b.scores, found_b.predicted, found_p.scores, found_p.predicted, taus)
        rows.extend({"run": r, **row} for row in sweep.to_dict("records"))
    return rows


def table8_metrics(study: Study) -> tuple[pd.DataFrame, list]:
    """Cosine vs Euclidean over tau (IAD, first architecture), mean ± std over runs."""
    (attack,) = iad_else_badnets(study.attacks)
    arch = study.archs[0]
    frames = []
    for metric in ("euclidean", "cosine"):
        sweep = pd.DataFrame(_tau_sweep(study, arch, attack, metric, paper.TABLE8_TAUS))
        summary = sweep.groupby("tau").agg(TPR=("TPR", "mean"), TPR_std=("TPR", "std"), FPR=("FPR", "mean"),
                                            FPR_std=("FPR", "std")).reset_index()
        summary.insert(0, "metric", metric)
        cells = [paper.paper_value("table8", arch, attack, metric, at=tau) for tau in summary.tau]
        summary["paper_TPR"], summary["paper_FPR"] = [c[0] for c in cells], [c[1] for c in cells]
        frames.append(summary)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "attack", attack)
    table.insert(0, "arch", arch)
    return table, []


def fig5_threshold(study: Study, taus=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0)) -> tuple[pd.DataFrame, list]:
    """TPR and FPR over tau for BadNets and WaNet on every architecture (Fig. 5); the study's first attack
    when it has neither (e.g. ``--attacks`` naming a new attack only).

    The live ThresholdApp's compute and plot (:func:`analysis.explore.threshold_sweep`,
    :func:`analysis.plotting.plot_threshold_sweep`); this experiment adds the redraws and their mean."""
    from .plotting import plot_threshold_sweep

    rows = []
    for arch in study.archs:
        for attack in badnets_and_wanet_else_first(study.attacks):
            for row in _tau_sweep(study, arch, attack, "cosine", taus):
                rows.append({"arch": arch, "attack": attack, **row})
    raw = pd.DataFrame(rows)
    table = raw.groupby(["arch", "attack", "tau"]).agg(TPR=("TPR", "mean"), FPR=("FPR", "mean")).reset_index()
    return table, [("fig5_threshold", plot_threshold_sweep(table, "Fig. 5: impact of the threshold tau"))]


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


#: Fig. 6 needs at least this many triggered inputs predicted as the target to draw their distribution.
MIN_FIG6_POISONED = 10


def fig6_scores(study: Study) -> tuple[pd.DataFrame, list]:
    """Distributions of the summed similarity of benign and poisoned inputs predicted as the target (Fig. 6).

    The paper shows LC; when LC left no working backdoor (fewer than ``MIN_FIG6_POISONED`` triggered
    inputs reach the target, as on digits) there is no poisoned distribution to draw, and BadNets is
    shown instead; the ``attack`` column says which. The live ScoreApp's compute and plot
    (:func:`analysis.explore.score_distribution`, :func:`analysis.plotting.plot_score_distribution`).
    """
    from .explore import score_distribution
    from .plotting import plot_score_distribution

    preferred = lc_and_badnets_else_first(study.attacks)
    rows, figures = [], []
    for arch in study.archs:
        for attack in preferred:
            run = study.model(arch, attack)
            target = run.attack.target
            detector = LayerwiseDetector().fit(run.model, run.data.reference)
            found_b, found_p = detector.detect(run.model, run.data.test), detector.detect(run.model, run.poisoned_test)
            if np.sum(found_p.predicted == target) >= MIN_FIG6_POISONED:
                break
        benign, poisoned = score_distribution(found_b.scores, found_b.predicted, found_p.scores, found_p.predicted,
                                              target)
        rows.append({"arch": arch, "attack": attack, "benign_mean": benign.mean(), "poisoned_mean":
                     poisoned.mean() if len(poisoned) else np.nan, "threshold": detector.thresholds()[target]})
        figures.append((f"fig6_scores_{arch}_{attack}", plot_score_distribution(
            benign, poisoned, detector.thresholds()[target],
            f"{arch} + {attack}: summed similarity at layers {list(detector.score_layers_[target])}", "score")))
    return pd.DataFrame(rows), figures


# ---------------------------------------------------------------------- Fig. 11
def fig11_runtime(study: Study) -> tuple[pd.DataFrame, list]:
    """CPU seconds of fit + detection on all benign and poisoned evaluation inputs (Fig. 11), and ratios."""
    (attack,) = badnets_only(study.attacks)
    frames = []
    for arch in study.archs:
        run = study.model(arch, attack)
        table = detector_runtime(run.model, run.data.reference, torch.cat([run.data.test.x, run.poisoned_test.x]))
        table.insert(0, "arch", arch)
        table["threads"] = torch.get_num_threads()
        frames.append(table)
    return pd.concat(frames, ignore_index=True), []
