"""When the paper's rule cannot see: checks of a fitted layer-wise detector's own reference statistics.

The LOI rule (Algorithm 1) takes the layer with the largest rise of a class's mean benign cosine similarity.
Two situations, both visible from benign reference samples alone, make its choice fragile:

* **a near-tie**: the largest rise is barely larger than the rise into another layer (on a held-out natural-image
  model, +0.087 into the logits against +0.077 one layer before). The LOI, hence the scored layers
  LOI-2..LOI, then flips with the training run, and so does the detector's TPR;
* **the output layer**: an LOI at the last layer scores the logits, where a triggered input already looks like the
  target class; the layers that separate benign from triggered inputs lie below it.

:func:`loi_diagnosis` finds both per class; :func:`warn_fragile_loi` turns them into one
:class:`LoiWarning` (``docs/low_fpr.md`` explains the collapse and what to use instead).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["NEAR_TIE", "LoiDiagnosis", "LoiWarning", "loi_diagnosis", "warn_fragile_loi"]

#: The runner-up rise, as a fraction of the largest, above which the LOI is a near-tie.
NEAR_TIE = 0.85


class LoiWarning(UserWarning):
    """The layer of interest chosen by the paper's rule is fragile (a near-tie, or the output layer)."""


@dataclass(frozen=True)
class LoiDiagnosis:
    """The LOI of one class and what makes it fragile."""

    loi: int  # 1-indexed, as Algorithm 1 returns it
    rise: float  # cs[loi] - cs[loi - 1]
    runner_up: int | None  # the layer with the second largest rise among the candidates
    runner_up_rise: float
    near_tie: bool  # runner_up_rise >= NEAR_TIE * rise (and both rises positive)
    at_output: bool  # loi is the last layer


def loi_diagnosis(mean_similarity: Sequence[float], near_tie: float = NEAR_TIE) -> LoiDiagnosis:
    """Algorithm 1's candidates for one class, with its runner-up and whether the choice is fragile.

    Examples
    --------
    Eight layers (candidates 5..8); the rise into the last layer (0.087) barely beats the one before (0.077):

    >>> d = loi_diagnosis([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.577, 0.664])
    >>> d.loi, d.runner_up, d.near_tie, d.at_output
    (8, 7, True, True)
    """
    from .detection import layer_of_interest

    values = np.asarray(mean_similarity, dtype=np.float64)
    n_layers = len(values)
    loi = layer_of_interest(values)
    half = n_layers // 2
    rises = {layer: values[layer - 1] - values[layer - 2] for layer in range(half + 1, n_layers + 1)}
    others = {layer: rise for layer, rise in rises.items() if layer != loi}
    runner_up = max(others, key=others.get) if others else None
    runner_rise = others[runner_up] if runner_up is not None else float("nan")
    tie = bool(runner_up is not None and rises[loi] > 0 and runner_rise >= near_tie * rises[loi])
    return LoiDiagnosis(loi, float(rises[loi]), runner_up, float(runner_rise), tie, loi == n_layers)


def _summary(d: LoiDiagnosis) -> tuple:
    """``(LOI, runner-up, rise, runner-up rise)`` of one class, as the warnings print it."""
    return d.loi, d.runner_up, round(d.rise, 3), round(d.runner_up_rise, 3)


def warn_fragile_loi(mean_similarity: Mapping[int, Sequence[float]], stacklevel: int = 3, *,
                     tie_at_output_only: bool = False) -> dict[int, LoiDiagnosis]:
    """Diagnose every class; one :class:`LoiWarning` naming the classes whose LOI is a near-tie or the output layer.

    ``tie_at_output_only``: warn only for classes whose LOI is both a near-tie and the output layer (the held-out
    model's case, issue 31). Neither form runs inside ``LayerwiseDetector.fit``: on the digits zoo's ResNet-18 both
    fire on models where the paper's rule works (the narrow form in 14 of 25 fits over reference redraws:
    ``benchmarks/loi_warning_rate.py``), see ``docs/low_fpr.md``.
    """
    found = {t: loi_diagnosis(values) for t, values in mean_similarity.items()}
    if tie_at_output_only:
        both = {t: _summary(d)
                for t, d in found.items() if d.near_tie and d.at_output}
        if both:
            warnings.warn(f"the LOI is the output layer on a near-tie for classes {both} (class: (LOI, runner-up, "
                          f"rise, runner-up rise)): the scored layers LOI-2..LOI may lie past the layers where a "
                          f"triggered input still differs from benign inputs of its predicted class, and the paper's "
                          f"rule may then not separate them at any threshold. Compare score_layers below the LOI, "
                          f"or the 'layerwise-gaussian' detector (docs/low_fpr.md).", LoiWarning, stacklevel=stacklevel)
        return found
    ties = {t: _summary(d) for t, d in found.items() if d.near_tie}
    output = sorted(t for t, d in found.items() if d.at_output)
    parts = []
    if ties:
        parts.append(f"the LOI is a near-tie for classes {ties} (class: (LOI, runner-up, rise, runner-up rise)), so the "
                     f"scored layers LOI-2..LOI may flip with the training run")
    if output:
        parts.append(f"the LOI is the output layer for classes {output}, where triggered inputs already look like the "
                     f"target class")
    if parts:
        warnings.warn("; ".join(parts) + ". The paper's rule may not separate benign and poisoned inputs here; "
                      "compare score_layers below the LOI, or the 'layerwise-gaussian' detector (docs/low_fpr.md).",
                      LoiWarning, stacklevel=stacklevel)
    return found
