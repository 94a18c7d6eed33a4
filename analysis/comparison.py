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

from .data import LabeledImages
from .defenses import DETECTORS, REGISTRY, build_defense
from .defenses.registry import base_name, view

__all__ = ["DETECTION_COLUMNS", "DetectorRun", "LAYERWISE_OPTIONS", "VARIANTS", "available_defenses", "build_detector",
           "cap", "detector_runtime", "paper_cell", "paper_key", "run_detector", "run_detector_scores", "summarize_runs"]

#: Extra rows of the detection tables beside the paper's: name -> (registered defense, settings); a view of the
#: registry's variants of the paper's detectors (``ac-ref``: AC with the reference criterion).
VARIANTS = view(lambda name, spec: (base_name(name), dict(spec.settings)),
                lambda name, spec: bool(spec.settings) and spec.group in ("baseline", "paper"))

#: The layer-wise detector's options beyond the paper, as rows of the detection tables (their paper columns stay
#: empty): name -> settings of :class:`analysis.detection.LayerwiseDetector`; a view of the registry.
LAYERWISE_OPTIONS = view(lambda name, spec: dict(spec.settings), lambda name, spec: spec.group == "option")


def available_defenses(include_recent: bool = False) -> tuple[str, ...]:
    """Detector names for the comparison tables, in the registry's order.

    Parameters
    ----------
    include_recent : also the rows of the extended tables: the detectors published after the paper and the
        layer-wise options (the registry's groups ``"recent"`` and ``"option"``).

    Returns
    -------
    The paper's seven in its order and the variants shown beside them (``ac-ref``; the registry's groups
    ``"baseline"`` and ``"paper"``), then, with ``include_recent``, the extended rows.
    """
    groups = [("baseline", "paper")] + ([("recent", "option")] if include_recent else [])
    return tuple(name for chosen in groups for name, spec in REGISTRY.items() if spec.group in chosen)


def build_detector(name: str, seed: int = 0, **settings):
    """The detector registered as ``name`` (:data:`analysis.defenses.REGISTRY`: variants and options included).

    Parameters
    ----------
    name : a key of the registry.
    seed : passed to a randomised defense (one whose constructor takes ``seed``).
    **settings : on top of the entry's own settings.

    Returns
    -------
    The unfitted detector. The layer-wise detector and its options flag inputs of classes absent from the
    reference set instead of raising (a redrawn reference set keeps every class, so this is a guard).
    """
    import inspect

    if name not in REGISTRY:
        raise ValueError(f"name: unknown detector {name!r}; expected one of {sorted(REGISTRY)}")
    base = base_name(name)
    extra = dict(REGISTRY[name].settings)
    if "seed" in inspect.signature(DETECTORS[base].__init__).parameters:
        extra["seed"] = seed
    if base == "layerwise":
        extra["unknown_class"] = "flag"
    return build_defense(base, **{**extra, **settings})


def paper_key(name: str) -> str | None:
    """The paper's Tables 1/2 row whose numbers detector ``name``'s row is shown beside.

    Parameters
    ----------
    name : a detector name.

    Returns
    -------
    The registry's ``paper`` key (a variant's base defense: ``"ac-ref"`` -> ``"ac"``); None for a detector the
    paper does not report (the recent ones, the layer-wise options) or an unregistered name, so its paper
    columns are NaN.
    """
    return REGISTRY[name].paper if name in REGISTRY else None


def paper_cell(table: dict, name: str, attack: str) -> tuple[float, float]:
    """``(TPR, FPR)`` of detector ``name`` on ``attack`` in a Table 1/2 dict, NaN where absent."""
    return table.get(paper_key(name), {}).get(attack, (np.nan, np.nan))


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
    found_metrics = detection_metrics(found.flagged[:n], found.flagged[n:], found.suspicion[:n], found.suspicion[n:])
    metrics = {column: found_metrics[key] * 100 for key, column in DETECTION_COLUMNS.items()} | {"seconds": seconds}
    return DetectorRun(metrics, np.asarray(found.suspicion[:n]), np.asarray(found.suspicion[n:]))


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


def summarize_runs(results: list[dict]) -> dict[str, float]:
    """Mean and population std over runs of every detection column, and the mean seconds.

    Parameters
    ----------
    results : one :attr:`DetectorRun.metrics` dict per run (the columns of :data:`DETECTION_COLUMNS` and
        ``"seconds"``).

    Returns
    -------
    ``{column: mean, column + "_std": std (ddof 0)}`` for every column of :data:`DETECTION_COLUMNS`, and
    ``"seconds"``: the mean seconds.
    """
    frame = pd.DataFrame(results)
    out = {}
    for key in DETECTION_COLUMNS.values():
        out[key] = frame[key].mean()
        out[f"{key}_std"] = frame[key].std(ddof=0)
    out["seconds"] = frame.seconds.mean()
    return out
