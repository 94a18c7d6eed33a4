"""TED, Topological Evolution Dynamics (Mo et al., IEEE S&P 2024): a trigger's path through the layers is abnormal.

At each layer ``l`` of ``layers`` (default: the model's ``paper_layers``, the layer list of
the paper's own detector) an input ``x`` predicted as class ``c`` gets the *rank* of its
nearest benign neighbour of class ``c``: how many reference images of other classes are
strictly closer to ``x`` (Euclidean distance of the flattened layer outputs) than the
nearest reference image of class ``c`` (0 = the nearest reference image is of class ``c``).
The ranks over the layers form the input's *trajectory* ``[L]``. A benign input settles
into its class early and stays; a poisoned input sits among its source class in the early
layers and jumps to the target class late, so its trajectory is unusual.

Outlier detector: as the paper (PCA-based outlier detection, PyOD ``PCA(contamination=0.01,
n_components="mle")`` in the official notebook), a PCA fitted on the benign trajectories of
the reference images. Each trajectory is standardised (per-layer mean and std of the
reference trajectories, scikit-learn ``StandardScaler``) and scored under scikit-learn's
``PCA`` (``n_components="mle"``, Minka's choice) read as a probabilistic PCA model
(Tipping & Bishop): score = ``sum_j y_j^2 / lambda_j + |r|^2 / sigma^2``, with ``y_j`` the
projections on the kept components (variances ``lambda_j``), ``r`` the residual and
``sigma^2`` the mean variance of the discarded directions (``PCA.noise_variance_``). This is
the squared Mahalanobis distance under the PPCA covariance, i.e. ``-2 *
PCA.score_samples`` up to a constant. Higher = more suspicious (``suspicion``).

Threshold: the ``1 - contamination`` quantile (99th with the paper's 1 %) of the reference
images' own scores (``np.quantile``, linear interpolation); flagged iff score > threshold.
The reference images' trajectories use leave-one-out ranks: an image is never its own
neighbour. So about ``contamination`` of benign inputs is flagged by construction, a little
more on fresh images since the PCA was fitted on the reference scores it thresholds.

Deviations from the paper and its code, and choices it leaves open
------------------------------------------------------------------
* Reference set: only reference images the model classifies correctly are kept (as the
  official notebook does), so their label is also their prediction.
* Rank definition: the official code sorts the distances and takes the position of the
  first same-class image; here it is the count of other-class images strictly closer,
  which equals that position except that a tie at the same distance never counts against
  the input (order-independent). An input whose predicted class has no reference image
  gets the largest rank, the number of reference images (leave-one-out: that minus one).
* Score: PyOD's PCA sums, over the components, the Euclidean distance of the standardised
  trajectory to the component vector divided by its explained-variance ratio; this uses the
  probabilistic-PCA distance above (the toolkit depends on scikit-learn, not
  PyOD). Every variance in it is floored at ``MIN_VARIANCE = 1e-3`` (standardised units) so
  that a direction in which all reference trajectories agree (e.g. a layer where every rank
  is 0) gives large but finite scores.
* ``metric="cosine"`` ranks by cosine distance (the rows are L2-normalised first); the paper
  uses Euclidean, the default.
* ``seed`` is the PCA's ``random_state``, used only if scikit-learn picks its randomized
  solver (an integer ``n_components`` with more than 500 reference images and about as many
  layers as a tenth of them); with this toolkit's layer lists the whole detector is
  deterministic.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..devices import model_device
from ..features import capture, paper_layers, resolve_layers
from ..fingerprint import check_same_model
from .base import (Defense, as_images, check_choice, check_finite_tensor, check_int, check_labeled, check_model,
                   check_number, evaluating, warn_collapsed)

#: floor of every variance in the probabilistic-PCA distance, in standardised units
MIN_VARIANCE = 1e-3


def nearest_same_class_rank(distances: np.ndarray, candidate_labels: np.ndarray, classes: np.ndarray,
                            leave_one_out: bool = False) -> np.ndarray:
    """TED's rank: per row, how many candidates of another class are strictly closer than the nearest of the row's class.

    Parameters
    ----------
    distances : float ``[N, M]``, distance of input ``i`` to candidate ``j``.
    candidate_labels : int ``[M]``, class of each candidate.
    classes : int ``[N]``, the class each input is ranked for (its predicted class).
    leave_one_out : the inputs are the candidates themselves (``N == M``, same order): candidate
        ``i`` is left out of row ``i``, so an input is never its own neighbour.

    Returns
    -------
    int64 ``[N]`` in ``[0, M]`` (``[0, M - 1]`` leave-one-out): 0 when the nearest candidate is of
    the row's class; the number of candidates left when none is of that class.
    """
    d = np.asarray(distances, dtype=np.float64)
    candidate_labels, classes = np.asarray(candidate_labels), np.asarray(classes)
    if d.ndim != 2 or d.shape != (len(classes), len(candidate_labels)):
        raise ValueError(f"distances: expected shape ({len(classes)}, {len(candidate_labels)}), got {d.shape}")
    same = candidate_labels[None, :] == classes[:, None]
    other = ~same
    if leave_one_out:
        if d.shape[0] != d.shape[1]:
            raise ValueError(f"distances: leave_one_out needs a square matrix, got {d.shape}")
        np.fill_diagonal(same, False)
        np.fill_diagonal(other, False)
    nearest_same = np.where(same, d, np.inf).min(1, initial=np.inf)
    return ((d < nearest_same[:, None]) & other).sum(1).astype(np.int64)


class TED(Defense):
    """Flag inputs whose layer-by-layer nearest-same-class ranks form an outlying trajectory.

    Parameters
    ----------
    layers : module paths whose outputs are ranked, in order; None = the model's ``paper_layers``.
    metric : ``"euclidean"`` (paper) or ``"cosine"``.
    n_components : PCA components, ``"mle"`` (paper's setting; needs at least as many correctly
        classified reference images as layers) or an integer.
    contamination : share of benign reference scores above the threshold, in (0, 0.5] (paper: 0.01).
    batch_size : images per forward pass.
    seed : ``random_state`` of the PCA.
    progress : show a progress bar.

    Learned attributes: ``layers_`` (module paths), ``reference_features_`` (per layer, float32
    ``[M, D_l]`` of the M kept reference images), ``reference_labels_`` (int64 ``[M]``),
    ``reference_trajectories_`` (int64 ``[M, L]``, leave-one-out ranks), ``scaler_`` and
    ``pca_`` (fitted scikit-learn estimators), ``reference_scores_`` (float64 ``[M]``) and
    ``threshold_``.
    """

    _fitted_attribute = "threshold_"
    #: settings refused when changed after fit (they decide the reference trajectories, the PCA and the threshold);
    #: the others are read where they are used
    _refit_settings = ("layers", "metric", "n_components", "contamination", "seed")

    def __init__(self, layers: Sequence[str] | None = None, *, metric: Literal["euclidean", "cosine"] = "euclidean",
                 n_components: int | Literal["mle"] = "mle", contamination: float = 0.01, batch_size: int = 256,
                 seed: int = 0, progress: bool = False) -> None:
        self.layers = layers
        self.metric = metric
        self.n_components = n_components
        self.contamination = contamination
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_choice(self.metric, "metric", ("euclidean", "cosine"))
        if self.n_components != "mle":
            check_int(self.n_components, "n_components")
        check_number(self.contamination, "contamination", 0.0, 0.5, low_open=True)
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)
        if self.layers is not None and (isinstance(self.layers, str) or not list(self.layers)
                                        or not all(isinstance(n, str) for n in self.layers)):
            raise ValueError(f"layers: expected a non-empty list of module paths, got {self.layers!r}")

    def _batches(self, model: nn.Module, images: torch.Tensor, layers: list[str]):
        """Per batch: the flattened outputs of ``layers`` (float32 ``[B, D_l]`` on the CPU, L2-normalised for
        cosine) and the predicted classes ``[B]``."""
        device = model_device(model)
        with evaluating(model), capture(model, layers) as outputs:
            for start in tqdm(range(0, len(images), self.batch_size), desc="TED", disable=not self.progress):
                logits = model(images[start : start + self.batch_size].to(device))
                features = [check_finite_tensor(outputs[name], f"layer {name!r} of the model", what="features")
                            .float().cpu() for name in layers]
                if self.metric == "cosine":
                    features = [torch.nn.functional.normalize(f, dim=1) for f in features]
                yield features, logits.argmax(1).cpu().numpy()

    def _ranks(self, features: list[torch.Tensor], classes: np.ndarray, leave_one_out: bool) -> np.ndarray:
        """int64 ``[B, L]``: the rank of each input at each layer among the kept reference images."""
        ranks = []
        for feature, reference in zip(features, self.reference_features_):
            distances = torch.cdist(feature.double(), reference.double()).numpy()
            ranks.append(nearest_same_class_rank(distances, self.reference_labels_, classes, leave_one_out))
        return np.stack(ranks, 1)

    def _trajectories(self, model: nn.Module, images: torch.Tensor) -> np.ndarray:
        return np.concatenate([self._ranks(features, predicted, False)
                               for features, predicted in self._batches(model, images, self.layers_)])

    def _outlier_scores(self, trajectories: np.ndarray) -> np.ndarray:
        """float64 ``[N]``: squared Mahalanobis distance of the standardised trajectories under the PCA model."""
        z = self.scaler_.transform(trajectories.astype(np.float64)) - self.pca_.mean_
        kept = z @ self.pca_.components_.T
        residual = z - kept @ self.pca_.components_
        kept_variance = np.maximum(self.pca_.explained_variance_, MIN_VARIANCE)
        residual_variance = max(float(self.pca_.noise_variance_), MIN_VARIANCE)
        return (kept**2 / kept_variance).sum(1) + (residual**2).sum(1) / residual_variance

    def fit(self, model: nn.Module, reference: LabeledImages, train=None) -> "TED":
        """Rank the reference images among themselves (leave-one-out), fit the PCA on their trajectories and set
        the threshold."""
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        self._check_settings()
        check_labeled(reference, "reference", min_size=2)
        layers = paper_layers(model) if self.layers is None else list(self.layers)
        resolve_layers(model, layers)
        batches = list(self._batches(model, as_images(reference, "reference"), layers))
        features = [torch.cat([b[0][i] for b in batches]) for i in range(len(layers))]
        predicted = np.concatenate([b[1] for b in batches])
        labels = reference.y.cpu().numpy()
        warn_collapsed(predicted, labels, "TED")
        kept = predicted == labels
        n_kept = int(kept.sum())
        if n_kept < 2:
            raise ValueError(f"reference: TED needs at least 2 reference images the model classifies correctly, "
                             f"got {n_kept}")
        if self.n_components == "mle" and n_kept < len(layers):
            raise ValueError(f"n_components: 'mle' needs at least as many correctly classified reference images "
                             f"({n_kept}) as layers ({len(layers)}); pass an integer")
        if self.n_components != "mle" and self.n_components > min(n_kept, len(layers)):
            raise ValueError(f"n_components: expected at most min(correctly classified reference images, layers) = "
                             f"{min(n_kept, len(layers))}, got {self.n_components}")
        self.layers_ = layers
        self.reference_features_ = [f[torch.from_numpy(kept)] for f in features]
        self.reference_labels_ = labels[kept]
        self.reference_trajectories_ = self._ranks(self.reference_features_, self.reference_labels_, True)
        z = self.reference_trajectories_.astype(np.float64)
        self.scaler_ = StandardScaler().fit(z)
        with np.errstate(divide="ignore", invalid="ignore"):  # all-equal trajectories: explained ratios are 0 / 0
            self.pca_ = PCA(n_components=self.n_components, random_state=int(self.seed)).fit(self.scaler_.transform(z))
        self.reference_scores_ = self._outlier_scores(self.reference_trajectories_)
        self.threshold_ = float(np.quantile(self.reference_scores_, 1.0 - self.contamination))
        return self

    def trajectories(self, model: nn.Module, x) -> np.ndarray:
        """int64 ``[N, L]``: each input's rank at every layer of ``layers_`` (see :func:`nearest_same_class_rank`)."""
        self._check_fitted()
        check_model(model)
        check_same_model(self, model)
        return self._trajectories(model, as_images(x, "x"))

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        scores = self._outlier_scores(self._trajectories(model, images))
        return scores, self.threshold_ - scores


__all__ = ["MIN_VARIANCE", "TED", "nearest_same_class_rank"]
