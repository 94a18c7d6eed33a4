"""SCAn (Tang et al., "Demon in the Variant", USENIX Security 2021): statistical contamination analysis.

Written from the paper's description of the algorithm.

Global model, fitted on the benign reference features (``layers``, flattened and
concatenated; default ``[model.latent_layer]``): a representation is ``r = mu + e`` with
the class identity ``mu ~ N(0, S_mu)`` and the within-class variation ``e ~ N(0, S_e)``.
``S_mu`` and ``S_e`` are estimated by the EM iteration of the two-component
decomposition: E-step, each class's identity is the posterior mean
``mu_t = S_mu (S_mu + S_e / n_t)^-1 mean_t``; M-step, ``S_mu`` = second moment of the
``mu_t``, ``S_e`` = second moment of the residuals ``r - mu_t`` (repeated until the
relative change of both is below ``tol``).

Per class t of the test inputs (grouped by predicted class; the reference samples of t
are included; reference-only classes are analysed too, so that every class has a
statistic), the untangling model splits the group into two subgroups whose
representations are ``mu_1 + e`` and ``mu_2 + e`` with the global ``S_e``: starting from
the sign of the projection on the group's main direction in ``S_e``-whitened space,
samples are assigned to the subgroup mean at the smaller ``S_e``-Mahalanobis distance and
the means are re-estimated until the assignment is stable. The test statistic ``J_t`` is
the log-likelihood ratio of the two-subgroup model over the one-group model,
``0.5 * sum_i (d(r_i, mean)^2 - d(r_i, mu_c(i))^2)``, divided by the group size
(``statistic="mean"``, default) or not (``"sum"``).

The statistics of all analysed classes are normalised with their median and MAD
(``(J_t - median) / (1.4826 * MAD)``); classes above ``threshold`` (Euler's number ``e``, as
in the paper) are potential targets. In such a class, the subgroup that does not hold the
majority of the class's reference samples is flagged (App. D.4; with no reference
samples, or a tie, the smaller subgroup).

Score of an input: its class's normalised statistic when the input lies in the class's
non-reference subgroup; otherwise ``min(statistic, 0) - 1`` (never flagged, and below every
non-reference member of a class with a statistic above -1). Flagged iff score > threshold.

Deviations (all stated for the README): features are first projected on the
``n_components`` leading principal components of the reference features (default
``min(D, 32, (M - K) // 2)``, M reference samples, K classes) and a ridge ``reg * trace / d``
is added to ``S_e`` and ``S_mu``, because a few hundred reference samples cannot
estimate a full covariance of hundreds of dimensions; the statistic is per sample by default
so that classes of very different sizes in one batch are comparable. Like AC, SCAn judges
the set given to :meth:`predict`.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..detection_options import MAD_TO_STD
from .base import Defense, as_images, check_choice, check_int, check_labeled, check_layers, check_number, features_of



def em_decomposition(features: np.ndarray, labels: np.ndarray, reg: float = 1e-3, max_iter: int = 100,
                     tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, int]:
    """``(S_mu [d, d], S_e [d, d], iterations)`` of centred ``features [n, d]`` with class ``labels [n]``."""
    classes = np.unique(labels)
    means = np.stack([features[labels == t].mean(0) for t in classes])
    counts = np.array([np.sum(labels == t) for t in classes])
    residuals = features - means[np.searchsorted(classes, labels)]
    s_mu = _ridge(means.T @ means / len(classes), reg)
    s_e = _ridge(residuals.T @ residuals / len(features), reg)
    iteration = 0
    for iteration in range(1, max_iter + 1):
        identities = np.stack([s_mu @ np.linalg.solve(s_mu + s_e / n, m) for m, n in zip(means, counts)])
        residuals = features - identities[np.searchsorted(classes, labels)]
        new_mu = _ridge(identities.T @ identities / len(classes), reg)
        new_e = _ridge(residuals.T @ residuals / len(features), reg)
        change = max(np.linalg.norm(new_mu - s_mu) / np.linalg.norm(s_mu), np.linalg.norm(new_e - s_e) / np.linalg.norm(s_e))
        s_mu, s_e = new_mu, new_e
        if change < tol:
            break
    return s_mu, s_e, iteration


def _ridge(matrix: np.ndarray, reg: float) -> np.ndarray:
    """``matrix + reg * (trace / d) * I``, symmetrised: keeps a covariance estimate invertible."""
    d = len(matrix)
    sym = 0.5 * (matrix + matrix.T)
    return sym + reg * max(np.trace(sym) / d, 1e-12) * np.eye(d)


def untangle(whitened: np.ndarray, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Two-subgroup split of ``S_e``-whitened samples ``[n, d]``: ``(subgroup [n] in {0, 1}, J summed)``.

    In whitened space the ``S_e``-Mahalanobis distance is the Euclidean one.
    """
    centred = whitened - whitened.mean(0)
    if len(whitened) < 2 or not np.any(centred):
        return np.zeros(len(whitened), dtype=np.int64), 0.0
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    groups = (centred @ direction > 0).astype(np.int64)
    for _ in range(max_iter):
        if groups.min() == groups.max():
            return np.zeros(len(whitened), dtype=np.int64), 0.0
        mu = np.stack([whitened[groups == g].mean(0) for g in (0, 1)])
        distance = ((whitened[:, None, :] - mu[None]) ** 2).sum(2)
        new_groups = np.argmin(distance, axis=1)
        if np.array_equal(new_groups, groups):
            break
        groups = new_groups
    if groups.min() == groups.max():
        return np.zeros(len(whitened), dtype=np.int64), 0.0
    mu = np.stack([whitened[groups == g].mean(0) for g in (0, 1)])
    one = (centred**2).sum()
    two = ((whitened - mu[groups]) ** 2).sum()
    return groups, float(0.5 * (one - two))


