"""What a fitted :class:`analysis.detection.LayerwiseDetector` reads out besides its flags.

:class:`DetectorViews` is a mixin the detector inherits from, so that :mod:`analysis.detection` holds the paper's
algorithms (the raw score and the flag) and this module the views of the same fitted state:

* standardised scores on one scale for every class, metric and score, in the vocabulary of every
  :class:`~analysis.estimator.Defense` (scikit-learn's): :meth:`~DetectorViews.suspicion` ``(model, x)`` (higher =
  more suspicious; flagged exactly above tau), its negative :meth:`~DetectorViews.score_samples` (higher = more
  normal) and :meth:`~DetectorViews.decision_function` (``tau - suspicion``: negative exactly where flagged); the
  paper's raw scores are ``score_features`` and ``detect(...).scores``, and :meth:`~DetectorViews.suspicion_from_scores`
  standardises them (the table in ``docs/extending.md`` lists every detector's scores, their sign and their scale);
* the per-layer cosine similarity curves of Figs. 2 and 3 (:meth:`~DetectorViews.layerwise_similarity`).

It reads the fitted state the detector sets (``mu_``, ``sigma_``, ``centroids_``, ...) and is not usable on its own.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from .data import LabeledImages
from .detector_inputs import ArrayLike, as_labels, check_feature_list
from .estimator import signed_margin
from .fingerprint import check_same_model
from .similarity import cosine_to
from .validation import check_index

__all__ = ["DetectorViews"]


class DetectorViews:
    """Standardised scores (the :class:`~analysis.estimator.Defense` vocabulary) and per-layer similarity curves."""

    # the Defense protocol's class settings (analysis.estimator.Defense), for the layer-wise detector
    _fitted_attribute = "mu_"
    _float32_only = False  # float64 and float16 models run in their own dtype
    _nan_scores_allowed = True  # classes without reference samples score NaN, flagged or not as unknown_class says

    # ------------------------------------------------------------------ standardised scores
    def suspicion_from_scores(self, scores: ArrayLike, predicted: ArrayLike) -> np.ndarray:
        """Raw scores (``detect(...).scores``, :meth:`score_features`) standardised by the predicted class's reference
        mu and sigma, signed so that higher = more suspicious: what :meth:`suspicion` returns for a model and inputs.

        ``(mu_c - score) / sigma_c`` for cosine sums, ``(score - mu_c) / sigma_c`` for Euclidean and trajectory scores (sigma floored
        at 1e-12); NaN for a class without reference samples. An input is flagged at ``tau`` exactly
        when its suspicion exceeds ``tau`` (for sigma > 0), so one threshold on this scale serves every
        class: it is the score behind AUROC and ROC curves.
        """
        self._check_fitted()
        scores_np = np.asarray(scores, dtype=np.float64)
        predicted_np = as_labels(predicted, "predicted")
        mu = np.array([self.mu_.get(int(t), np.nan) for t in predicted_np])
        sigma = np.array([self.sigma_.get(int(t), np.nan) for t in predicted_np])
        sign = 1.0 if self._higher_is_suspicious else -1.0
        return sign * (scores_np - mu) / np.maximum(sigma, 1e-12)

    def suspicion(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """float64 ``[N]``, as every :class:`~analysis.estimator.Defense`: higher = more suspicious, flagged exactly above
        the tau in effect; the raw score standardised per predicted class (:meth:`suspicion_from_scores`).

        Raw scores are standardised by :meth:`suspicion_from_scores`; the old call ``suspicion(scores, predicted)``
        (two 1-D arrays) still does so with a DeprecationWarning, anything else that is not a model a TypeError.
        """
        if not isinstance(model, nn.Module):
            if np.ndim(model) == 1 and np.ndim(x) == 1:  # the old (scores, predicted): the same values, renamed
                warnings.warn("LayerwiseDetector.suspicion(scores, predicted) is now suspicion_from_scores(scores, "
                              "predicted); suspicion takes (model, x) as every Defense", DeprecationWarning, stacklevel=2)
                return self.suspicion_from_scores(model, x)
            raise TypeError(f"suspicion(model, x): model: expected a torch.nn.Module, got {type(model).__name__}; "
                            f"to standardise raw scores call suspicion_from_scores(scores, predicted)")
        return self.detect(model, x).suspicion

    def score_samples(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """scikit-learn's direction, ``[N]`` higher = more normal, for every metric and score: ``-suspicion``.

        The raw score standardised by the predicted class's reference mu and sigma: ``(s - mu_c) / sigma_c`` for the
        paper's summed cosine similarity, ``(mu_c - s) / sigma_c`` for Euclidean and trajectory distances; NaN for a
        class without reference samples. The paper's raw scores (summed similarity or distance) are
        :meth:`detect`'s ``.scores`` and :meth:`score_features`.
        """
        return -self.suspicion(model, x)

    def decision_function(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """scikit-learn's sign convention: float64 ``[N]``, negative exactly where :meth:`predict` flags.

        ``tau - suspicion`` (:meth:`suspicion`; the tau in effect, ``calibrated_tau_`` with ``target_fpr``), in
        standard deviations of the predicted class's reference scores, for every metric and score, so the sign
        means the same whatever the raw score's direction. The paper's comparison on the raw score decides the
        flags, so where rounding at the boundary or a class without reference samples (NaN) would disagree, the
        sign follows the flag (:func:`analysis.estimator.signed_margin`).
        """
        return self._detect(model, x)[1]

    def _detect(self, model: nn.Module, x: LabeledImages | ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The Defense protocol's ``(suspicion, decision)``, from one :meth:`detect`."""
        found = self.detect(model, x)
        return found.suspicion, signed_margin(self._tau(None) - found.suspicion, found.flagged)

    def _check_same_model(self, model: nn.Module) -> None:
        """Nothing here: :meth:`detect` checks the model once per call (one fingerprint, not two)."""

    def decision_function_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """:meth:`decision_function` for inputs with precomputed features (L arrays ``[N, D_l]``) and predicted classes."""
        predicted_np = as_labels(predicted, "predicted")
        scores = self.score_features(features, predicted_np)
        suspicion = self.suspicion_from_scores(scores, predicted_np)
        return signed_margin(self._tau(None) - suspicion, self.flag_scores(scores, predicted_np))

    @property
    def detector_(self):
        """Deprecated: the detector itself (the removed adapter ``LayerwiseDefense`` kept it here)."""
        self._check_fitted()
        warnings.warn("LayerwiseDetector is the 'layerwise' defense itself: use it directly, not .detector_",
                      DeprecationWarning, stacklevel=2)
        return self

    # ------------------------------------------------------------------ curves (Figs. 2 and 3)
    def layerwise_similarity_features(self, features: Sequence[ArrayLike], classes: ArrayLike) -> np.ndarray:
        """``[N, L]`` cosine similarity of each input to the centroids of ``classes[i]`` at every layer."""
        self._check_fitted()
        classes_np = as_labels(classes, "classes")
        feats = check_feature_list(features, len(classes_np), expected_layers=self.n_layers_)
        out = np.full((len(classes_np), self.n_layers_), np.nan)
        for t in np.unique(classes_np).tolist():
            if t not in self.centroids_:
                raise ValueError(f"classes: class {t} had no reference samples, so it has no centroids")
            rows = np.flatnonzero(classes_np == t)
            for i, f in enumerate(feats):
                sub = f[torch.as_tensor(rows, device=f.device)] if isinstance(f, torch.Tensor) else np.asarray(f)[rows]
                out[rows, i] = cosine_to(sub, self.centroids_[t][i]).cpu().numpy()
        return out

    def layerwise_similarity(
        self, model: nn.Module, x: LabeledImages | ArrayLike, classes: ArrayLike | int | None = None
    ) -> np.ndarray:
        """``[N, L]`` cosine similarity of each input to a class's centroids at every layer (Fig. 2/3 curves).

        ``classes``: one class for all inputs, one per input, or None for the predicted class.
        """
        self._model_layers_needed()
        check_same_model(self, model)
        images = self._check_inputs(x)
        fixed = None
        if classes is not None:
            fixed = np.full(len(images), check_index(classes, "classes", 0)) if np.ndim(classes) == 0 else as_labels(classes, "classes")
            if len(fixed) != len(images):
                raise ValueError(f"classes: {len(fixed)} classes for {len(images)} inputs")
        rows = []
        for start, (feats, logits) in self._batched(model, images, self.layer_names_):
            batch_classes = logits.argmax(1).cpu().numpy() if fixed is None else fixed[start : start + len(logits)]
            rows.append(self.layerwise_similarity_features(feats, batch_classes))
        return np.concatenate(rows)
