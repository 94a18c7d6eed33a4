"""Options of :class:`analysis.detection.LayerwiseDetector` that the paper does not have, all off by default.

:class:`DetectorOptions` is a mixin the detector inherits from: it holds the code of these options, so that
:mod:`analysis.detection` reads as the paper's Algorithms 1 and 2, while a user still finds every option as a
setting and method of the one detector (``LayerwiseDetector(score="trajectory", target_fpr=0.01)``,
``detector.calibrate(model, benign)``). It reads the fitted state the detector sets (``classes_``,
``score_layers_``, ``mu_``, ``sigma_``, ``reference_*_``) and is not usable on its own.

* ``score="trajectory"`` scores the whole trajectory instead of the sum at LOI-2..LOI: each layer's cosine
  similarity is standardised by the predicted class's reference mean and std at that layer (std floored at
  :data:`TRAJECTORY_STD_FLOOR`), and the input's score is the squared Mahalanobis distance of that vector of
  z-scores, under one covariance of all classes' reference z-vectors (Ledoit-Wolf shrinkage); flagged above
  ``mu + tau * sigma`` of the reference distances of all classes pooled (the z-scores put every class on one scale;
  a class's own handful of distances would estimate mu and sigma poorly). It reads a divergence at whichever layer
  it happens, where the LOI rule can pick a layer at which the poisoned inputs have already converged
  (MobileNetV2 + Blended on digits). The reference distances are in-sample (the same samples fit the means and
  covariance), so they are a little smaller than those of new benign inputs; ``benchmarks/recent_detectors.py``
  measures the resulting FPR.
* ``target_fpr`` replaces the fixed ``tau`` by one calibrated to a target false-positive rate: the split-conformal
  order statistic (:func:`analysis.metrics.conformal_threshold`) of benign suspicion scores
  (:meth:`analysis.detection.LayerwiseDetector.suspicion_from_scores`, every class pooled on that standardised scale, so a class
  with a handful of samples borrows the others'), used as an effective tau for every class. After ``fit`` the
  calibration scores are the reference samples' own, each computed as if that sample had been left out of the fit
  (approximately: see :meth:`DetectorOptions._leave_one_out_suspicion`), so the finite-sample guarantee holds only
  approximately; :meth:`DetectorOptions.calibrate` on held-out benign inputs gives the exact one.
* ``spread="mad"`` takes ``mu_`` = median and ``sigma_`` = :data:`MAD_TO_STD` × the median absolute deviation of
  the reference scores (:func:`median_and_mad`): with a handful of reference samples per class, one atypical
  benign image can inflate the standard deviation and lower the threshold below the poisoned inputs' scores.
* :meth:`DetectorOptions.with_score_layers` refits on other scored layers without running the model again (Table 6).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch.nn as nn

from .data import LabeledImages
from .detector_inputs import ArrayLike
from .reference_checks import ReferenceWarning
from .validation import NotFittedError, check_number, same_setting

__all__ = ["DetectorOptions", "MAD_TO_STD", "TRAJECTORY_STD_FLOOR", "median_and_mad"]

#: ``score="trajectory"``: floor of a layer's reference std of cosine similarity, so that a layer at which a
#: class's reference samples agree exactly does not turn every small deviation into an infinite z-score.
TRAJECTORY_STD_FLOOR = 1e-3

#: 1 / Phi^-1(3/4): scales the median absolute deviation to the standard deviation of a normal law.
MAD_TO_STD = 1.4826


def median_and_mad(scores: np.ndarray) -> tuple[float, float]:
    """``(median, MAD_TO_STD × median absolute deviation)`` of ``scores``: ``spread="mad"``'s ``(mu, sigma)``.

    Examples
    --------
    >>> median_and_mad(np.array([1.0, 2.0, 3.0, 100.0]))  # the outlier moves neither much
    (2.5, 1.4826)
    """
    median = float(np.median(scores))
    return median, float(MAD_TO_STD * np.median(np.abs(scores - median)))


class DetectorOptions:
    """The settings ``score="trajectory"``, ``target_fpr`` and ``spread="mad"`` of the layer-wise detector, and
    :meth:`with_score_layers`; see the module docstring. Mixed into :class:`analysis.detection.LayerwiseDetector`.

    Learned attributes, for ``score="trajectory"``: ``trajectory_mean_`` and ``trajectory_std_`` (class -> [K], over
    the K scored layers, all L unless ``score_layers`` is set) and ``trajectory_precision_`` ``[K, K]``; for
    ``target_fpr``: ``calibrated_tau_`` (the effective tau; ``inf`` when too few calibration scores for the target),
    ``calibration_`` (``"leave-one-out"`` after ``fit``, ``"held-out"`` after :meth:`calibrate`) and
    ``calibration_size_`` (how many scores). With ``target_fpr``, ``tau`` is unused unless passed to
    ``flag_scores`` or ``thresholds``.
    """

    # ------------------------------------------------------------------ settings
    def _check_option_settings(self) -> None:
        if self.target_fpr is not None:
            check_number(self.target_fpr, "target_fpr", 0.0, 1.0, low_open=True, high_open=True)
        if self.spread not in ("std", "mad"):
            raise ValueError(f"spread: expected 'std' or 'mad', got {self.spread!r}")
        if self.score not in ("sum", "trajectory"):
            raise ValueError(f"score: expected 'sum' or 'trajectory', got {self.score!r}")
        if self.score == "trajectory" and self.metric != "cosine":
            raise ValueError(f"score: 'trajectory' standardises cosine similarities; it needs metric='cosine', "
                             f"got metric={self.metric!r}")

    # ------------------------------------------------------------------ score="trajectory"
    def _fit_trajectory(self, cos: np.ndarray, labels: np.ndarray) -> None:
        """``score="trajectory"``: per class and scored layer, the reference mean and std; one pooled precision."""
        from sklearn.covariance import LedoitWolf

        self.trajectory_mean_, self.trajectory_std_ = {}, {}
        z_rows = np.zeros((len(labels), len(next(iter(self.score_layers_.values())))))
        for t in self.classes_.tolist():
            rows = labels == t
            values = cos[rows][:, [layer - 1 for layer in self.score_layers_[t]]]
            self.trajectory_mean_[t] = values.mean(0)
            self.trajectory_std_[t] = np.maximum(values.std(0), TRAJECTORY_STD_FLOOR)
            z_rows[rows] = (values - self.trajectory_mean_[t]) / self.trajectory_std_[t]
        # each class's z-vectors are centred by construction: pool them around 0
        self.trajectory_precision_ = LedoitWolf(assume_centered=True).fit(z_rows).precision_
        for t in self.classes_.tolist():
            z = z_rows[labels == t]
            self.reference_scores_[t] = np.einsum("ij,jk,ik->i", z, self.trajectory_precision_, z)

    def _trajectory_scores(self, similarity: np.ndarray, t: int) -> np.ndarray:
        """Squared Mahalanobis distances ``[n]`` of similarities ``[n, K]`` (the scored layers) for class ``t``."""
        z = (similarity - self.trajectory_mean_[t]) / self.trajectory_std_[t]
        return np.einsum("ij,jk,ik->i", z, self.trajectory_precision_, z)

    # ------------------------------------------------------------------ target_fpr
    def _leave_one_out_suspicion(self) -> np.ndarray:
        """``[N]`` each reference sample's suspicion as if it had been left out of the fit (``target_fpr``'s calibration).

        In-sample suspicion is biased low: a sample pulls its own class's centroids, mean and std towards
        itself, so a threshold set on in-sample scores flags more new benign inputs than the target. Here each sample
        is scored against its class's centroids without it (exact: :func:`analysis.similarity.leave_one_out_cosine`;
        Euclidean distances grow by n / (n - 1)), against the mu and sigma (sum) or per-layer mean and std
        (trajectory) of the *other* samples' in-sample values. Not recomputed without it: the other samples'
        similarities, the LOI, the trajectory's pooled covariance and its pooled mu and sigma (one sample among all
        classes' moves them little).
        """
        labels, cos, loo_cos = self.reference_labels_, self.reference_similarity_, self.reference_similarity_loo_
        out = np.empty(len(labels))
        for t in self.classes_.tolist():
            rows = np.flatnonzero(labels == t)
            n, columns = len(rows), [layer - 1 for layer in self.score_layers_[t]]
            if self.score == "trajectory":
                values, held_out = cos[rows][:, columns], loo_cos[rows][:, columns]
                mean_others = (values.sum(0) - values) / (n - 1)
                var_others = ((values ** 2).sum(0) - values ** 2) / (n - 1) - mean_others ** 2
                z = (held_out - mean_others) / np.maximum(np.sqrt(np.maximum(var_others, 0.0)), TRAJECTORY_STD_FLOOR)
                distances = np.einsum("ij,jk,ik->i", z, self.trajectory_precision_, z)
                out[rows] = (distances - self.mu_[t]) / max(self.sigma_[t], 1e-12)
                continue
            if self.reference_distance_ is None:
                held_out = loo_cos[rows][:, columns].sum(1)
            else:
                held_out = self.reference_distance_[rows][:, columns].sum(1) * n / (n - 1)
            in_sample = self.reference_scores_[t]
            if self.spread == "std":  # mean and population std of the other n - 1 scores, all at once
                mu = (in_sample.sum() - in_sample) / (n - 1)
                sigma = np.sqrt(np.maximum(((in_sample ** 2).sum() - in_sample ** 2) / (n - 1) - mu ** 2, 0.0))
            else:
                mu, sigma = np.array([self._location_spread(np.delete(in_sample, k)) for k in range(n)]).T
            sign = 1.0 if self._higher_is_suspicious else -1.0
            out[rows] = sign * (held_out - mu) / np.maximum(sigma, 1e-12)
        return out

    def _set_calibration(self, suspicion: np.ndarray, source: str) -> None:
        """``calibrated_tau_``: the split-conformal threshold of benign ``suspicion`` scores for ``target_fpr``."""
        from .metrics import conformal_threshold

        self.calibrated_tau_ = conformal_threshold(suspicion, self.target_fpr)
        self.calibration_, self.calibration_size_ = source, len(suspicion)
        self.fit_params_["target_fpr"] = self.target_fpr  # the rate calibrated_tau_ is for
        if not np.isfinite(self.calibrated_tau_):
            warnings.warn(f"target_fpr={self.target_fpr}: {len(suspicion)} calibration scores are too few to reach it "
                          f"(at least {int(np.ceil(1 / self.target_fpr - 1))} are needed); nothing will be flagged",
                          ReferenceWarning, stacklevel=3)

    def _calibrated_tau(self) -> float:
        """``calibrated_tau_``, once checked that it was calibrated for the current ``target_fpr``."""
        if not hasattr(self, "calibrated_tau_"):
            raise NotFittedError("target_fpr was set after fit: fit again, or call calibrate(model, benign)")
        calibrated_for = getattr(self, "fit_params_", {}).get("target_fpr", self.target_fpr)
        if not same_setting(self.target_fpr, calibrated_for):
            raise ValueError(f"target_fpr: changed after fit (calibrated for {calibrated_for!r}, now "
                             f"{self.target_fpr!r}); refit, or call calibrate(model, benign)")
        return self.calibrated_tau_

    def calibrate(self, model: nn.Module, x: LabeledImages | ArrayLike):
        """Set ``calibrated_tau_`` from held-out benign inputs ``x`` (not the reference samples); returns ``self``.

        The split-conformal step of ``target_fpr``: each input is scored against its predicted class, as at
        detection time, and the threshold is the order statistic of :func:`analysis.metrics.conformal_threshold`
        of their suspicion scores. If new benign inputs are drawn like ``x``, each is flagged with probability
        at most ``target_fpr``. Labels, when ``x`` has them, are not read.
        """
        predicted, scores = self._scores(model, x)  # checks fitted, model and inputs; no threshold needed yet
        return self.calibrate_scores(scores, predicted)

    def calibrate_scores(self, scores: ArrayLike, predicted: ArrayLike):
        """:meth:`calibrate` from precomputed scores ``[N]`` (as ``score_features`` returns) and predicted classes."""
        self._check_fitted()
        if self.target_fpr is None:
            raise ValueError("target_fpr: calibration needs a target false-positive rate; build the detector with "
                             "target_fpr=... (e.g. 0.05)")
        suspicion = self.suspicion_from_scores(scores, predicted)
        known = np.isfinite(suspicion)
        if not known.any():
            raise ValueError("scores: no input has a finite suspicion score (all predicted as classes without "
                             "reference samples?)")
        if not known.all():
            warnings.warn(f"calibrate: {int((~known).sum())} of {len(known)} inputs have no score (classes without "
                          f"reference samples) and are left out", ReferenceWarning, stacklevel=2)
        self._set_calibration(suspicion[known], "held-out")
        return self

    # ------------------------------------------------------------------ Table 6 without the model
    def with_score_layers(self, score_layers: Sequence[int] | None):
        """A new detector with these ``score_layers`` (None: the LOI rule), fitted on this one's reference samples.

        Same settings, centroids and reference similarities, so the result equals
        ``LayerwiseDetector(score_layers=..., <same settings>).fit(model, reference)`` without running the model
        again (Table 6 scores every single layer this way).
        """
        self._check_fitted()
        other = type(self)(**{**self.get_params(), "score_layers": score_layers})
        other._check_settings()
        other.layer_names_, other.input_shape_ = self.layer_names_, self.input_shape_
        other.model_fingerprint_ = self.model_fingerprint_
        return other._fit_from_similarities(self.reference_labels_, self.centroids_, self.reference_similarity_,
                                            self.reference_similarity_loo_, self.reference_distance_)
