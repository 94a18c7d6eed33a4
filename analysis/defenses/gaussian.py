"""A layer-wise detector calibrated for low false-positive rates (not in the paper): per-layer class Gaussians.

The paper's detector (:class:`analysis.detection.LayerwiseDetector`) reads one statistic, the summed cosine
similarity at LOI-2..LOI, with a per-class mean and std of a handful of reference scores. On natural images
three things break it at a 1 % false-positive rate: the separating layers are often below the LOI, classes
with 6-9 reference images give noisy thresholds, and atypical benign images inflate sigma. This detector
keeps the paper's idea (a poisoned input's features at intermediate layers do not look like the benign
features of the class it is predicted as) and changes how it is measured:

1. **Features**: the output of each of the model's ``L`` paper layers, averaged over spatial positions
   (``[C_l]`` per input; :func:`analysis.features.capture` with ``pool=True``).
2. **Per layer, class Gaussians with one shared covariance**: class means from the benign reference samples
   (grouped by true label, as the paper's centroids) and one within-class covariance pooled over all
   classes with Ledoit-Wolf shrinkage, so a class with 6 images borrows the others' shape. An input's
   distance at layer ``l`` is its squared Mahalanobis distance to the mean of the class it is *predicted*
   as, divided by ``1 + 1/n_c`` (the expected inflation for a class mean estimated from ``n_c`` samples).
3. **Cross-fitted reference distances**: the reference set is split into ``folds`` stratified folds; each
   fold's distances come from means and covariances fitted on the other folds, with the model's predicted
   class (as at detection time, so misclassified benign images are part of the null). In-sample distances
   would be biased low, the thresholds too.
4. **One score over all layers**: ``log`` distance per layer, standardised by the median and MAD of the
   cross-fitted reference values at that layer (every layer on one scale, whatever its width), combined
   by ``aggregate``: ``"max"`` (the most abnormal layer), ``"mean"``, or ``"mahalanobis"`` (the
   Ledoit-Wolf Mahalanobis distance of the vector of per-layer z-scores, which accounts for adjacent
   layers agreeing).
5. **Threshold from a target false-positive rate**: the split-conformal order statistic
   (:func:`analysis.metrics.conformal_threshold`) of the cross-fitted reference scores at ``target_fpr``
   (default 1 %), no triggered input involved. :meth:`calibrate` replaces it with one from held-out benign
   inputs.

Cost: one forward pass with spatial means at every paper layer, plus a ``C_l × C_l`` product per layer.
"""
from __future__ import annotations

import warnings
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..detection import Detection
from ..detection_options import MAD_TO_STD
from ..features import iter_features, paper_layers
from ..metrics import conformal_threshold
from ..reference_checks import ReferenceWarning
from .base import Defense, Images, as_images, check_choice, check_int, check_labeled, check_model, check_number

__all__ = ["LayerwiseGaussianDetector", "layer_distances"]

#: Floor of a layer's MAD of log distances, so that a layer where every reference input agrees stays finite.
MAD_FLOOR = 1e-6


