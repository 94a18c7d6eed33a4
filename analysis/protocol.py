"""The evaluation protocol for input detectors at the operating point users need: 1 % false-positive rate.

One draw, one run of each detector, one set of numbers, used by ``benchmarks/low_fpr.py`` (and open to every
table and notebook that compares detectors):

* **Redraws.** Run ``r`` draws the defender's reference set (run 0: the dataset's own split; run r > 0: a
  stratified redraw of reference + evaluation images, :func:`redraw`). Everything a detector learns, its
  threshold included, comes from that reference set of benign images only.
* **Inputs.** Benign: the run's evaluation images. Triggered: every non-target evaluation image with the
  trigger. Detectors that cost about one forward pass per input (:data:`CHEAP`) run on all of them; the
  others on a seeded sample of ``max_expensive`` benign and ``max_expensive`` triggered inputs (default
  1,000 each, enough benign inputs that 1 % is ten of them).
* **Two populations of triggered inputs**, side by side: ``all`` (every triggered input) and ``reached``
  (those the model sends to the target class, the ones a backdoor defense must stop; triggered inputs
  that miss the target are harmless and, for a detector keyed on the predicted class, look benign).
* **Metrics** (:func:`population_metrics`), in %: AUROC of the suspicion score; TPR at FPR <= 1 % with the
  threshold set on the benign evaluation scores (an oracle operating point, to compare detectors) and its
  95 % Clopper-Pearson interval; and TPR / FPR at the detector's *own* threshold (set from reference data
  only: the deployable operating point, whose FPR must land near its target).

:func:`summarize` turns the per-run rows into mean ± std over runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .data import DatasetSplits, LabeledImages, stratified_fraction
from .defenses.registry import names
from .features import predict_classes
from .metrics import auroc, tpr_at_fpr

__all__ = ["CHEAP", "LOW_FPR_DETECTORS", "Inputs", "clopper_pearson", "evaluation_inputs", "low_fpr_curves",
           "population_metrics", "redraw", "run_protocol", "summarize"]

#: Detectors that cost about one forward pass per input (plus work on features): they see every evaluation input.
#: A live view of the registry's ``budget="cheap"`` entries (:data:`analysis.defenses.registry.BUDGETS`).
CHEAP = names(lambda name, spec: spec.budget == "cheap")
#: The false-positive rate the oracle operating point is read at.
LOW_FPR = 0.01


def redraw(data: DatasetSplits, run: int) -> tuple[LabeledImages, LabeledImages]:
    """Run ``run``'s ``(reference, evaluation)`` split: run 0 the dataset's own, run r a stratified redraw of both.

    The reference share of each class stays the dataset's; the seed is ``1000 + run``.
    """
    if run == 0:
        return data.reference, data.test
    pool = LabeledImages(torch.cat([data.reference.x, data.test.x]), torch.cat([data.reference.y, data.test.y]))
    share = len(data.reference) / len(pool)
    ref_idx, eval_idx = stratified_fraction(pool.y.numpy(), share, seed=1000 + run)
    return pool.subset(ref_idx), pool.subset(eval_idx)


@dataclass(frozen=True)
class Inputs:
    """One run's evaluation inputs: benign images, triggered images and which triggered ones reach the target."""

    benign: LabeledImages
    triggered: LabeledImages
    reached: np.ndarray  # [len(triggered)] bool: the model predicts the target class

    def capped(self, limit: int | None, seed: int) -> "Inputs":
        """A seeded sample of at most ``limit`` benign and ``limit`` triggered inputs (all when None)."""
        def pick(n: int, salt: int) -> np.ndarray:
            if limit is None or n <= limit:
                return np.arange(n)
            return np.sort(np.random.default_rng(seed + salt).choice(n, size=limit, replace=False))

        b, t = pick(len(self.benign), 1000), pick(len(self.triggered), 2000)
        return Inputs(self.benign.subset(b), self.triggered.subset(t), self.reached[t])


def evaluation_inputs(model: nn.Module, attack, evaluation: LabeledImages) -> Inputs:
    """Benign ``evaluation`` images and their triggered non-target versions, with the ``reached`` mask."""
    triggered = attack.poisoned_test_set(evaluation)
    reached = predict_classes(model, triggered.x) == attack.target
    return Inputs(evaluation, triggered, reached)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval of a proportion, as fractions.

    Examples
    --------
    >>> lo, hi = clopper_pearson(95, 100)
    >>> round(lo, 3), round(hi, 3)
    (0.887, 0.984)
    >>> clopper_pearson(0, 10)[0], clopper_pearson(10, 10)[1]
    (0.0, 1.0)
    """
    from scipy.stats import beta

    if trials <= 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def population_metrics(suspicion_benign: np.ndarray, flagged_benign: np.ndarray, suspicion_triggered: np.ndarray,
                       flagged_triggered: np.ndarray) -> dict[str, float]:
    """The protocol's numbers, in %, for one population of triggered inputs.

    A NaN suspicion (an input the detector could not score) counts as the most suspicious for AUROC and the
    oracle operating point, never as "benign" in silence; a flagged input is flagged whatever its score.
    """
    sb, st = np.asarray(suspicion_benign, np.float64), np.asarray(suspicion_triggered, np.float64)
    finite = np.concatenate([sb[np.isfinite(sb)], st[np.isfinite(st)], [0.0]])
    top = finite.max() + 1.0  # NaN and +inf: above every finite score
    sb, st = (np.where(np.isnan(v) | np.isposinf(v), top, v) for v in (sb, st))
    if len(st) == 0:
        return {"n_triggered": 0, "AUROC": np.nan, "TPR@1%": np.nan, "TPR@1%_low": np.nan, "TPR@1%_high": np.nan,
                "TPR": np.nan, "FPR": 100 * float(np.mean(flagged_benign))}
    tpr1 = tpr_at_fpr(sb, st, LOW_FPR)
    low, high = clopper_pearson(int(round(tpr1 * len(st))), len(st))
    return {"n_triggered": len(st), "AUROC": 100 * auroc(sb, st), "TPR@1%": 100 * tpr1, "TPR@1%_low": 100 * low,
            "TPR@1%_high": 100 * high, "TPR": 100 * float(np.mean(flagged_triggered)),
            "FPR": 100 * float(np.mean(flagged_benign))}


def _suspicion_and_flags(detector, model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Suspicion (higher = more suspicious) and flags of one call on the whole set (AC and SCAn judge sets)."""
    found = detector.detect(model, x)
    return np.asarray(found.suspicion, np.float64), np.asarray(found.flagged, bool)


