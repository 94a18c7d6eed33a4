"""The layer-wise detector's operating point as every readout shows it: the τ it flags with, and its label.

A detector built with ``target_fpr`` flags beyond ``calibrated_tau_``, not beyond ``tau`` (2.5 by default);
a readout that printed the rates at ``detector.tau`` would describe another detector than the one that
flags. The explorer (:class:`analysis.explore.LayerwiseExplorer`), its apps and the command line take the
τ in effect from :func:`detector_tau` and the words for it from :func:`tau_label`, and leave the flagging
itself to the detector (``flag_scores(..., tau=None)``), so a readout and ``detector.predict`` agree.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["detector_tau", "tau_label"]


def detector_tau(detector: Any) -> float:
    """The τ a fitted layer-wise detector flags with: ``calibrated_tau_`` when ``target_fpr`` is set, else ``tau``.

    The detector's own checks run first (fitted; ``tau`` a finite number >= 0; a calibration made for the
    current ``target_fpr``), so a readout refuses exactly what detection refuses. ``inf`` means a
    calibration with too few scores for its target: nothing is flagged.

    Examples
    --------
    >>> import torch
    >>> from analysis.data import LabeledImages
    >>> from analysis.detection import LayerwiseDetector
    >>> from analysis.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("resnet18", 2, 2).eval()
    >>> reference = LabeledImages(torch.rand(40, 3, 32, 32), torch.arange(40) % 2)
    >>> detector_tau(LayerwiseDetector(tau=1.5).fit(model, reference))
    1.5
    >>> calibrated = LayerwiseDetector(target_fpr=0.25).fit(model, reference)
    >>> detector_tau(calibrated) == calibrated.calibrated_tau_ != calibrated.tau
    True
    """
    detector.thresholds()  # raises as flagging would: not fitted, a bad tau, a stale calibration
    if getattr(detector, "target_fpr", None) is not None:
        return float(detector.calibrated_tau_)
    return float(detector.tau)


def tau_label(detector: Any, tau: float | None = None, symbol: str = "tau") -> str:
    """``"tau = 2.5"``, or for the detector's own calibrated threshold ``"tau = 1.83 (calibrated to FPR 5 %)"``.

    ``tau``: a τ chosen by the reader (a slider), shown as given; None: the detector's own (:func:`detector_tau`).
    ``symbol``: how τ is written (``"τ"`` in figures, ``"&tau;"`` in HTML).
    """
    if tau is not None:
        return f"{symbol} = {float(tau):.1f}"
    value = detector_tau(detector)
    target = getattr(detector, "target_fpr", None)
    if target is None:
        return f"{symbol} = {value:.1f}"
    if not np.isfinite(value):
        return f"{symbol} = inf (too few calibration scores for FPR {100 * target:g} %: nothing is flagged)"
    return f"{symbol} = {value:.2f} (calibrated to FPR {100 * target:g} %)"
