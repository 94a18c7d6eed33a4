"""IBD-PSC (Hou et al., ICML 2024): a trigger's prediction stays confident when BatchNorm parameters are amplified.

*Parameter-oriented scaling consistency*: multiplying the weight and bias of a model's
last BatchNorm layers by ``scale`` (paper: omega = 1.5) makes the model unsure about benign
inputs, while backdoored inputs keep their (target-class) confidence. For ``n_models``
amplified copies (paper: n = 5) the score of an input ``x`` is

    PSC(x) = (1 / n) * sum_i p_i( y(x) | x ),

the mean softmax probability, under the i-th amplified copy, of the class ``y(x)`` the
*unamplified* model predicts. PSC is in [0, 1]; an input is flagged when PSC > ``threshold``
(paper: T = 0.9).

Score: ``-log(1 - PSC)``, with ``1 - PSC`` computed as the mean *doubt* ``1 - p_i`` in float64
(:func:`.base.doubt`), exact where ``p_i`` itself rounds to 1. It orders inputs exactly as PSC does,
but PSC in floating point ties at 1.0 for confident inputs (benign and poisoned alike), which made
AUROC and TPR at a fixed FPR depend on rounding; the flag is unchanged (PSC > T ⟺ score > -log(1 - T)).

Which layers (adaptive selection, as in the official code in BackdoorBox): the BatchNorm
layers are ordered as ``model.named_modules()`` lists them (registration order; for this
toolkit's ResNet-18 a block's shortcut BN comes after its ``bn2``). For k = 1, 2, ...,
L - 1 the last k of the L layers are amplified and the error of the amplified model on
the reference images (prediction != label) is measured; ``start_`` is the first k whose
error exceeds ``error_bound`` (paper: 60 %), i.e. the first depth at which amplification
is strong enough to break benign predictions. The i-th amplified copy (i = 1..n) then
amplifies the last ``start_ + i`` layers (the official code's indexing), capped at L (a
capped copy counts as often as it occurs in the mean, as Python's slicing makes it there).

Deviations and choices the paper leaves open
--------------------------------------------
* Every amplified model is a ``copy.deepcopy`` of the model given to ``fit``/``predict``;
  the caller's model (parameters, buffers, train/eval mode) is never changed.
* Layers: every ``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``) with affine parameters
  counts; the official code counts ``BatchNorm2d`` only (the same for CNNs).
  A model without such layers raises a ``ValueError``.
* If no k < L pushes the reference error above ``error_bound`` (a model very robust to
  amplification), the official code fails; here ``start_ = L - 1``, so every copy
  amplifies all L layers (one distinct copy), with a warning.
* The error is measured on the whole reference set, misclassified images included (as the
  official code does); probabilities are computed in float64 (:func:`.base.softmax64`).
* Ties: flag iff PSC > threshold (the paper's wording; BackdoorBox writes ``>=``; with the exact
  score above, ties are rare). Predictions are ``argmax``; among equal logits the lowest
  class index wins.
* Deterministic: no randomness, hence no ``seed``.
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..devices import model_device
from .base import Defense, as_images, check_int, check_labeled, check_number, doubt, evaluating


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Module paths of the BatchNorm layers with affine weight and bias, in ``named_modules()`` order."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine]


def amplified_copy(model: nn.Module, layers: Sequence[str], scale: float) -> nn.Module:
    """A deep copy of ``model``, in eval mode, with the weight and bias of ``layers`` multiplied by ``scale``."""
    amplified = copy.deepcopy(model)
    modules = dict(amplified.named_modules())
    with torch.no_grad():
        for name in layers:
            modules[name].weight.mul_(scale)
            modules[name].bias.mul_(scale)
    return amplified.eval()


def _require_batchnorm(model: nn.Module) -> list[str]:
    names = batchnorm_layers(model)
    if not names:
        raise ValueError(f"model: IBD-PSC needs BatchNorm layers (it amplifies their weights and biases), and "
                         f"{type(model).__name__} has none with affine parameters")
    return names


class IBDPSC(Defense):
    """Flag inputs whose predicted class keeps a high probability when the last BatchNorm layers are amplified.

    Parameters
    ----------
    scale : factor applied to the weight and bias of the amplified BatchNorm layers, > 1 (paper: 1.5).
    n_models : number of amplified copies whose probabilities are averaged (paper: 5).
    error_bound : reference error (fraction) the first amplification depth must exceed (paper: 0.6).
    threshold : flag when PSC exceeds it, in [0, 1] (paper: 0.9).
    batch_size : images per forward pass.
    progress : show a progress bar.

    Learned attributes: ``bn_layers_`` (module paths of the L BatchNorm layers, in order),
    ``reference_error_`` (float64 ``[start_]``: reference error with the last 1, 2, ...
    layers amplified, as far as the search went), ``start_`` (int) and ``amplified_counts_``
    (tuple of ``n_models`` ints: how many of the last layers each copy amplifies).
    """

    _fitted_attribute = "amplified_counts_"
    #: settings refused when changed after fit (they decide the amplified layer counts);
    #: the others are read where they are used
    _refit_settings = ("scale", "n_models", "error_bound")

    def __init__(self, scale: float = 1.5, *, n_models: int = 5, error_bound: float = 0.6, threshold: float = 0.9,
                 batch_size: int = 256, progress: bool = False) -> None:
        self.scale = scale
        self.n_models = n_models
        self.error_bound = error_bound
        self.threshold = threshold
        self.batch_size = batch_size
        self.progress = progress

    def _check_settings(self) -> None:
        check_number(self.scale, "scale", 1.0, float("inf"), low_open=True, high_open=True)
        check_int(self.n_models, "n_models")
        check_number(self.error_bound, "error_bound", 0.0, 1.0, high_open=True)
        check_number(self.threshold, "threshold", 0.0, 1.0)
        check_int(self.batch_size, "batch_size")

    def _predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        device = model_device(model)
        with evaluating(model):
            return torch.cat([model(images[s : s + self.batch_size].to(device)).argmax(1).cpu()
                              for s in range(0, len(images), self.batch_size)])

    def fit(self, model: nn.Module, reference: LabeledImages, train=None) -> "IBDPSC":
        """Choose how many of the last BatchNorm layers to amplify, from the reference images' error."""
        self._check_settings()
        names = _require_batchnorm(model)
        check_labeled(reference, "reference")
        images, labels = as_images(reference, "reference"), reference.y.cpu()
        n_layers = len(names)
        errors, start = [], None
        for k in tqdm(range(1, n_layers), desc="IBD-PSC layers", disable=not self.progress):
            predicted = self._predict(amplified_copy(model, names[n_layers - k:], self.scale), images)
            errors.append(float((predicted != labels).double().mean()))
            if errors[-1] > self.error_bound:
                start = k
                break
        if start is None:
            if n_layers > 1:
                warnings.warn(f"IBD-PSC: amplifying up to {n_layers - 1} of {n_layers} BatchNorm layers by "
                              f"{self.scale} never pushed the reference error above error_bound={self.error_bound} "
                              f"(max {max(errors):.2f}); every copy amplifies all {n_layers} layers",
                              stacklevel=3)  # 3: past Defense's fit wrapper, at the caller of fit
            start = n_layers - 1
        self.bn_layers_ = names
        self.reference_error_ = np.asarray(errors, dtype=np.float64)
        self.start_ = start
        self.amplified_counts_ = tuple(min(start + i, n_layers) for i in range(1, self.n_models + 1))
        return self

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        names = _require_batchnorm(model)
        if names != self.bn_layers_:
            raise ValueError(f"model: its BatchNorm layers differ from those of the model this IBDPSC was fitted on "
                             f"({len(names)} vs {len(self.bn_layers_)} layers); fit it on this model")
        predicted = self._predict(model, images)
        device = model_device(model)
        doubt_sum = np.zeros(len(images))  # sum over copies of 1 - p_i(y(x) | x), exact in float64
        counts = sorted(set(self.amplified_counts_))  # a capped count repeats: run its copy once, weigh it
        for count in tqdm(counts, desc="IBD-PSC", disable=not self.progress):
            amplified = amplified_copy(model, names[len(names) - count:], self.scale)
            weight = self.amplified_counts_.count(count)
            with evaluating(amplified, f"model (its copy with the last {count} BatchNorm layers amplified)"):
                for s in range(0, len(images), self.batch_size):
                    logits = amplified(images[s : s + self.batch_size].to(device))
                    doubt_sum[s : s + len(logits)] += weight * doubt(logits, predicted[s : s + len(logits)])
            del amplified
        mean_doubt = doubt_sum / len(self.amplified_counts_)  # = 1 - PSC
        scores = -np.log(np.maximum(mean_doubt, np.finfo(np.float64).tiny))
        return scores, mean_doubt - (1.0 - self.threshold)  # flagged iff PSC > threshold


__all__ = ["IBDPSC", "amplified_copy", "batchnorm_layers"]