def run_protocol(model: nn.Module, attack, data: DatasetSplits, detectors: dict[str, Callable[[int], object]],
                 runs: int = 3, max_expensive: int | None = 1000, cheap: Iterable[str] = CHEAP,
                 train: LabeledImages | None = None, progress: bool = True,
                 max_cheap: int | None = None) -> pd.DataFrame:
    """Every detector on every run: one row per ``(detector, run, population)``.

    ``detectors`` maps a name to a factory ``seed -> unfitted detector`` (the defenses' interface:
    ``fit(model, reference, train=...)`` and ``detect(model, x)`` whose ``scores`` are suspicion scores).
    Columns: ``detector``, ``run``, ``population`` (``all`` / ``reached``), ``n_benign`` and the numbers of
    :func:`population_metrics`, plus ``seconds`` (fit + detection). ``max_cheap`` caps the cheap detectors' inputs
    too (default None: every input), for a budget run; keep it at 1,000 or more so that 1 % FPR stays visible.
    """
    from tqdm.auto import tqdm

    cheap = set(cheap)
    rows = []
    for r in range(runs):
        reference, evaluation = redraw(data, r)
        full = evaluation_inputs(model, attack, evaluation).capped(max_cheap, seed=r)
        sampled = full.capped(max_expensive, seed=r)
        for name, factory in tqdm(detectors.items(), desc=f"run {r}", leave=False, disable=not progress):
            inputs = full if name in cheap else sampled
            detector = factory(r)
            started = time.perf_counter()
            detector.fit(model, reference, train=train)
            suspicion, flagged = _suspicion_and_flags(detector, model, torch.cat([inputs.benign.x, inputs.triggered.x]))
            seconds = time.perf_counter() - started
            n = len(inputs.benign)
            for population, keep in (("all", np.ones(len(inputs.triggered), bool)), ("reached", inputs.reached)):
                rows.append({"detector": name, "run": r, "population": population, "n_benign": n,
                             **population_metrics(suspicion[:n], flagged[:n], suspicion[n:][keep], flagged[n:][keep]),
                             "seconds": seconds})
    return pd.DataFrame(rows)


#: The detectors the notebooks put on one ROC at 1 % FPR: the paper's rule, the option beyond it, TED and IBD-PSC.
LOW_FPR_DETECTORS = ("layerwise", "layerwise-gaussian", "ted", "ibd-psc")


def low_fpr_curves(model: nn.Module, attack, data: DatasetSplits, names: Iterable[str] = LOW_FPR_DETECTORS,
                   run: int = 0, max_expensive: int | None = 1000, train: LabeledImages | None = None,
                   cheap: Iterable[str] = CHEAP) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (suspicion of benign inputs, suspicion of triggered inputs that reach the target)}`` on run ``run``.

    The input of an ROC figure (:func:`analysis.plotting.roc_figure` with ``mark_fpr=0.01``): computed once, plotted
    as often as wanted. Each detector is built by :func:`analysis.comparison.build_detector` (seed ``run``) and sees
    the protocol's inputs (every input for :data:`CHEAP` detectors, else ``max_expensive`` of each kind).
    """
    from .comparison import build_detector

    cheap = set(cheap)
    reference, evaluation = redraw(data, run)
    full = evaluation_inputs(model, attack, evaluation)
    sampled = full.capped(max_expensive, seed=run)
    curves = {}
    for name in names:
        inputs = full if name in cheap else sampled
        detector = build_detector(name, seed=run).fit(model, reference, train=train)
        suspicion, _ = _suspicion_and_flags(detector, model, torch.cat([inputs.benign.x, inputs.triggered.x]))
        n = len(inputs.benign)
        curves[name] = (suspicion[:n], suspicion[n:][inputs.reached])
    return curves


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over runs of every metric, per detector and population (columns ``X`` and ``X_std``)."""
    metrics = ["AUROC", "TPR@1%", "TPR@1%_low", "TPR@1%_high", "TPR", "FPR", "seconds"]
    grouped = table.groupby(["detector", "population"], sort=False)
    mean = grouped[metrics + ["n_benign", "n_triggered"]].mean()
    std = grouped[metrics].std(ddof=0).add_suffix("_std")
    return pd.concat([mean, std], axis=1).reset_index()
