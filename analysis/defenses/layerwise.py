"""The layer-wise detector (:class:`analysis.detection.LayerwiseDetector`) behind the defenses' interface.

``LayerwiseDefense(**settings)`` takes the detector's settings (``tau``, ``metric``,
``layers``, ``score_layers``, ``batch_size``, ``unknown_class``, ``spread``, ``score``, ``target_fpr``) and keeps a fitted
detector in ``detector_``, so the paper's method runs in the same loop as the six
baselines. ``train`` is ignored.

Score: the detector's summed similarity turned into a suspicion, normalised per predicted
class (:meth:`LayerwiseDetector.suspicion`): ``(mu_t - s) / sigma_t`` for cosine
similarity, ``(s - mu_t) / sigma_t`` for Euclidean distance (so an input is flagged iff
its score exceeds ``tau``, or ``calibrated_tau_`` with ``target_fpr``). Inputs of classes without reference samples score NaN.
Decision: ``tau - suspicion`` (the detector's ``decision_function``), with its sign made to agree with the
paper's flags where rounding or a class without reference samples would make it disagree.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..detection import Detection, LayerwiseDetector
from ..operating_point import detector_tau
from .base import Defense, Images, as_images, check_labeled, signed_margin


class LayerwiseDefense(Defense):
    """Adapter: the paper's layer-wise detector with the defenses' ``fit / predict / suspicion / score_samples``."""

    _fitted_attribute = "detector_"
    _float32_only = False  # the detector runs float64 and float16 models in their own dtype
    _nan_scores_allowed = True  # classes without reference samples score NaN, flagged or not as unknown_class says

    # The detector's signature, repeated so that get_params / repr / the registry see every setting
    # (scikit-learn's rule: explicit constructor arguments); a test keeps the two signatures identical.
    def __init__(self, tau: float = 2.5, *, metric: Literal["cosine", "euclidean"] = "cosine",
                 layers: Sequence[str] | None = None, score_layers: Sequence[int] | None = None,
                 batch_size: int = 256, unknown_class: Literal["raise", "flag", "ignore"] = "raise",
                 spread: Literal["std", "mad"] = "std", score: Literal["sum", "trajectory"] = "sum",
                 target_fpr: float | None = None) -> None:
        self.tau = tau
        self.target_fpr = target_fpr
        self.score = score
        self.spread = spread
        self.metric = metric
        self.layers = layers
        self.score_layers = score_layers
        self.batch_size = batch_size
        self.unknown_class = unknown_class

    def _make_detector(self) -> LayerwiseDetector:
        return LayerwiseDetector(**self.get_params())

    def fit(self, model: nn.Module, reference: LabeledImages, train: LabeledImages | None = None) -> "LayerwiseDefense":
        """Fit the layer-wise detector on ``reference``; ``train`` is ignored."""
        check_labeled(reference, "reference")
        self.detector_ = self._make_detector().fit(model, reference)
        return self

    def detect(self, model: nn.Module, x: Images) -> Detection:
        self._check_fitted()
        # settings changed on the adapter after fit reach the detector, whose own rules apply: tau, batch_size and
        # unknown_class take effect, a setting its fitted state depends on is refused with "refit"
        self.detector_.set_params(**self.get_params())
        raw = self.detector_.detect(model, as_images(x, "x"))  # the detector checks the model's fingerprint
        return Detection(raw.predicted, self.suspicion_of(raw), raw.flagged)

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        found = self.detect(model, images)
        # tau - suspicion (the detector's decision_function); the paper's comparison on the raw score decides the
        # flags, so rounding at the boundary, and classes without reference samples, follow them
        margin = detector_tau(self.detector_) - found.scores
        return found.scores, signed_margin(margin, found.flagged)

    def _check_same_model(self, model: nn.Module) -> None:
        """Nothing here: ``detector_`` checks the model once per call (one fingerprint, not two)."""

    def unbind_model(self) -> "LayerwiseDefense":
        """Forget which model ``fit`` saw, here and in ``detector_``, so that other models can be scored on purpose."""
        super().unbind_model()
        self.detector_.unbind_model()
        return self

    def suspicion_of(self, detection: Detection) -> np.ndarray:
        """Per-class normalised suspicion ``[N]`` of a raw :class:`Detection` of ``detector_``."""
        return self.detector_.suspicion(detection.scores, detection.predicted)


__all__ = ["LayerwiseDefense"]