def robust_scores(statistics: np.ndarray) -> np.ndarray:
    """``(J - median) / (1.4826 * MAD)``; a zero MAD is replaced by a tiny positive number."""
    median = np.median(statistics)
    mad = MAD_TO_STD * np.median(np.abs(statistics - median))
    return (statistics - median) / max(mad, 1e-12)


class SCAn(Defense):
    """Flag the non-reference subgroup of classes whose two-subgroup statistic is anomalously high.

    Parameters
    ----------
    layers : module paths whose flattened outputs are concatenated; None = ``[model.latent_layer]``.
    threshold : normalised statistic above which a class is a potential target (paper: e).
    n_components : principal components kept; None = ``min(D, 32, (M - K) // 2)``.
    reg : ridge added to the covariances, relative to their mean variance.
    statistic : ``"mean"`` (J per sample, default) or ``"sum"``.
    max_iter : EM and untangling iterations at most.
    batch_size : images per forward pass.
    progress : unused (SCAn is fast); kept for a uniform interface.

    Learned attributes: ``layers_``, ``center_`` ([D]), ``components_`` ([D, d]), ``s_mu_`` and
    ``s_e_`` ([d, d]), ``whitening_`` ([d, d], ``S_e^-1/2``), ``em_iterations_``, ``classes_``,
    ``reference_projected_`` ([M, d]), ``reference_labels_`` ([M]). After each predict:
    ``class_statistic_`` and ``class_score_`` (class -> J and normalised J), ``targets_``.
    """

    _fitted_attribute = "s_e_"

    #: settings refused when changed after fit (they decide the projection and the EM covariances);
    #: the others are read where they are used
    _refit_settings = ("layers", "n_components", "reg", "max_iter")

    def __init__(self, layers: Sequence[str] | None = None, *, threshold: float = float(np.e),
                 n_components: int | None = None, reg: float = 1e-3, statistic: Literal["mean", "sum"] = "mean",
                 max_iter: int = 100, batch_size: int = 256, progress: bool = False) -> None:
        self.layers = layers
        self.threshold = threshold
        self.n_components = n_components
        self.reg = reg
        self.statistic = statistic
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.progress = progress

    def _check_settings(self) -> None:
        check_number(self.threshold, "threshold", -np.inf, np.inf, low_open=True, high_open=True)
        if self.n_components is not None:
            check_int(self.n_components, "n_components")
        check_number(self.reg, "reg", 0.0, np.inf, high_open=True)
        check_choice(self.statistic, "statistic", ("mean", "sum"))
        check_int(self.max_iter, "max_iter")
        check_int(self.batch_size, "batch_size")

    def fit(self, model: nn.Module, reference: LabeledImages, train=None) -> "SCAn":
        """Project the reference features and estimate ``S_mu`` and ``S_e`` by EM."""
        self._check_settings()
        check_labeled(reference, "reference", min_size=4)
        self.layers_ = check_layers(model, self.layers)
        features, _ = features_of(model, as_images(reference, "reference"), self.layers_, self.batch_size)
        labels = reference.y.numpy().astype(np.int64)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(f"reference: SCAn needs reference samples of at least 2 classes, got {classes.tolist()}")
        return self.fit_features(features, labels)

    def fit_features(self, features: np.ndarray, labels: np.ndarray) -> "SCAn":
        """Fit on precomputed reference features ``[M, D]`` and true labels ``[M]``."""
        self._check_settings()
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"features: expected shape [M, D] with M = {len(labels)} labels, got {features.shape}")
        self.classes_ = np.unique(labels)
        n_dims = self.n_components or min(features.shape[1], 32, max(1, (len(features) - len(self.classes_)) // 2))
        n_dims = min(n_dims, features.shape[1], len(features))
        self.center_ = features.mean(0)
        centred = features - self.center_
        self.components_ = np.linalg.svd(centred, full_matrices=False)[2][:n_dims].T
        projected = centred @ self.components_
        self.s_mu_, self.s_e_, self.em_iterations_ = em_decomposition(projected, labels, self.reg, self.max_iter)
        values, vectors = np.linalg.eigh(self.s_e_)
        self.whitening_ = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
        self.reference_projected_ = projected
        self.reference_labels_ = labels
        self._record_fit(None)  # fit records the model's fingerprint after this
        return self

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        features, predicted = features_of(model, images, self.layers_, self.batch_size)
        return self.detect_features(features, predicted)

    def detect_features(self, features: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [N], decision [N])`` for test features ``[N, D]`` and their predicted classes ``[N]``.

        ``decision = threshold - scores``: negative exactly where an input is flagged.
        """
        self._check_fitted()
        features = np.asarray(features, dtype=np.float64)
        predicted = np.asarray(predicted).astype(np.int64)
        if features.ndim != 2 or features.shape[1] != len(self.center_) or len(features) != len(predicted):
            raise ValueError(f"features: expected shape [N, {len(self.center_)}] with N = {len(predicted)}, "
                             f"got {features.shape}")
        test = (features - self.center_) @ self.components_ @ self.whitening_
        reference = self.reference_projected_ @ self.whitening_
        classes = np.union1d(self.classes_, predicted)
        statistic, subgroups, candidate = {}, {}, {}
        for t in classes.tolist():
            test_rows = np.flatnonzero(predicted == t)
            ref_rows = np.flatnonzero(self.reference_labels_ == t)
            group = np.concatenate([test[test_rows], reference[ref_rows]])
            if len(group) < 2:
                continue
            labels, j = untangle(group, self.max_iter)
            statistic[t] = j / len(group) if self.statistic == "mean" else j
            subgroups[t] = labels[: len(test_rows)]
            ref_counts = np.bincount(labels[len(test_rows):], minlength=2)
            sizes = np.bincount(labels, minlength=2)
            if ref_counts[0] != ref_counts[1]:
                candidate[t] = int(np.argmin(ref_counts))
            else:
                candidate[t] = int(np.argmin(sizes))
        names = sorted(statistic)
        normalised = robust_scores(np.array([statistic[t] for t in names])) if names else np.array([])
        self.class_statistic_ = dict(statistic)
        self.class_score_ = {t: float(s) for t, s in zip(names, normalised)}
        self.targets_ = [t for t in names if self.class_score_[t] > self.threshold]
        scores = np.zeros(len(predicted))
        for t in np.unique(predicted).tolist():
            rows = np.flatnonzero(predicted == t)
            if t not in self.class_score_:
                scores[rows] = -1.0
                continue
            class_score = self.class_score_[t]
            in_candidate = subgroups[t] == candidate[t]
            scores[rows] = np.where(in_candidate, class_score, min(class_score, 0.0) - 1.0)
        return scores, self.threshold - scores


__all__ = ["SCAn", "em_decomposition", "robust_scores", "untangle"]