class _LayerGaussians:
    """Class means and one Ledoit-Wolf shared precision of one layer's features ``[N, D]``."""

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.covariance import LedoitWolf

        self.classes = np.unique(labels)
        self.means = np.stack([features[labels == c].mean(0) for c in self.classes])
        self.counts = np.array([np.sum(labels == c) for c in self.classes], dtype=np.float64)
        centred = features - self.means[np.searchsorted(self.classes, labels)]
        self.precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        self._index = {int(c): i for i, c in enumerate(self.classes)}

    def distances(self, features: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """``[N]`` squared Mahalanobis distance to each input's class mean / (1 + 1/n_c); NaN for unknown classes."""
        rows = np.array([self._index.get(int(c), -1) for c in classes])
        out = np.full(len(features), np.nan)
        known = rows >= 0
        if known.any():
            diff = features[known] - self.means[rows[known]]
            # (diff @ P) * diff summed: one BLAS product, where a three-operand einsum loops in C without BLAS
            out[known] = ((diff @ self.precision) * diff).sum(1) / (1.0 + 1.0 / self.counts[rows[known]])
        return out


def layer_distances(train_features: Sequence[np.ndarray], train_labels: np.ndarray,
                    features: Sequence[np.ndarray], classes: np.ndarray) -> np.ndarray:
    """``[N, L]`` per-layer distances of ``features`` to the Gaussians of ``classes`` fitted on ``train_features``.

    Each of the L layers is fitted on its own (:class:`_LayerGaussians`): class means of ``train_features[l]``
    grouped by ``train_labels`` and a pooled Ledoit-Wolf within-class covariance.

    Examples
    --------
    Two classes around (0, 0) and (4, 0); an input at the class-1 mean is 0 from class 1 and far from class 0:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50)
    >>> layer = rng.normal(size=(100, 2)) + np.array([[0.0, 0.0], [4.0, 0.0]])[labels]
    >>> mean1 = layer[labels == 1].mean(0, keepdims=True)
    >>> d = layer_distances([layer], labels, [np.vstack([mean1, mean1])], np.array([1, 0]))
    >>> bool(d[0, 0] < 1e-12), bool(d[1, 0] > 10)
    (True, True)
    """
    return np.stack([_LayerGaussians(np.asarray(f, np.float64), train_labels).distances(np.asarray(g, np.float64), classes)
                     for f, g in zip(train_features, features)], axis=1)


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``[N]`` fold index per sample: each class's samples dealt round-robin over the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        out[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)  # spread the small classes' folds
    return out


class LayerwiseGaussianDetector(Defense):
    """Flag inputs whose features, at any of the model's layers, are far from the benign Gaussian of their predicted class.

    Not the paper's rule (that is :class:`analysis.detection.LayerwiseDetector`): see the module docstring
    for the method and why. Fitted on benign reference samples only; the threshold comes from a target
    false-positive rate, not a tau.

    Parameters
    ----------
    target_fpr : float, default=0.01
        The false-positive rate the threshold is calibrated for, in (0, 1).
    aggregate : {"max", "mean", "mahalanobis"}, default="max"
        How the per-layer z-scores of an input become one score.
    layers : list of str or None
        Module paths of the layers, in forward order; default the model's ``paper_layers``.
    folds : int, default=5
        Folds of the cross-fitted reference distances (at least 2).
    batch_size : int, default=256
        Inputs per forward pass.
    seed : int, default=0
        Seed of the fold assignment.

    Attributes
    ----------
    layer_names_ : list of str
    classes_ : ndarray of the reference classes
    location_, scale_ : ndarray ``[L]``, median and 1.4826 × MAD of the cross-fitted reference log distances
    reference_suspicion_ : ndarray ``[N]``, the cross-fitted suspicion of each reference sample
    threshold_ : float, the conformal threshold on the suspicion at ``target_fpr`` (recomputed from
        ``calibration_scores_`` when ``target_fpr`` is changed after fit)
    calibration_scores_ : ndarray, the sorted calibration suspicion scores
    gaussians_ : list of the L per-layer class Gaussians fitted on the whole reference set
    calibration_ : ``"cross-fitted"`` or ``"held-out"`` (after :meth:`calibrate`)

    Examples
    --------
    See ``tests/test_gaussian_detector.py``: on pooled features, an input whose intermediate-layer features
    belong to another class than its final-layer features is flagged, benign inputs are not.
    """

    _fitted_attribute = "threshold_"
    #: the fitted Gaussians, scales and cross-fitted scores depend on these; ``target_fpr`` is not among them: the
    #: threshold is recomputed from the kept calibration scores at each use, and ``batch_size`` is read where used
    _refit_settings = ("aggregate", "layers", "folds", "seed")

    def __init__(self, target_fpr: float = 0.01, *, aggregate: Literal["max", "mean", "mahalanobis"] = "max",
                 layers: Sequence[str] | None = None, folds: int = 5, batch_size: int = 256, seed: int = 0) -> None:
        self.target_fpr = target_fpr
        self.aggregate = aggregate
        self.layers = layers
        self.folds = folds
        self.batch_size = batch_size
        self.seed = seed

    # ------------------------------------------------------------------ settings
    def _check_settings(self) -> None:
        check_number(self.target_fpr, "target_fpr", 0.0, 1.0, low_open=True, high_open=True)
        check_choice(self.aggregate, "aggregate", ("max", "mean", "mahalanobis"))
        check_int(self.folds, "folds", 2)
        check_int(self.batch_size, "batch_size", 1)
        if isinstance(self.layers, str):
            raise TypeError(f"layers: expected a list of module paths in forward order, got the single string "
                            f"{self.layers!r}")

    # ------------------------------------------------------------------ features
    def _features(self, model: nn.Module, images: torch.Tensor, names: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Spatially pooled features of ``names`` (float64 ``[N, C_l]`` each) and the predicted classes ``[N]``."""
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        predicted = []
        for feats, logits in iter_features(model, images, names, self.batch_size, in_forward_order=True, pool=True):
            for store, f in zip(chunks, feats):
                store.append(f.double().cpu().numpy())
            predicted.append(logits.argmax(1).cpu().numpy())
        features = [np.concatenate(c) for c in chunks]
        for name, f in zip(names, features):
            if not np.all(np.isfinite(f)):
                raise ValueError(f"features of layer {name!r}: contain NaN or inf (check the model and its inputs)")
        return features, np.concatenate(predicted)

    # ------------------------------------------------------------------ fitting
    def fit(self, model: nn.Module, reference: LabeledImages, train: LabeledImages | None = None):
        """Fit on the benign ``reference`` images; ``train`` is ignored."""
        self._check_settings()
        check_labeled(reference, "reference", min_size=2)
        names = list(self.layers) if self.layers is not None else paper_layers(model)
        features, predicted = self._features(model, as_images(reference.x, "reference"), names)
        self.layer_names_ = names
        self.input_shape_ = tuple(reference.x.shape[1:])
        return self.fit_features(features, reference.y.numpy(), predicted)

    def fit_features(self, features: Sequence[np.ndarray], labels: np.ndarray, predicted: np.ndarray | None = None):
        """Fit on precomputed pooled features (L arrays ``[N, C_l]``), true labels and the model's predictions.

        ``predicted`` (default: ``labels``) is the class each reference sample is scored against in the
        cross-fitted calibration, as a new input is scored against its predicted class.
        """
        self._check_settings()
        self.model_fingerprint_ = None  # no model here; fit() records the model's fingerprint after this returns
        labels = np.asarray(labels, dtype=np.int64)
        predicted = labels if predicted is None else np.asarray(predicted, dtype=np.int64)
        features = [np.asarray(f, dtype=np.float64) for f in features]
        counts = dict(zip(*np.unique(labels, return_counts=True)))
        few = {int(c): int(k) for c, k in counts.items() if k < self.folds}
        if few:
            raise ValueError(f"reference: every class needs at least folds={self.folds} samples for the cross-fitted "
                             f"calibration; too few for {few} (class: count)")
        if min(counts.values()) < 10:
            warnings.warn(f"reference: classes with fewer than 10 samples ({ {int(c): int(k) for c, k in counts.items() if k < 10} }); "
                          f"their means borrow the pooled covariance, but their distances stay noisy",
                          ReferenceWarning, stacklevel=2)
        fold = _stratified_folds(labels, self.folds, self.seed)
        held_out = np.full((len(labels), len(features)), np.nan)
        for k in range(self.folds):
            out, kept = fold == k, fold != k
            held_out[out] = layer_distances([f[kept] for f in features], labels[kept], [f[out] for f in features],
                                            predicted[out])
        # a predicted class absent from the other folds' labels (never here: every class is in every fold's rest)
        log_d = np.log(np.maximum(held_out, 1e-300))
        usable = np.all(np.isfinite(log_d), axis=1)
        self.location_ = np.median(log_d[usable], axis=0)
        self.scale_ = np.maximum(MAD_TO_STD * np.median(np.abs(log_d[usable] - self.location_), axis=0), MAD_FLOOR)
        z = (log_d - self.location_) / self.scale_
        self.gaussians_ = [_LayerGaussians(f, labels) for f in features]
        self.classes_ = self.gaussians_[0].classes
        if self.aggregate == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            robust = LedoitWolf().fit(z[usable])
            self.z_mean_, self.z_precision_ = robust.location_, robust.precision_
        self.reference_suspicion_ = self._aggregate(z)
        self._set_threshold(self.reference_suspicion_[np.isfinite(self.reference_suspicion_)], "cross-fitted")
        self.n_layers_ = len(features)
        return self

    def _set_threshold(self, suspicion: np.ndarray, source: str) -> None:
        self.calibration_scores_ = np.sort(np.asarray(suspicion, dtype=np.float64))
        self.threshold_ = conformal_threshold(suspicion, self.target_fpr)
        self.calibration_, self.calibration_size_ = source, len(suspicion)
        if not np.isfinite(self.threshold_):
            warnings.warn(f"target_fpr={self.target_fpr}: {len(suspicion)} calibration scores are too few to reach it "
                          f"(at least {int(np.ceil(1 / self.target_fpr - 1))} are needed); nothing will be flagged",
                          ReferenceWarning, stacklevel=3)

    def calibrate(self, model: nn.Module, x: Images) -> "LayerwiseGaussianDetector":
        """Set ``threshold_`` from held-out benign inputs ``x`` (split conformal, exact finite-sample guarantee)."""
        self._check_fitted()
        suspicion = self.suspicion(model, x)
        self._set_threshold(suspicion[np.isfinite(suspicion)], "held-out")
        return self

    def _current_threshold(self) -> float:
        """The threshold for the current ``target_fpr`` (changed after fit: recomputed from the calibration scores)."""
        self._check_settings()
        self.threshold_ = conformal_threshold(self.calibration_scores_, self.target_fpr)
        return self.threshold_

    # ------------------------------------------------------------------ scoring
    def _aggregate(self, z: np.ndarray) -> np.ndarray:
        if self.aggregate == "max":
            return z.max(1)
        if self.aggregate == "mean":
            return z.mean(1)
        diff = z - self.z_mean_
        return np.einsum("ij,jk,ik->i", diff, self.z_precision_, diff)

    def layer_scores_features(self, features: Sequence[np.ndarray], predicted: np.ndarray) -> np.ndarray:
        """``[N, L]`` per-layer z-scores of inputs with precomputed pooled features and predicted classes."""
        self._check_fitted()
        predicted = np.asarray(predicted, dtype=np.int64)
        d = np.stack([g.distances(np.asarray(f, np.float64), predicted) for g, f in zip(self.gaussians_, features)], 1)
        return (np.log(np.maximum(d, 1e-300)) - self.location_) / self.scale_

    def suspicion_features(self, features: Sequence[np.ndarray], predicted: np.ndarray) -> np.ndarray:
        """``[N]`` suspicion (higher = more suspicious) from precomputed pooled features and predicted classes."""
        return self._aggregate(self.layer_scores_features(features, predicted))

    def _scores(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(suspicion, decision, predicted)`` from one forward pass; a class never seen in the reference raises."""
        if getattr(self, "layer_names_", None) is None:
            raise RuntimeError("this detector was fitted on features (fit_features); score with suspicion_features")
        features, predicted = self._features(model, images, self.layer_names_)
        unknown = sorted(set(np.unique(predicted).tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise ValueError(f"x: inputs are predicted as classes {unknown}, which had no reference samples, so they "
                             f"cannot be scored (fitted classes: {self.classes_.tolist()}); add reference samples of "
                             f"those classes")
        suspicion = self.suspicion_features(features, predicted)
        return suspicion, self._current_threshold() - suspicion, predicted

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self._scores(model, images)[:2]

    def detect(self, model: nn.Module, x: Images) -> Detection:
        """Predicted class, suspicion and flag of every input, from one forward pass (the base class makes two)."""
        self._check_fitted()
        check_model(model, float32_only=self._float32_only)
        self._check_same_model(model)
        suspicion, decision, predicted = self._scores(model, as_images(x, "x"))
        return Detection(predicted, suspicion, decision < 0)
