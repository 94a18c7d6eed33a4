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
* ``score="trajectory"`` (not in the paper) scores the whole trajectory instead of the sum at
  LOI-2..LOI: each layer's cosine similarity is standardised by the predicted class's reference mean
  and std at that layer (std floored at :data:`TRAJECTORY_STD_FLOOR`), and the input's score is the
  squared Mahalanobis distance of that vector of z-scores, under one covariance of all classes'
  reference z-vectors (Ledoit-Wolf shrinkage); flagged above ``mu + tau * sigma`` of the reference
  distances of all classes pooled (the z-scores put every class on one scale; a class's own handful
  of distances would estimate mu and sigma poorly). It reads a divergence at whichever layer it
  happens, where the LOI rule can pick a layer at which the poisoned inputs have already converged
  (MobileNetV2 + Blended on digits).
  The reference distances are in-sample (the same samples fit the means and covariance), so they
  are a little smaller than those of new benign inputs; ``benchmarks/recent_detectors.py`` measures
  the resulting FPR.
* ``target_fpr`` (not in the paper) replaces the fixed ``tau`` by one calibrated to a target false-positive
  rate: the split-conformal order statistic (:func:`analysis.metrics.conformal_threshold`) of benign
  suspicion scores (:meth:`LayerwiseDetector.suspicion`, every class pooled on that standardised scale, so a
  class with a handful of samples borrows the others'), used as an effective tau for every class. After
  :meth:`~LayerwiseDetector.fit` the calibration scores are the reference samples' own, each computed as if
  that sample had been left out of the fit (approximately: see ``_leave_one_out_suspicion``), so the
  finite-sample guarantee holds only approximately; :meth:`~LayerwiseDetector.calibrate` on held-out benign
  inputs gives the exact one.
* ``spread="mad"`` (not in the paper) takes ``mu_`` = median and ``sigma_`` = 1.4826 × the
  median absolute deviation of the reference scores: with a handful of reference samples per
  class, one atypical benign image can inflate the standard deviation and lower the threshold
  below the poisoned inputs' scores. The default ``"std"`` is the paper's.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data import LabeledImages
from .features import iter_features, paper_layers
from .fingerprint import check_same_model, model_fingerprint
from .similarity import as_float64, cosine_to, euclidean_to, leave_one_out_cosine
from .validation import NotFittedError, check_images, check_number, same_setting

__all__ = ["Detection", "LayerwiseDetector", "MAD_TO_STD", "MIN_CLASS_SAMPLES", "ReferenceWarning",
           "TRAJECTORY_STD_FLOOR", "check_reference_counts", "layer_of_interest"]

Metric = Literal["cosine", "euclidean"]
Score = Literal["sum", "trajectory"]

#: ``score="trajectory"``: floor of a layer's reference std of cosine similarity, so that a layer at which a
#: class's reference samples agree exactly does not turn every small deviation into an infinite z-score.
TRAJECTORY_STD_FLOOR = 1e-3
ArrayLike = np.ndarray | torch.Tensor


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


@dataclass(frozen=True)
class Detection:
    """What :meth:`LayerwiseDetector.detect` found, one entry per input."""

    predicted: np.ndarray  # [N] int64, the model's class
    scores: np.ndarray  # [N] float64, summed similarity (or distance) to the predicted class
    flagged: np.ndarray  # [N] bool, True = poisoned


#: 1 / Phi^-1(3/4): scales the median absolute deviation to the standard deviation of a normal law.
MAD_TO_STD = 1.4826


class LayerwiseDetector:
    """Flag inputs whose summed similarity to benign class centroids at LOI-2..LOI is abnormally low.

    Parameters
    ----------
    tau : threshold in standard deviations (paper: 2.5); the only positional setting, the others are keyword-only.
    metric : ``"cosine"`` (paper) or ``"euclidean"`` (Table 8).
    spread : how ``mu_``/``sigma_`` are estimated from the reference scores: ``"std"`` (paper:
        mean and population std) or ``"mad"`` (median and 1.4826 × median absolute deviation,
        robust to atypical reference samples; the 1.4826 makes it equal the std for normal data).
    layers : module paths of the model's L layers, in order; default: the model's
        ``paper_layers``. Only used by :meth:`fit`.
    score_layers : 1-indexed layers to score on instead of LOI-2..LOI (Table 6); the
        LOI is still computed and reported.
    batch_size : inputs per forward pass.
    unknown_class : what to do with an input predicted as a class that had no reference
        samples: ``"raise"`` (default), ``"flag"`` (score NaN, flagged) or ``"ignore"``
        (score NaN, not flagged).
    score : ``"sum"`` (paper: summed similarity at LOI-2..LOI, or at ``score_layers``) or
        ``"trajectory"`` (not in the paper: Mahalanobis distance of the per-layer standardised
        similarities over all L layers, or over ``score_layers``; higher = more suspicious; cosine only).
    target_fpr : None (paper: flag beyond ``tau``) or a fraction in (0, 1) (not in the paper): flag beyond
        ``calibrated_tau_``, the split-conformal threshold on the pooled suspicion scores of the reference
        samples (each left out of the fit) or, after :meth:`calibrate`, of held-out benign inputs; ``tau`` is then unused
        unless passed to :meth:`flag_scores` or :meth:`thresholds`.

    Learned attributes: ``n_layers_``, ``classes_``, ``layer_names_`` and ``input_shape_`` (the
    reference images' ``(C, H, W)``, which inputs must match; both None after :meth:`fit_features`),
    ``centroids_`` (class -> list of L tensors [D_l]),
    ``reference_labels_`` ``[N]``, ``reference_similarity_`` ``[N, L]`` (each reference sample's
    cosine similarity to its own class's centroids), ``reference_distance_`` (the same in
    Euclidean distance, or None for cosine),
    ``mean_similarity_`` (class -> [L]), ``loi_`` (class -> layer), ``score_layers_``
    (class -> tuple of layers), ``reference_scores_`` (class -> [m]), ``mu_``, ``sigma_``; for
    ``score="trajectory"`` also ``trajectory_mean_`` and ``trajectory_std_`` (class -> [K], over the K
    scored layers) and ``trajectory_precision_`` ``[K, K]``; for ``target_fpr`` also ``calibrated_tau_``
    (the effective tau; ``inf`` when too few calibration scores for the target) and ``calibration_`` (``"leave-one-out"``
    or ``"held-out"``, with ``calibration_size_`` scores). Always: ``reference_similarity_loo_`` ``[N, L]``, each
    reference sample's cosine similarity to its class's centroids computed without it.

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
        _check_tau(self.tau, "tau")
        if self.target_fpr is not None:
            check_number(self.target_fpr, "target_fpr", 0.0, 1.0, low_open=True, high_open=True)
        if self.spread not in ("std", "mad"):
            raise ValueError(f"spread: expected 'std' or 'mad', got {self.spread!r}")
        if self.score not in ("sum", "trajectory"):
            raise ValueError(f"score: expected 'sum' or 'trajectory', got {self.score!r}")
        if self.score == "trajectory" and self.metric != "cosine":
            raise ValueError(f"score: 'trajectory' standardises cosine similarities; it needs metric='cosine', "
                             f"got metric={self.metric!r}")
        if self.unknown_class not in ("raise", "flag", "ignore"):
            raise ValueError(f"unknown_class: expected 'raise', 'flag' or 'ignore', got {self.unknown_class!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size}")
        if isinstance(self.layers, str):
            raise TypeError(f"layers: expected a list of module paths in forward order, got the single string "
                            f"{self.layers!r}; write layers=[{self.layers!r}, ...]")

    #: settings the fitted state (centroids, LOI, mu, sigma, ...) depends on: changed after fit, they are refused
    #: with "refit"; the others (tau, batch_size, unknown_class) are read where they are used. ``target_fpr`` is
    #: checked where the threshold is read (:meth:`_tau`): set to None it falls back to ``tau``; changed to another
    #: rate, :meth:`calibrate` sets the threshold again.
    _refit_settings = ("metric", "layers", "score_layers", "spread", "score")

    def _check_fitted(self) -> None:
        if not hasattr(self, "mu_"):
            raise NotFittedError("this LayerwiseDetector is not fitted yet: call fit(model, reference) or fit_features(...)")
        recorded = getattr(self, "fit_params_", None)
        if recorded is not None:
            current = self.get_params()
            changed = [name for name in self._refit_settings if not same_setting(current[name], recorded[name])]
            if changed:
                raise ValueError(
                    "; ".join(f"{name}: changed after fit (fitted with {recorded[name]!r}, now {current[name]!r})"
                              for name in changed)
                    + "; the fitted state depends on it: refit (fit(model, reference)), or set it back")

    def unbind_model(self) -> "LayerwiseDetector":
        """Forget which model :meth:`fit` saw (``model_fingerprint_ = None``), so that other models can be scored on purpose.

        After :meth:`fit`, scoring a model whose weights differ from the fitted one's
        (:func:`analysis.fingerprint.model_fingerprint`) raises :class:`analysis.fingerprint.ModelMismatchError`.
        """
        self._check_fitted()
        self.model_fingerprint_ = None
        return self

    # ------------------------------------------------------------------ fitting
    def fit_features(self, features: Sequence[ArrayLike], labels: ArrayLike) -> "LayerwiseDetector":
        """Fit on precomputed reference features: L arrays ``[N, D_l]`` in layer order, true labels ``[N]``.

        The same computation as :meth:`fit` (:meth:`_reference_similarities`), on one block of features.
        """
        self._check_settings()
        labels_np = _as_labels(labels, "labels")
        feats = _check_feature_list(features, len(labels_np), expected_layers=None)
        if any(f is None for f in feats):
            raise ValueError("features: fit_features needs an array for every layer, got None")
        similarities = self._reference_similarities(lambda: iter([(0, feats)]), labels_np,
                                                    [f"features[{i}]" for i in range(len(feats))])
        self.layer_names_, self.input_shape_ = None, None
        self.model_fingerprint_ = None
        return self._fit_from_similarities(labels_np, *similarities)

    def fit(self, model: nn.Module, reference: LabeledImages) -> "LayerwiseDetector":
        """Fit on the model's features of the benign ``reference`` images (grouped by true label).

        Streams the reference set twice (class sums, then similarities), so memory holds
        one batch of features plus one centroid per class and layer.
        """
        self._check_settings()
        if not isinstance(reference, LabeledImages):
            raise TypeError(f"reference: expected LabeledImages, got {type(reference).__name__}")
        names = list(self.layers) if self.layers is not None else paper_layers(model)
        labels_np = _as_labels(reference.y, "reference.y")
        if len(labels_np) == 0:
            raise ValueError("reference: got no samples")

        def batches():
            return ((start, feats) for start, (feats, _) in _batched(model, reference.x, names, self.batch_size))

        similarities = self._reference_similarities(
            batches, labels_np, [f"features of layer {i + 1} ({name})" for i, name in enumerate(names)])
        self.layer_names_ = names
        self.input_shape_ = tuple(reference.x.shape[1:])
        self._fit_from_similarities(labels_np, *similarities)
        self.model_fingerprint_ = model_fingerprint(model)
        return self

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
        classes = _check_reference_classes(labels)
        sums: dict[int, list[torch.Tensor | float]] = {int(t): [0.0] * len(layer_names) for t in classes}
        for start, feats in batches():
            y = labels[start : start + len(feats[0])]
            for i, f in enumerate(feats):
                _check_finite(f, layer_names[i])
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
        fixed = None
        if self.score_layers is not None:
            fixed = tuple(int(layer) for layer in self.score_layers)
            bad = [layer for layer in fixed if not 1 <= layer <= n_layers]
            if not fixed or bad:
                raise ValueError(f"score_layers: expected layers in 1..{n_layers}, got {list(self.score_layers)}")
        values = cos if dist is None else dist
        self.fit_params_ = _snapshot(self.get_params())
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
        _warn_degenerate_spread(self.mu_, self.sigma_)
        if self.target_fpr is not None:
            self._set_calibration(self._leave_one_out_suspicion(), "leave-one-out")
        return self

    def _location_spread(self, scores: np.ndarray) -> tuple[float, float]:
        """``(mu, sigma)`` of reference scores: mean and population std (paper), or median and 1.4826 × MAD."""
        if self.spread == "std":
            return float(scores.mean()), float(scores.std(ddof=0))
        median = float(np.median(scores))
        return median, float(MAD_TO_STD * np.median(np.abs(scores - median)))

    def _leave_one_out_suspicion(self) -> np.ndarray:
        """``[N]`` each reference sample's suspicion as if it had been left out of the fit (``target_fpr``'s calibration).

        In-sample suspicion is biased low: a sample pulls its own class's centroids, mean and std towards
        itself, so a threshold set on in-sample scores flags more new benign inputs than the target. Here each sample is scored against its class's centroids without it (exact:
        :func:`analysis.similarity.leave_one_out_cosine`; Euclidean distances grow by n / (n - 1)), against the
        mu and sigma (sum) or per-layer mean and std (trajectory) of the *other* samples' in-sample values. Not
        recomputed without it: the other samples' similarities, the LOI, the trajectory's pooled covariance and
        its pooled mu and sigma (one sample among all classes' moves them little).
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

    def calibrate(self, model: nn.Module, x: LabeledImages | ArrayLike) -> "LayerwiseDetector":
        """Set ``calibrated_tau_`` from held-out benign inputs ``x`` (not the reference samples); returns ``self``.

        The split-conformal step of ``target_fpr``: each input is scored against its predicted class, as at
        detection time, and the threshold is the order statistic of :func:`analysis.metrics.conformal_threshold`
        of their suspicion scores. If new benign inputs are drawn like ``x``, each is flagged with probability
        at most ``target_fpr``. Labels, when ``x`` has them, are not read.
        """
        predicted, scores = self._scores(model, x)  # checks fitted, model and inputs; no threshold needed yet
        return self.calibrate_scores(scores, predicted)

    def calibrate_scores(self, scores: ArrayLike, predicted: ArrayLike) -> "LayerwiseDetector":
        """:meth:`calibrate` from precomputed scores ``[N]`` (as :meth:`score_features` returns) and predicted classes."""
        self._check_fitted()
        if self.target_fpr is None:
            raise ValueError("target_fpr: calibration needs a target false-positive rate; build the detector with "
                             "target_fpr=... (e.g. 0.05)")
        suspicion = self.suspicion(scores, predicted)
        known = np.isfinite(suspicion)
        if not known.any():
            raise ValueError("scores: no input has a finite suspicion score (all predicted as classes without "
                             "reference samples?)")
        if not known.all():
            warnings.warn(f"calibrate: {int((~known).sum())} of {len(known)} inputs have no score (classes without "
                          f"reference samples) and are left out", ReferenceWarning, stacklevel=2)
        self._set_calibration(suspicion[known], "held-out")
        return self

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

    @property
    def _higher_is_suspicious(self) -> bool:
        """Whether the score grows with suspicion (Euclidean distances, trajectory distances), not with normality."""
        return self.metric == "euclidean" or self.score == "trajectory"

    def with_score_layers(self, score_layers: Sequence[int] | None) -> "LayerwiseDetector":
        """A new detector with these ``score_layers`` (None: the LOI rule), fitted on this one's reference samples.

        Same settings, centroids and reference similarities, so the result equals
        ``LayerwiseDetector(score_layers=..., <same settings>).fit(model, reference)`` without running the model
        again (Table 6 scores every single layer this way).
        """
        self._check_fitted()
        other = LayerwiseDetector(**{**self.get_params(), "score_layers": score_layers})
        other._check_settings()
        other.layer_names_, other.input_shape_ = self.layer_names_, self.input_shape_
        other.model_fingerprint_ = self.model_fingerprint_
        return other._fit_from_similarities(self.reference_labels_, self.centroids_, self.reference_similarity_,
                                            self.reference_similarity_loo_, self.reference_distance_)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's settings (as scikit-learn's ``get_params``; ``deep`` is accepted and has no effect)."""
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def set_params(self, **params) -> "LayerwiseDetector":
        """Set constructor settings by name (as scikit-learn's ``set_params``); returns ``self``.

        After :meth:`fit`, ``tau``, ``batch_size`` and ``unknown_class`` take effect at the next call; a changed
        ``metric``, ``layers``, ``score_layers``, ``spread`` or ``score`` is refused at the next call with a
        ValueError asking to refit, and a changed ``target_fpr`` asks for :meth:`calibrate` or a refit.
        """
        return _set_params(self, params)

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

        Checked where it is used, not only in ``fit``: a NaN or negative τ passed to a scoring call, or set
        on the detector after ``fit``, would otherwise flag nothing or everything without a word.
        """
        if tau is not None:
            return _check_tau(tau, "tau")
        if self.target_fpr is not None:
            if not hasattr(self, "calibrated_tau_"):
                raise NotFittedError("target_fpr was set after fit: fit again, or call calibrate(model, benign)")
            calibrated_for = getattr(self, "fit_params_", {}).get("target_fpr", self.target_fpr)
            if not same_setting(self.target_fpr, calibrated_for):
                raise ValueError(f"target_fpr: changed after fit (calibrated for {calibrated_for!r}, now "
                                 f"{self.target_fpr!r}); refit, or call calibrate(model, benign)")
            return self.calibrated_tau_
        return _check_tau(self.tau, "tau (the detector's setting)")

    def flag_scores(self, scores: ArrayLike, predicted: ArrayLike, tau: float | None = None) -> np.ndarray:
        """Apply the threshold to precomputed scores: True = poisoned.

        ``tau`` overrides the tau in effect (``self.tau``, or ``calibrated_tau_`` when ``target_fpr`` is set).
        """
        self._check_fitted()
        tau = self._tau(tau)
        scores_np = np.asarray(scores, dtype=np.float64)
        predicted_np = _as_labels(predicted, "predicted")
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

    def suspicion(self, scores: ArrayLike, predicted: ArrayLike) -> np.ndarray:
        """Scores standardised by the predicted class's reference mu and sigma, signed so that higher = more suspicious.

        ``(mu_c - score) / sigma_c`` for cosine sums, ``(score - mu_c) / sigma_c`` for Euclidean and trajectory scores (sigma floored
        at 1e-12); NaN for a class without reference samples. An input is flagged at ``tau`` exactly
        when its suspicion exceeds ``tau`` (for sigma > 0), so one threshold on this scale serves every
        class: it is the score behind AUROC and ROC curves.
        """
        self._check_fitted()
        scores_np = np.asarray(scores, dtype=np.float64)
        predicted_np = _as_labels(predicted, "predicted")
        mu = np.array([self.mu_.get(int(t), np.nan) for t in predicted_np])
        sigma = np.array([self.sigma_.get(int(t), np.nan) for t in predicted_np])
        sign = 1.0 if self._higher_is_suspicious else -1.0
        return sign * (scores_np - mu) / np.maximum(sigma, 1e-12)

    def score_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """Scores ``[N]`` of inputs with precomputed features (L arrays ``[N, D_l]``) and predicted classes."""
        self._check_fitted()
        predicted_np = _as_labels(predicted, "predicted")
        feats = _check_feature_list(features, len(predicted_np), expected_layers=self.n_layers_)
        return self._score_block(feats, predicted_np)

    def predict_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """True = poisoned, for inputs with precomputed features and predicted classes."""
        predicted_np = _as_labels(predicted, "predicted")
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
        """Predicted class, score and flag of every input; hooks only the layers the fitted classes score on."""
        predicted, scores = self._scores(model, x)
        return Detection(predicted, scores, self.flag_scores(scores, predicted))

    def _scores(self, model: nn.Module, x: LabeledImages | ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(predicted [N], raw scores [N])``, batch by batch, hooking only the layers the fitted classes score on."""
        needed = self._model_layers_needed()
        check_same_model(self, model)
        images = self._check_inputs(x)
        predicted, scores = [], []
        for _, (feats, logits) in _batched(model, images, [self.layer_names_[l - 1] for l in needed], self.batch_size):
            full: list[torch.Tensor | None] = [None] * self.n_layers_
            for layer, f in zip(needed, feats):
                _check_finite(f, f"features of layer {layer} ({self.layer_names_[layer - 1]})")
                full[layer - 1] = f
            batch_pred = logits.argmax(1).cpu().numpy()
            predicted.append(batch_pred)
            scores.append(self._score_block(full, batch_pred))
        return np.concatenate(predicted), np.concatenate(scores)

    def score_samples(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """scikit-learn's direction, ``[N]`` higher = more normal, for every metric and score: ``-suspicion``.

        The raw score standardised by the predicted class's reference mu and sigma: ``(s - mu_c) / sigma_c`` for the
        paper's summed cosine similarity, ``(mu_c - s) / sigma_c`` for Euclidean and trajectory distances; NaN for a
        class without reference samples. :meth:`decision_function` is ``score_samples + tau`` (the tau in effect).
        The paper's raw scores (summed similarity or distance) are :meth:`detect`'s ``.scores`` and
        :meth:`score_features`.
        """
        found = self.detect(model, x)
        return -self.suspicion(found.scores, found.predicted)

    def predict(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """True = poisoned, per input."""
        return self.detect(model, x).flagged

    def decision_function(self, model: nn.Module, x: LabeledImages | ArrayLike) -> np.ndarray:
        """scikit-learn's sign convention: ``[N]`` negative = flagged (poisoned), positive = accepted.

        ``tau - suspicion`` (:meth:`suspicion`; the tau in effect, ``calibrated_tau_`` with ``target_fpr``), in
        standard deviations of the predicted class's reference scores, for every metric and score, so the sign
        means the same whatever the raw score's direction. NaN for a class without reference samples.
        """
        return self.score_samples(model, x) + self._tau(None)

    def decision_function_features(self, features: Sequence[ArrayLike], predicted: ArrayLike) -> np.ndarray:
        """:meth:`decision_function` for inputs with precomputed features (L arrays ``[N, D_l]``) and predicted classes."""
        predicted_np = _as_labels(predicted, "predicted")
        return self._tau(None) - self.suspicion(self.score_features(features, predicted_np), predicted_np)

    # ------------------------------------------------------------------ curves
    def layerwise_similarity_features(self, features: Sequence[ArrayLike], classes: ArrayLike) -> np.ndarray:
        """``[N, L]`` cosine similarity of each input to the centroids of ``classes[i]`` at every layer."""
        self._check_fitted()
        classes_np = _as_labels(classes, "classes")
        feats = _check_feature_list(features, len(classes_np), expected_layers=self.n_layers_)
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
            fixed = np.full(len(images), int(classes)) if np.ndim(classes) == 0 else _as_labels(classes, "classes")
            if len(fixed) != len(images):
                raise ValueError(f"classes: {len(fixed)} classes for {len(images)} inputs")
        rows = []
        for start, (feats, logits) in _batched(model, images, self.layer_names_, self.batch_size):
            batch_classes = logits.argmax(1).cpu().numpy() if fixed is None else fixed[start : start + len(logits)]
            rows.append(self.layerwise_similarity_features(feats, batch_classes))
        return np.concatenate(rows)


# ---------------------------------------------------------------------- helpers
def _snapshot(params: dict) -> dict:
    """A copy of ``params`` that later in-place changes of the settings (``det.layers.append(...)``) cannot reach."""
    import copy

    return copy.deepcopy(params)


def _set_params(estimator, params: dict):
    """scikit-learn's ``set_params`` for an estimator whose settings are its constructor's arguments."""
    valid = estimator.get_params()
    unknown = [name for name in params if name not in valid]
    if unknown:
        raise ValueError(f"set_params: unknown setting(s) {unknown} for {type(estimator).__name__}; "
                         f"valid: {sorted(valid)}")
    for name, value in params.items():
        setattr(estimator, name, value)
    return estimator


def _check_tau(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0 (standard deviations), got {value!r}")
    return float(value)


def _batched(model: nn.Module, images: torch.Tensor, names: Sequence[str], batch_size: int):
    """``(start, (features, logits))`` per batch; the layers must be listed in forward order (the LOI rule reads them so)."""
    start = 0
    for feats, logits in iter_features(model, images, names, batch_size, in_forward_order=True):
        yield start, (feats, logits)
        start += len(logits)


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {array.shape}")
    if len(array) and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name}: expected integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_finite(values: ArrayLike, name: str) -> None:
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise ValueError(f"{name}: contains NaN or inf")


def _check_feature_list(features: Sequence[ArrayLike], n: int, expected_layers: int | None) -> list[ArrayLike]:
    if isinstance(features, (np.ndarray, torch.Tensor)) or not isinstance(features, Sequence):
        raise TypeError("features: expected a list with one [N, D_l] array per layer (index 0 = layer 1)")
    if expected_layers is not None and len(features) != expected_layers:
        raise ValueError(f"features: the detector was fitted on {expected_layers} layers, got {len(features)}")
    if n == 0:
        raise ValueError("features: got no samples (N = 0)")
    checked = []
    for i, f in enumerate(features):
        if f is None:
            checked.append(None)
            continue
        if not isinstance(f, torch.Tensor):
            f = np.asarray(f)
        if f.ndim != 2:
            raise ValueError(f"features[{i}] (layer {i + 1}): expected shape [N, D], got {tuple(f.shape)}")
        if f.shape[0] != n:
            raise ValueError(f"features[{i}] (layer {i + 1}): {f.shape[0]} rows, but {n} labels were given")
        _check_finite(f, f"features[{i}] (layer {i + 1})")
        checked.append(f)
    return checked


def _check_reference_classes(labels: np.ndarray) -> np.ndarray:
    """The classes of the reference labels, after :func:`check_reference_counts`."""
    if len(labels) == 0:
        raise ValueError("labels: got no reference samples")
    check_reference_counts(labels, "labels", stacklevel=5)  # the warning points at the caller of fit
    return np.unique(labels)


class ReferenceWarning(UserWarning):
    """The reference samples of a class are too few, or too alike, for a trustworthy threshold.

    Turn it into an error to refuse such a reference set: ``warnings.simplefilter("error", ReferenceWarning)``.
    """


#: Below this many reference samples, a class's mean and standard deviation are too noisy to trust.
MIN_CLASS_SAMPLES = 10


def check_reference_counts(
    labels: ArrayLike, name: str = "reference", num_classes: int | None = None, stacklevel: int = 2
) -> dict[int, int]:
    """Reference samples per class ``{class: count}``; raises below 2 in a class, warns below :data:`MIN_CLASS_SAMPLES`.

    With ``num_classes``, a class in ``0..num_classes-1`` without any reference sample raises too: inputs
    predicted as it could not be scored. Called by :meth:`LayerwiseDetector.fit` and, before any model is
    trained, by :func:`analysis.reproduce.reproduce`.
    """
    labels_np = _as_labels(labels, name)
    classes, counts = np.unique(labels_np, return_counts=True)
    found = {int(c): int(k) for c, k in zip(classes, counts)}
    if num_classes is not None:
        missing = [c for c in range(num_classes) if c not in found]
        if missing:
            raise ValueError(f"{name}: classes {missing} have no reference samples (of {num_classes} classes); "
                             f"inputs predicted as them could not be scored")
    few = {c: k for c, k in found.items() if k < 2}
    if few:
        raise ValueError(f"{name}: each class needs at least 2 reference samples; too few for {few} (class: count)")
    small = {c: k for c, k in found.items() if k < MIN_CLASS_SAMPLES}
    if small:
        warnings.warn(f"{name}: fewer than {MIN_CLASS_SAMPLES} reference samples in classes {small} (class: count); "
                      f"their mean and standard deviation, hence their thresholds, are unreliable",
                      ReferenceWarning, stacklevel=stacklevel)
    return found


def _warn_degenerate_spread(mu: dict[int, float], sigma: dict[int, float]) -> None:
    """Warn about classes whose reference scores (nearly) all coincide, e.g. duplicated reference images."""
    flat = [t for t in mu if sigma[t] <= 1e-9 * max(1.0, abs(mu[t]))]
    if flat:
        warnings.warn(f"reference: the scores of classes {flat} have (almost) no spread (sigma ~ 0), e.g. duplicated "
                      f"reference images; every input of such a class that scores a little below mu is flagged",
                      ReferenceWarning, stacklevel=4)
