"""Detectors run side by side: names, construction, one fit-and-detect step, their timing and the protocol's columns.

Every comparison (Tables 1/2 and 5 in :mod:`analysis.experiments`, the apps of :mod:`analysis.apps.defenses`,
:mod:`analysis.apps.stability` and :mod:`analysis.apps.runtime`, ``benchmarks/recent_detectors.py``) names its
detectors as here (:func:`available_defenses`), builds them with :func:`build_detector` and runs each with
:func:`run_detector_scores`, whose numbers all come from :func:`analysis.metrics.detection_metrics`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import paper_results as paper
from .data import LabeledImages

__all__ = ["DETECTION_COLUMNS", "DetectorRun", "LAYERWISE_OPTIONS", "VARIANTS", "available_defenses", "build_detector",
           "cap", "detector_runtime", "paper_cell", "run_detector", "run_detector_scores"]

#: Extra rows of the detection tables: name -> (registered defense, settings). AC's default criterion
#: (relative cluster size, as in Chen et al.) flags the *smaller* cluster, which on a test set where
#: triggered inputs outnumber benign ones is the benign one; the ``reference`` criterion flags the
#: cluster holding fewer reference samples.
VARIANTS: dict[str, tuple[str, dict]] = {"ac-ref": ("ac", {"criterion": "reference"})}

#: The layer-wise detector's options beyond the paper, as rows of the detection tables (not the paper's
#: numbers: their paper columns stay empty): name -> settings of :class:`analysis.detection.LayerwiseDetector`.
LAYERWISE_OPTIONS: dict[str, dict] = {
    "layerwise-trajectory": {"score": "trajectory"},
    "layerwise-trajectory-fpr5": {"score": "trajectory", "target_fpr": 0.05},
}


def available_defenses(include_recent: bool = False) -> tuple[str, ...]:
    """Detector names for the comparison tables: the paper's seven in its order, then :data:`VARIANTS`.

    ``include_recent``: also the detectors published after the paper
    (:data:`analysis.defenses.RECENT_DEFENSES`) and the layer-wise options (:data:`LAYERWISE_OPTIONS`).
    """
    from .defenses import DETECTORS, RECENT_DEFENSES

    names = tuple(d for d in paper.DEFENSES if d in DETECTORS) + tuple(VARIANTS)
    return names + tuple(RECENT_DEFENSES) + tuple(LAYERWISE_OPTIONS) if include_recent else names


def build_detector(name: str, seed: int = 0, **settings):
    """A detector of :mod:`analysis.defenses` (``layerwise`` included) or a :data:`VARIANTS` row.

    Randomised defenses get ``seed``; the layer-wise detector flags inputs of classes absent from the
    reference set instead of raising (a redrawn reference set keeps every class, so this is a guard).
    """
    import inspect

    from .defenses import DETECTORS, build_defense

    base, extra = VARIANTS.get(name, ("layerwise", LAYERWISE_OPTIONS[name]) if name in LAYERWISE_OPTIONS else (name, {}))
    if base not in DETECTORS:
        raise ValueError(f"name: unknown detector {name!r}; expected one of "
                         f"{sorted(DETECTORS) + sorted(VARIANTS) + sorted(LAYERWISE_OPTIONS)}")
    extra = dict(extra)
    if "seed" in inspect.signature(DETECTORS[base].__init__).parameters:
        extra["seed"] = seed
    if base == "layerwise":
        extra["unknown_class"] = "flag"
    return build_defense(base, **{**extra, **settings})


def _base(name: str) -> str:
    """The paper's defense whose numbers a row is shown beside (a :data:`VARIANTS` row's base, else the name).

    A :data:`LAYERWISE_OPTIONS` row is not the paper's method: it keeps its own name, so its paper columns are NaN.
    """
    return VARIANTS.get(name, (name, {}))[0]


def paper_cell(table: dict, name: str, attack: str) -> tuple[float, float]:
    """``(TPR, FPR)`` of detector ``name`` on ``attack`` in a Table 1/2 dict, NaN where absent."""
    return table.get(_base(name), {}).get(attack, (np.nan, np.nan))


@dataclass(frozen=True)
class DetectorRun:
    """One detector fitted and run once (:func:`run_detector_scores`)."""

    metrics: dict[str, float]  # DETECTION_COLUMNS in %, and "seconds" of fit + detection
    suspicion_benign: np.ndarray  # [n] higher = more suspicious (the defenses' suspicion)
    suspicion_poisoned: np.ndarray  # [m]


def run_detector_scores(detector, model, reference: LabeledImages, benign: LabeledImages, poisoned: LabeledImages,
                        train: LabeledImages | None = None) -> DetectorRun:
    """Fit ``detector`` on ``reference`` and run it once on benign + poisoned inputs together.

    One call on the mixed set matters for AC and SCAn, which judge a set of inputs as a whole.
    ``metrics``: in %, the protocol of :func:`analysis.metrics.detection_metrics` (:data:`DETECTION_COLUMNS`:
    TPR, FPR and F1 at the detector's threshold; AUROC and TPR at FPR <= 1 % / 5 % of its suspicion
    score, NaN where undefined) and the seconds of fit + detection; the suspicion scores give ROC curves.
    """
    from .metrics import detection_metrics

    started = time.perf_counter()
    detector.fit(model, reference, train=train)
    found = detector.detect(model, torch.cat([benign.x, poisoned.x]))
    seconds = time.perf_counter() - started
    n = len(benign)
    found_metrics = detection_metrics(found.flagged[:n], found.flagged[n:], found.scores[:n], found.scores[n:])
    metrics = {column: found_metrics[key] * 100 for key, column in DETECTION_COLUMNS.items()} | {"seconds": seconds}
    return DetectorRun(metrics, np.asarray(found.scores[:n]), np.asarray(found.scores[n:]))


def run_detector(detector, model, reference: LabeledImages, benign: LabeledImages, poisoned: LabeledImages,
                 train: LabeledImages | None = None) -> dict[str, float]:
    """The ``metrics`` of :func:`run_detector_scores`: the detection protocol in %, and seconds."""
    return run_detector_scores(detector, model, reference, benign, poisoned, train).metrics


#: Column of each :func:`analysis.metrics.detection_metrics` entry in the detection tables (percentages).
DETECTION_COLUMNS = {"tpr": "TPR", "fpr": "FPR", "auroc": "AUROC", "tpr_at_fpr_1": "TPR@FPR<=1%",
                     "tpr_at_fpr_5": "TPR@FPR<=5%", "f1": "F1"}


def cap(data: LabeledImages, limit: int | None, seed: int) -> LabeledImages:
    """A seeded subsample of at most ``limit`` images (all when ``limit`` is None)."""
    if limit is None or len(data) <= limit:
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), size=limit, replace=False)))


def detector_runtime(model, reference: LabeledImages, inputs: torch.Tensor,
                     detectors: tuple[str, ...] = ("layerwise", "ac", "scan"), repeats: int = 3) -> pd.DataFrame:
    """Seconds to fit each detector on ``reference`` and to run it once on ``inputs`` (median of ``repeats``).

    Repeats rotate the detectors' order so that machine load affects all alike; ``total_vs_layerwise``
    is each detector's total time over the layer-wise detector's, from the same run.
    """
    import statistics

    times: dict[str, dict[str, list[float]]] = {name: {"fit_s": [], "detect_s": []} for name in detectors}
    for repeat in range(repeats):
        shift = repeat % len(detectors)
        for name in detectors[shift:] + detectors[:shift]:
            detector = build_detector(name)
            started = time.perf_counter()
            detector.fit(model, reference)
            fitted = time.perf_counter()
            detector.predict(model, inputs)
            times[name]["fit_s"].append(fitted - started)
            times[name]["detect_s"].append(time.perf_counter() - fitted)
    table = pd.DataFrame([{"detector": name, **{k: statistics.median(v) for k, v in t.items()}}
                          for name, t in times.items()])
    table["total_s"] = table.fit_s + table.detect_s
    if "layerwise" in detectors:
        table["total_vs_layerwise"] = table.total_s / float(table.loc[table.detector == "layerwise", "total_s"].iloc[0])
    return table


def _summary(results: list[dict]) -> dict[str, float]:
    frame = pd.DataFrame(results)
    out = {}
    for key in DETECTION_COLUMNS.values():
        out[key] = frame[key].mean()
        out[f"{key}_std"] = frame[key].std(ddof=0)
    out["seconds"] = frame.seconds.mean()
    return out
