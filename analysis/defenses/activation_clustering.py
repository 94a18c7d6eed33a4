"""Activation Clustering (Chen et al., SafeAI@AAAI 2019) as a test-time filter.

AC is a filter on a set of inputs, here the batch given to :meth:`predict`. For every
class t predicted for at least ``2 * n_components`` inputs of the batch:

1. the inputs' activations at ``layers`` (flattened, concatenated; default
   ``[model.latent_layer]``; Table 5 passes the critical layers) are standardised with
   the mean and std of the benign reference activations of class t (App. D.4: "we used
   the available benign samples, from each class, for normalizing");
2. reduced to ``n_components`` = 10 dimensions with FastICA (Chen et al.) or PCA;
3. split into 2 clusters by k-means (seeded);
4. ``criterion="size"`` (default, Chen et al.'s relative size): the smaller cluster is
   flagged as poisoned when it holds less than ``size_threshold`` (default 0.35) of the
   class's inputs. Score: ``1 - relative size of the input's cluster within its class``
   (in [0.5, 1) for clustered classes; 0 for inputs of classes that were not clustered);
   flagged iff the score is above ``1 - size_threshold``.

   ``criterion="reference"`` (App. D.4 of the layer-wise paper: the benign samples are
   used "for identifying potential poisoned clusters"): the reference samples of class t
   are clustered together with the inputs (standardised and reduced alike), and the
   cluster holding fewer than half of them is flagged, in every class, whatever its
   size. Score: ``1 - share of class t's reference samples in the input's cluster``;
   flagged iff the score is above 0.5.

Because AC judges a set, an input's verdict depends on the other inputs in the batch:
a batch of only poisoned inputs (or only benign ones) is split in two all the same.
Reference statistics use ``ddof = 0``; features with zero reference std are divided by 1.
Classes without reference samples are standardised with the statistics of all
reference samples.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA

from ..data import LabeledImages
from .base import Defense, as_images, check_choice, check_int, check_labeled, check_layers, check_number, features_of


class ActivationClustering(Defense):
    """Flag the small cluster of each class's activations in the batch (2-means after ICA).

    Parameters
    ----------
    layers : module paths whose flattened outputs are concatenated; None = ``[model.latent_layer]``.
    n_components : dimensions after the reduction (Chen et al.: 10).
    reduction : ``"ica"`` (FastICA, Chen et al.) or ``"pca"``.
    size_threshold : a cluster smaller than this share of its class is poisoned (0.35).
    criterion : ``"size"`` (Chen et al.) or ``"reference"`` (the cluster without most references).
    batch_size : images per forward pass.
    seed : seed of the reduction and of k-means.

    Learned attributes: ``layers_``, ``classes_``, ``mean_`` / ``std_`` (class -> [D]),
    ``global_mean_`` / ``global_std_`` ([D]), ``reference_features_`` (class -> [m, D]).
    """

    _fitted_attribute = "mean_"

    #: settings refused when changed after fit (they decide the reference activations' statistics);
    #: the others are read where they are used
    _refit_settings = ("layers",)

    def __init__(self, layers: Sequence[str] | None = None, *, n_components: int = 10,
                 reduction: Literal["ica", "pca"] = "ica", size_threshold: float = 0.35,
                 criterion: Literal["size", "reference"] = "size", batch_size: int = 256,
                 seed: int = 0, progress: bool = False) -> None:
        self.layers = layers
        self.n_components = n_components
        self.reduction = reduction
        self.size_threshold = size_threshold
        self.criterion = criterion
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_int(self.n_components, "n_components")
        check_choice(self.reduction, "reduction", ("ica", "pca"))
        check_number(self.size_threshold, "size_threshold", 0.0, 0.5)
        check_choice(self.criterion, "criterion", ("size", "reference"))
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)

    def fit(self, model: nn.Module, reference: LabeledImages, train=None) -> "ActivationClustering":
        """Per class, the mean and std of the reference activations (for standardising)."""
        self._check_settings()
        check_labeled(reference, "reference")
        self.layers_ = check_layers(model, self.layers)
        features, _ = features_of(model, as_images(reference, "reference"), self.layers_, self.batch_size)
        labels = reference.y.numpy()
        self.classes_ = np.unique(labels)
        self.global_mean_, self.global_std_ = features.mean(0), _safe_std(features)
        self.mean_ = {int(t): features[labels == t].mean(0) for t in self.classes_}
        self.std_ = {int(t): _safe_std(features[labels == t]) for t in self.classes_}
        self.reference_features_ = {int(t): features[labels == t] for t in self.classes_}
        return self

    def cluster(self, features: np.ndarray) -> np.ndarray:
        """2-means labels ``[n]`` of standardised features ``[n, D]`` after the reduction.

        Features constant over the ``n`` inputs are dropped first: FastICA's whitening
        breaks down on exactly constant float64 columns (dead ReLU units are common) and
        returns components unrelated to the data.
        """
        features = features[:, features.std(0) > 0]
        if features.shape[1] == 0:
            return np.zeros(len(features), dtype=np.int64)
        dims = min(self.n_components, features.shape[1], len(features))
        if self.reduction == "ica":
            reducer = FastICA(n_components=dims, random_state=self.seed, max_iter=1000, whiten="unit-variance")
        else:
            reducer = PCA(n_components=dims, random_state=self.seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings on tiny classes
            reduced = reducer.fit_transform(features)
        return KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        features, predicted = features_of(model, images, self.layers_, self.batch_size)
        scores = np.zeros(len(images))
        for t in np.unique(predicted).tolist():
            rows = np.flatnonzero(predicted == t)
            if len(rows) < 2 * self.n_components:
                continue
            mean, std = self.mean_.get(t, self.global_mean_), self.std_.get(t, self.global_std_)
            if self.criterion == "reference":
                ref = self.reference_features_.get(t)
                if ref is None:  # no benign samples of t to point at the benign cluster
                    continue
                labels = self.cluster((np.concatenate([features[rows], ref]) - mean) / std)
                ref_share = np.bincount(labels[len(rows):], minlength=2) / len(ref)
                scores[rows] = 1.0 - ref_share[labels[: len(rows)]]
                continue
            labels = self.cluster((features[rows] - mean) / std)
            share = np.bincount(labels, minlength=2) / len(rows)
            scores[rows] = 1.0 - share[labels]
        if self.criterion == "reference":
            return scores, 0.5 - scores
        return scores, (1.0 - self.size_threshold) - scores


def _safe_std(features: np.ndarray) -> np.ndarray:
    std = features.std(0)
    return np.where(std > 0, std, 1.0)


__all__ = ["ActivationClustering"]
