"""The layer-wise detector of poisoned inputs (paper, Algorithm 2), with a scikit-learn interface.

Layers are numbered 1..L as in the paper (index 0 of a feature list is layer 1).

Fit, on the defender's benign reference samples, grouped by their true label t:

1. centroid of t's features at every layer (Definition 1);
2. cosine similarity of each reference sample of t to that centroid, and their mean
   per layer, ``mean_similarity_[t]`` (Definition 2, Algorithm 2 lines 5-7);
3. ``loi_[t]``: over l in {⌊L/2⌋+1, …, L}, the layer with the largest increase of the mean
   similarity over layer l-1; ties keep the first (strict ``>``, Algorithm 1);
4. a reference sample's score is the sum of its similarities at LOI_t-2, LOI_t-1, LOI_t;
   ``mu_[t]`` and ``sigma_[t]`` are the mean and population std (ddof = 0) of those scores.

Predict: an input predicted as t is flagged (True = poisoned) when its score is below
``mu_[t] - tau * sigma_[t]``.

Deviations from the paper, all documented and optional:

* centroids are estimated at every layer, not only ⌊L/2⌋..L, so that the full Fig. 2
  curves can be drawn (:meth:`layerwise_similarity`); the LOI rule and the scores only
  read layers ⌊L/2⌋-1..L, exactly as Algorithm 2 (the -1 makes LOI-2 always exist).
* ``score_layers`` replaces LOI-2..LOI by fixed layers for every class (Table 6);
* ``metric="euclidean"`` sums Euclidean distances instead and flags scores above
  ``mu + tau * sigma`` (Table 8); the LOI is still located with cosine similarity.
* options the paper does not have, off by default, are in :mod:`analysis.detection_options`, which the
  detector inherits: ``score="trajectory"`` (a Mahalanobis distance over the whole trajectory),
  ``target_fpr`` (tau calibrated to a false-positive rate, :meth:`~LayerwiseDetector.calibrate`) and
  ``spread="mad"`` (median and MAD instead of mean and std).

Standardised scores and the Fig. 2/3 curves are in :mod:`analysis.detection_views`; too small or too alike reference
sets are refused or warned about by :mod:`analysis.reference_checks` (its names users need are importable from here).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data import LabeledImages
from .detection_options import DetectorOptions, median_and_mad
from .detection_views import DetectorViews
from .detector_inputs import ArrayLike, as_labels, check_feature_list, check_finite, check_tau
from .features import iter_features, paper_layers
from .fingerprint import check_same_model
from .estimator import Defense, Detection, check_model, check_unchanged_settings, records_own_fit, snapshot_params
from .reference_checks import ReferenceWarning, check_reference_classes, check_reference_counts, warn_degenerate_spread
from .similarity import as_float64, cosine_to, euclidean_to, leave_one_out_cosine
from .validation import NotFittedError, check_images, check_indices

__all__ = ["Detection", "LayerwiseDetector", "ReferenceWarning", "check_reference_counts", "layer_of_interest"]

Metric = Literal["cosine", "euclidean"]
Score = Literal["sum", "trajectory"]


def layer_of_interest(mean_similarity: Sequence[float]) -> int:
    """Algorithm 1: the 1-indexed layer l in {⌊L/2⌋+1, …, L} maximising ``cs[l] - cs[l-1]``.

    ``mean_similarity`` holds one value per layer (index 0 = layer 1, length L); only
    layers ⌊L/2⌋..L are read. Ties keep the first layer (strict ``>``).

    Examples
    --------
    Six layers: candidates 4..6; the largest rise is 0.30 → 0.70, into layer 5.

    >>> layer_of_interest([0.1, 0.2, 0.25, 0.30, 0.70, 0.75])
    5
    """
    values = np.asarray(mean_similarity, dtype=np.float64)
    n_layers = len(values)
    if n_layers < 4:
        raise ValueError(f"mean_similarity: the rule needs at least 4 layers, got {n_layers}")
    half = n_layers // 2
    cs = lambda layer: values[layer - 1]  # noqa: E731 - 1-indexed view
    if not np.all(np.isfinite(values[half - 1 :])):
        raise ValueError(f"mean_similarity: non-finite value among layers {half}..{n_layers}: {values[half - 1:]}")
    best_layer, best_diff = half + 1, cs(half + 1) - cs(half)
    for layer in range(half + 2, n_layers + 1):
        diff = cs(layer) - cs(layer - 1)
        if diff > best_diff:
            best_layer, best_diff = layer, diff
    return best_layer


class LayerwiseDetector(DetectorViews, DetectorOptions, Defense):
    """Flag inputs whose summed similarity to benign class centroids at LOI-2..LOI is abnormally low.

    A :class:`~analysis.estimator.Defense` like the baselines (registered as ``"layerwise"``): ``fit(model,
    reference, train=None)``, ``predict``, ``suspicion``, ``score_samples``, ``decision_function`` and ``detect``
    take ``(model, x)``; the paper's raw score is ``detect(model, x).scores`` and :meth:`score_features`.

    Parameters
    ----------
    tau : threshold in standard deviations (paper: 2.5); the only positional setting, the others are keyword-only.
    metric : ``"cosine"`` (paper) or ``"euclidean"`` (Table 8).
    spread : how ``mu_``/``sigma_`` are estimated from the reference scores: ``"std"`` (paper: mean and population
        std) or ``"mad"`` (not in the paper: median and 1.4826 × median absolute deviation, robust to atypical
        reference samples).
    layers : module paths of the model's L layers, in order; default: the model's
        ``paper_layers``. Only used by :meth:`fit`.
    score_layers : 1-indexed layers to score on instead of LOI-2..LOI (Table 6); the
        LOI is still computed and reported.
    batch_size : inputs per forward pass.
    unknown_class : what to do with an input predicted as a class that had no reference
        samples: ``"raise"`` (default), ``"flag"`` (score NaN, flagged) or ``"ignore"``
        (score NaN, not flagged).
    score : ``"sum"`` (paper: summed similarity at LOI-2..LOI, or at ``score_layers``) or ``"trajectory"`` (not in
        the paper: Mahalanobis distance of the per-layer standardised similarities; higher = more suspicious).
    target_fpr : None (paper: flag beyond ``tau``) or a fraction in (0, 1) (not in the paper): flag beyond
        ``calibrated_tau_``, a tau calibrated to this false-positive rate (:meth:`calibrate`).

    Learned attributes: ``n_layers_``, ``classes_``, ``layer_names_`` and ``input_shape_`` (the
    reference images' ``(C, H, W)``, which inputs must match; both None after :meth:`fit_features`),
    ``centroids_`` (class -> list of L tensors [D_l]),
    ``reference_labels_`` ``[N]``, ``reference_similarity_`` ``[N, L]`` (each reference sample's
    cosine similarity to its own class's centroids), ``reference_similarity_loo_`` (the same, each computed
    without the sample), ``reference_distance_`` (in Euclidean distance, or None for cosine),
    ``mean_similarity_`` (class -> [L]), ``loi_`` (class -> layer), ``score_layers_``
    (class -> tuple of layers), ``reference_scores_`` (class -> [m]), ``mu_``, ``sigma_``; those of
    ``score="trajectory"`` and ``target_fpr`` are listed in :class:`analysis.detection_options.DetectorOptions`.

    Examples
    --------
    Two classes whose features point along their own axis at each of 6 layers; an input of class 0 whose
    features point the other way is far below its class's reference scores:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 20)
    >>> features = [np.eye(3)[labels] + rng.normal(scale=0.3, size=(40, 3)) for _ in range(6)]
    >>> detector = LayerwiseDetector().fit_features(features, labels)
    >>> detector.score_layers_[0] == (detector.loi_[0] - 2, detector.loi_[0] - 1, detector.loi_[0])
    True
    >>> detector.predict_features([f[:2] for f in features], [0, 0]).tolist()  # two reference samples
    [False, False]
    >>> detector.predict_features([-f[:2] for f in features], [0, 0]).tolist()  # the same, reversed
    [True, True]
    """

    def __init__(
        self,
        tau: float = 2.5,
        *,
        metric: Metric = "cosine",
        layers: Sequence[str] | None = None,
        score_layers: Sequence[int] | None = None,
        batch_size: int = 256,
        unknown_class: Literal["raise", "flag", "ignore"] = "raise",
        spread: Literal["std", "mad"] = "std",
        score: Score = "sum",
        target_fpr: float | None = None,
    ) -> None:
        self.tau = tau
        self.target_fpr = target_fpr
        self.score = score
        self.spread = spread
        self.metric = metric
        self.layers = layers
        self.score_layers = score_layers
        self.batch_size = batch_size
        self.unknown_class = unknown_class

    # ------------------------------------------------------------------ settings
    def _check_settings(self) -> None:
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric: expected 'cosine' or 'euclidean', got {self.metric!r}")
        check_tau(self.tau, "tau")
        self._check_option_settings()
        if self.unknown_class not in ("raise", "flag", "ignore"):
            raise ValueError(f"unknown_class: expected 'raise', 'flag' or 'ignore', got {self.unknown_class!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size}")
        if isinstance(self.layers, str):
            raise TypeError(f"layers: expected a list of module paths in forward order, got the single string "
                            f"{self.layers!r}; write layers=[{self.layers!r}, ...]")

    #: settings the fitted state (centroids, LOI, mu, sigma, ...) depends on: changed after fit (``set_params``), they
    #: are refused with "refit"; the others (tau, batch_size, unknown_class) are read where they are used.
    #: ``target_fpr`` is checked where the threshold is read (:meth:`_tau`): set to None it falls back to ``tau``;
    #: changed to another rate, :meth:`calibrate` sets the threshold again.
    _refit_settings = ("metric", "layers", "score_layers", "spread", "score")

    def _check_fitted(self) -> None:
        if not hasattr(self, "mu_"):
            raise NotFittedError("this LayerwiseDetector is not fitted yet: call fit(model, reference) or fit_features(...)")
        check_unchanged_settings(self, self._refit_settings)

    # ------------------------------------------------------------------ fitting
    def fit_features(self, features: Sequence[ArrayLike], labels: ArrayLike) -> "LayerwiseDetector":
        """:meth:`fit` on precomputed reference features: L arrays ``[N, D_l]`` in layer order, true labels ``[N]``."""
        self._check_settings()
        labels_np = as_labels(labels, "labels")
        feats = check_feature_list(features, len(labels_np), expected_layers=None)
        if any(f is None for f in feats):
            raise ValueError("features: fit_features needs an array for every layer, got None")
        similarities = self._reference_similarities(lambda: iter([(0, feats)]), labels_np,
                                                    [f"features[{i}]" for i in range(len(feats))])
        self.layer_names_, self.input_shape_ = None, None
        self.model_fingerprint_ = None
        return self._fit_from_similarities(labels_np, *similarities)

    @records_own_fit  # its warnings point at the caller's line
    def fit(self, model: nn.Module, reference: LabeledImages, train: LabeledImages | None = None) -> "LayerwiseDetector":
        """Fit on the model's features of the benign ``reference`` images (grouped by true label); ``train`` is ignored.

        Streams the reference set twice (class sums, then similarities), so memory holds
        one batch of features plus one centroid per class and layer.
        """
        check_model(model, float32_only=False)
        self._check_settings()
        if not isinstance(reference, LabeledImages):
            raise TypeError(f"reference: expected LabeledImages, got {type(reference).__name__}")
        names = list(self.layers) if self.layers is not None else paper_layers(model)
        labels_np = as_labels(reference.y, "reference.y")
        if len(labels_np) == 0:
            raise ValueError("reference: got no samples")

        def batches():
            return ((start, feats) for start, (feats, _) in self._batched(model, reference.x, names))

        similarities = self._reference_similarities(
            batches, labels_np, [f"features of layer {i + 1} ({name})" for i, name in enumerate(names)])
        self.layer_names_ = names
        self.input_shape_ = tuple(reference.x.shape[1:])
        self._fit_from_similarities(labels_np, *similarities)
        self._record_fit(model)  # the model's fingerprint (Defense)
        return self

    def _batched(self, model: nn.Module, images: torch.Tensor, names: Sequence[str]):
        """``(start, (features, logits))`` per batch; layers listed in forward order (the LOI rule reads them so)."""
        start = 0
        for feats, logits in iter_features(model, images, names, self.batch_size, in_forward_order=True):
            yield start, (feats, logits)
            start += len(logits)

    def _reference_similarities(
        self, batches, labels: np.ndarray, layer_names: Sequence[str]
    ) -> tuple[dict[int, list[torch.Tensor]], np.ndarray, np.ndarray, np.ndarray | None]:
        """Centroids (Definition 1) and each reference sample's similarity to its class's (Definition 2).

        ``batches()`` yields ``(start row, [L feature blocks [B, D_l]])`` and is called twice: class sums
        first, then similarities, so features are streamed, never held whole. Sums are float64, on the
        features' device unless it has no float64 (Apple MPS: then on the CPU). Returns ``centroids``
        (class -> L float64 tensors ``[D_l]``), ``cos`` ``[N, L]``, ``loo_cos`` ``[N, L]`` (the same, each to
        its class's centroids without itself: :func:`analysis.similarity.leave_one_out_cosine`) and ``dist``
        ``[N, L]`` (None for cosine).
        """
        classes = check_reference_classes(labels)
        sums: dict[int, list[torch.Tensor | float]] = {int(t): [0.0] * len(layer_names) for t in classes}
        for start, feats in batches():
            y = labels[start : start + len(feats[0])]
            for i, f in enumerate(feats):
                check_finite(f, layer_names[i])
                f64 = as_float64(f, layer_names[i])
                for t in np.unique(y):
                    sums[int(t)][i] = sums[int(t)][i] + f64[torch.as_tensor(y == t, device=f64.device)].sum(0)
        counts = {int(t): int(np.sum(labels == t)) for t in classes}
        centroids = {t: [total / counts[t] for total in per_layer] for t, per_layer in sums.items()}
        cos = np.zeros((len(labels), len(layer_names)))
        loo_cos = np.zeros_like(cos)
        dist = np.zeros_like(cos) if self.metric == "euclidean" else None
        for start, feats in batches():
            y = labels[start : start + len(feats[0])]
            for t in np.unique(y):
                rows = np.flatnonzero(y == t)
                for i, f in enumerate(feats):
                    sub = f[torch.as_tensor(rows, device=f.device)] if isinstance(f, torch.Tensor) else np.asarray(f)[rows]
                    cos[start + rows, i] = cosine_to(sub, centroids[int(t)][i]).cpu().numpy()
                    loo_cos[start + rows, i] = leave_one_out_cosine(sub, centroids[int(t)][i], counts[int(t)]).cpu().numpy()
                    if dist is not None:
                        dist[start + rows, i] = euclidean_to(sub, centroids[int(t)][i]).cpu().numpy()
        return centroids, cos, loo_cos, dist

    def _fit_from_similarities(
        self, labels: np.ndarray, centroids: dict, cos: np.ndarray, loo_cos: np.ndarray, dist: np.ndarray | None
    ) -> "LayerwiseDetector":
        n_layers = cos.shape[1]
        if n_layers < 4:
            raise ValueError(f"features: the layer-wise rule needs at least 4 layers, got {n_layers}")
        fixed = None if self.score_layers is None else check_indices(self.score_layers, "score_layers", 1, n_layers)
        values = cos if dist is None else dist
        self.fit_params_ = snapshot_params(self)
        self.reference_labels_, self.reference_similarity_, self.reference_distance_ = labels, cos, dist
        self.reference_similarity_loo_ = loo_cos
        self.n_layers_ = n_layers
        self.classes_ = np.array(sorted(centroids), dtype=np.int64)
        self.centroids_ = centroids
        self.mean_similarity_, self.loi_, self.score_layers_ = {}, {}, {}
        self.reference_scores_, self.mu_, self.sigma_ = {}, {}, {}
        for t in self.classes_.tolist():
            rows = labels == t
            self.mean_similarity_[t] = cos[rows].mean(0)
            self.loi_[t] = layer_of_interest(self.mean_similarity_[t])
            if self.score == "trajectory":
                self.score_layers_[t] = fixed or tuple(range(1, n_layers + 1))
                continue
            self.score_layers_[t] = fixed or (self.loi_[t] - 2, self.loi_[t] - 1, self.loi_[t])
            self.reference_scores_[t] = values[rows][:, [layer - 1 for layer in self.score_layers_[t]]].sum(1)
        if self.score == "trajectory":
            self._fit_trajectory(cos, labels)
        pooled = np.concatenate([self.reference_scores_[t] for t in self.classes_.tolist()])
        for t in self.classes_.tolist():
            # trajectory distances are on one scale for every class (standardised per class and layer), so mu and
            # sigma are estimated from all classes' reference distances together, not from a handful per class
            self.mu_[t], self.sigma_[t] = self._location_spread(pooled if self.score == "trajectory"
                                                                else self.reference_scores_[t])
        warn_degenerate_spread(self.mu_, self.sigma_)
        if self.target_fpr is not None:
            self._set_calibration(self._leave_one_out_suspicion(), "leave-one-out")
        return self

    def _location_spread(self, scores: np.ndarray) -> tuple[float, float]:
        """``(mu, sigma)`` of reference scores: mean and population std (paper), or median and 1.4826 × MAD."""
        if self.spread == "std":
            return float(scores.mean()), float(scores.std(ddof=0))
        return median_and_mad(scores)

    @property
    def _higher_is_suspicious(self) -> bool:
        """Whether the score grows with suspicion (Euclidean distances, trajectory distances), not with normality."""
        return self.metric == "euclidean" or self.score == "trajectory"

    # ------------------------------------------------------------------ scoring
    def _score_block(self, feats: Sequence[ArrayLike | None], predicted: np.ndarray) -> np.ndarray:
        """Scores of one block of inputs; ``feats[l-1]`` may be None for unused layers."""
        scores = np.full(len(predicted), np.nan)
        measure = cosine_to if self.metric == "cosine" else euclidean_to
        for t in np.unique(predicted).tolist():
            if t not in self.mu_:
                if self.unknown_class == "raise":
                    raise ValueError(
                        f"class {t}: inputs are predicted as class {t}, which had no reference samples, so they "
                        f"cannot be scored (fitted classes: {self.classes_.tolist()}); add reference samples of "
                        f"class {t} or set unknown_class='flag' or 'ignore'"
                    )
                continue
            rows = np.flatnonzero(predicted == t)
            per_layer = np.zeros((len(rows), len(self.score_layers_[t])))
            for k, layer in enumerate(self.score_layers_[t]):
                f = feats[layer - 1]
                sub = f[torch.as_tensor(rows, device=f.device)] if isinstance(f, torch.Tensor) else np.asarray(f)[rows]
                per_layer[:, k] = measure(sub, self.centroids_[t][layer - 1]).cpu().numpy()
            scores[rows] = self._trajectory_scores(per_layer, t) if self.score == "trajectory" else per_layer.sum(1)
        return scores

    def _tau(self, tau: float | None) -> float:
        """The tau in effect: ``tau`` if given, else ``calibrated_tau_`` with ``target_fpr``, else ``self.tau``.

        Checked where it is used, not only in ``fit``: a NaN or negative τ given to a call, or set after ``fit``,
        would otherwise flag nothing or everything without a word."""
        if tau is not None:
            return check_tau(tau, "tau")
        if self.target_fpr is not None:
            return self._calibrated_tau()
        return check_tau(self.tau, "tau (the detector's setting)")

    def flag_scores(self, scores: ArrayLike, predicted: ArrayLike, tau: float | None = None) -> np.ndarray:
        """Apply the threshold to precomputed scores: True = poisoned.

        ``tau`` overrides the tau in effect (``self.tau``, or ``calibrated_tau_`` when ``target_fpr`` is set).
        """
        self._check_fitted()
        tau = self._tau(tau)
        scores_np = np.asarray(scores, dtype=np.float64)
        predicted_np = as_labels(predicted, "predicted")
        if scores_np.shape != predicted_np.shape:
            raise ValueError(f"scores and predicted differ in shape: {scores_np.shape} vs {predicted_np.shape}")
        mu = np.array([self.mu_.get(int(t), np.nan) for t in predicted_np])
        sigma = np.array([self.sigma_.get(int(t), np.nan) for t in predicted_np])
        with np.errstate(invalid="ignore"):
            flagged = scores_np > mu + tau * sigma if self._higher_is_suspicious else scores_np < mu - tau * sigma
        unknown = np.isnan(mu)
        if unknown.any():
            if self.unknown_class == "raise":
                self._score_block([None] * self.n_layers_, predicted_np[unknown][:1])  # raises the message
            flagged[unknown] = self.unknown_class == "flag"
        return flagged

    def thresholds(self, tau: float | None = None) -> dict[int, float]:
        """Per class, the score beyond which an input is flagged (mu - tau sigma; mu + tau sigma for Euclidean and trajectory scores).

        ``tau`` overrides the tau in effect (``self.tau``, or ``calibrated_tau_`` with ``target_fpr``), as in
        :meth:`flag_scores`.
        """
        self._check_fitted()
        tau = self._tau(tau)
        sign = 1.0 if self._higher_is_suspicious else -1.0
        return {t: self.mu_[t] + sign * tau * self.sigma_[t] for t in self.mu_}

    def score_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """Scores ``[N]`` of inputs with precomputed features (L arrays ``[N, D_l]``) and predicted classes."""
        self._check_fitted()
        predicted_np = as_labels(predicted, "predicted")
        feats = check_feature_list(features, len(predicted_np), expected_layers=self.n_layers_)
        return self._score_block(feats, predicted_np)

    def predict_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """True = poisoned, for inputs with precomputed features and predicted classes."""
        predicted_np = as_labels(predicted, "predicted")
        return self.flag_scores(self.score_features(features, predicted_np), predicted_np)

    def _check_inputs(self, x: LabeledImages | ArrayLike) -> torch.Tensor:
        """``x`` checked against the input contract and the image shape the detector was fitted on."""
        return check_images(x, "x", image_shape=getattr(self, "input_shape_", None))

    def _model_layers_needed(self) -> list[int]:
        self._check_fitted()
        if self.layer_names_ is None:
            raise RuntimeError("this detector was fitted on features (fit_features); score with score_features")
        return sorted({layer for layers in self.score_layers_.values() for layer in layers})

    def detect(self, model: nn.Module, x: LabeledImages | ArrayLike) -> Detection:
        """Predicted class, raw score, flag and suspicion of every input; hooks only the layers the classes score on."""
        predicted, scores = self._scores(model, x)
        return Detection(predicted, scores, self.flag_scores(scores, predicted), self.suspicion_from_scores(scores, predicted))

    def _scores(self, model: nn.Module, x: LabeledImages | ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(predicted [N], raw scores [N])``, batch by batch, hooking only the layers the fitted classes score on."""
        needed = self._model_layers_needed()
        check_model(model, float32_only=False)
        check_same_model(self, model)
        images = self._check_inputs(x)
        predicted, scores = [], []
        for _, (feats, logits) in self._batched(model, images, [self.layer_names_[l - 1] for l in needed]):
            full: list[torch.Tensor | None] = [None] * self.n_layers_
            for layer, f in zip(needed, feats):
                check_finite(f, f"features of layer {layer} ({self.layer_names_[layer - 1]})")
                full[layer - 1] = f
            batch_pred = logits.argmax(1).cpu().numpy()
            predicted.append(batch_pred)
            scores.append(self._score_block(full, batch_pred))
        return np.concatenate(predicted), np.concatenate(scores)

    def predict(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """True = poisoned, per input."""
        return self.detect(model, x).flagged


