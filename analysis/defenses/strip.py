"""STRIP (Gao et al., ACSAC 2019): a trigger keeps its prediction whatever is blended over it.

Each input x is blended with ``n_blends`` benign reference images chosen at random
(``alpha * x + (1 - alpha) * x_ref``; paper: 100 blends, alpha = 0.5); the
Shannon entropy (nats) of the model's softmax output is averaged over the blends.
Poisoned inputs keep predicting the target class, so their mean entropy is low.

Threshold (App. D.4 of the layer-wise paper): the ``percentile``-th percentile (10th)
of the reference images' own mean entropies, computed in :meth:`STRIP.fit` with the same
procedure (a reference image is never blended with itself). An input is flagged when its
mean entropy is below the threshold.

Score: minus the mean entropy (higher = more suspicious); flagged iff
``score > -threshold_``.

Blend partners are drawn without replacement per input (with replacement when the
reference holds fewer images than ``n_blends``), from a generator seeded with ``seed``
at every call.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..devices import model_device
from .base import Defense, as_images, check_int, check_labeled, check_number, entropy, evaluating, softmax64


class STRIP(Defense):
    """Flag inputs whose predictions stay confident (low entropy) under blending with benign images.

    Parameters
    ----------
    n_blends : reference images blended with each input (paper: 100).
    alpha : weight of the input in the blend (paper: 0.5).
    percentile : percentile of the reference entropies used as threshold (paper: 10).
    batch_size : blended images per forward pass (64 was the fastest for both CPU-width models on a 2-core CPU).
    seed : seed of the choice of blend partners.
    progress : show a progress bar.

    Learned attributes: ``pool_`` (the reference images ``[M, C, H, W]``),
    ``reference_entropy_`` (``[M]``), ``threshold_`` (entropy, nats).
    """

    _fitted_attribute = "threshold_"
    #: settings refused when changed after fit (they decide the threshold, from blends of the reference images);
    #: the others are read where they are used
    _refit_settings = ("n_blends", "alpha", "percentile", "seed")

    def __init__(self, n_blends: int = 100, *, alpha: float = 0.5, percentile: float = 10.0, batch_size: int = 64,
                 seed: int = 0, progress: bool = False) -> None:
        self.n_blends = n_blends
        self.alpha = alpha
        self.percentile = percentile
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_int(self.n_blends, "n_blends")
        check_number(self.alpha, "alpha", 0.0, 1.0, low_open=True, high_open=True)
        check_number(self.percentile, "percentile", 0.0, 100.0)
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)

    def fit(self, model: nn.Module, reference: LabeledImages, train=None) -> "STRIP":
        """Keep the reference images as blend partners and set the entropy threshold from them."""
        self._check_settings()
        check_labeled(reference, "reference", min_size=2)
        self.pool_ = as_images(reference, "reference")
        self.reference_entropy_ = self._mean_entropy(model, self.pool_, exclude_self=True)
        self.threshold_ = float(np.percentile(self.reference_entropy_, self.percentile))
        return self

    def _partners(self, n_inputs: int, exclude_self: bool, generator: torch.Generator) -> torch.Tensor:
        """``[n_inputs, n_blends]`` indices into the pool; row i avoids i when ``exclude_self``."""
        size = len(self.pool_) - (1 if exclude_self else 0)
        if size >= self.n_blends:
            idx = torch.stack([torch.randperm(size, generator=generator)[: self.n_blends] for _ in range(n_inputs)])
        else:
            idx = torch.randint(0, size, (n_inputs, self.n_blends), generator=generator)
        if exclude_self:
            idx = idx + (idx >= torch.arange(n_inputs)[:, None]).long()  # skip index i in row i
        return idx

    def _mean_entropy(self, model: nn.Module, images: torch.Tensor, exclude_self: bool = False) -> np.ndarray:
        device = model_device(model)
        generator = torch.Generator().manual_seed(int(self.seed))
        partners = self._partners(len(images), exclude_self, generator)
        per_pass = max(1, self.batch_size // self.n_blends)
        out = np.zeros(len(images))
        with evaluating(model):
            for start in tqdm(range(0, len(images), per_pass), desc="STRIP", disable=not self.progress):
                block = images[start : start + per_pass]
                blends = self.alpha * block[:, None] + (1 - self.alpha) * self.pool_[partners[start : start + len(block)]]
                blends = blends.flatten(0, 1)
                ent = torch.cat([entropy(softmax64(model(blends[s : s + self.batch_size].to(device))))
                                 for s in range(0, len(blends), self.batch_size)])
                out[start : start + len(block)] = ent.view(len(block), -1).double().mean(1).numpy()
        return out

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if images.shape[1:] != self.pool_.shape[1:]:
            raise ValueError(f"x: images of shape {tuple(images.shape[1:])} cannot be blended with reference images "
                             f"of shape {tuple(self.pool_.shape[1:])}")
        mean_entropy = self._mean_entropy(model, images)
        return -mean_entropy, mean_entropy - self.threshold_


__all__ = ["STRIP"]
