"""The interface shared by the baseline defenses (and the paper's layer-wise detector).

Every defense is a scikit-learn style estimator of *inputs*: settings in the constructor
only; ``fit(model, reference, train=None)`` returns ``self`` and stores what it learns in
attributes ending with ``_``; ``predict(model, x)`` -> bool ``[N]`` (True = poisoned);
``suspicion(model, x)`` -> float ``[N]``, a suspicion score (higher = more suspicious), and
scikit-learn's ``score_samples(model, x)`` = ``-suspicion`` (higher = more normal);
``decision_function(model, x)`` -> float ``[N]``, negative exactly where ``predict`` flags
(scikit-learn's sign convention, 0 = the boundary, which is accepted).

For a defense that thresholds its score, the decision is ``threshold - suspicion`` (or the
same difference on the quantity it thresholds: STRIP's entropy, IBD-PSC's ``1 - PSC``). RS,
ShrinkPad and Fine-Pruning flag an input when a prediction changes, which is not a
threshold on their score, so their decision is the margin of the plain prediction in what
decides the change (:func:`class_margin`: logits, or RS's votes), and ``score_samples`` is
not ``decision_function`` plus a constant for them.

Subclasses implement ``_detect(model, images) -> (suspicion, decision)`` (the flags are
``decision < 0``; :func:`signed_margin` makes a margin agree with flags decided elsewhere)
and name the attribute that marks them fitted in ``_fitted_attribute``.

``detect(model, x)`` returns a :class:`~analysis.estimator.Detection`: ``suspicion`` (as above), ``flagged`` and
``predicted`` for every detector, and ``scores``, the detector's raw score (a baseline's is its suspicion).

:class:`Defense`, :class:`~analysis.estimator.Detection`, :func:`as_images`, :func:`check_model` and
:func:`signed_margin` are defined in :mod:`analysis.estimator` and imported here: the paper's
:class:`analysis.detection.LayerwiseDetector` derives from the same :class:`Defense` (registered as ``"layerwise"``),
and :mod:`analysis.detection` sits below this package.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..devices import evaluation_mode, model_device
from ..estimator import Defense, Detection, Images, as_images, check_model, signed_margin  # noqa: F401 (the contract)
from ..features import capture, resolve_layers
from ..reference_checks import ReferenceWarning
from ..validation import (NotFittedError, check_choice, check_finite_tensor, check_images, check_int,  # noqa: F401
                          check_model_output, check_number)


class StatelessDefense(Defense):
    """A defense with nothing to learn (it transforms each input on its own): ``fit`` checks the settings only."""

    def fit(self, model: nn.Module, reference: LabeledImages | None = None, train: LabeledImages | None = None):
        """Nothing to learn; checks the model and the settings and returns ``self``."""
        check_model(model, float32_only=self._float32_only)
        self._check_settings()
        self.fitted_ = True
        return self


# ---------------------------------------------------------------------- checks
def check_labeled(data: Any, name: str, min_size: int = 1) -> LabeledImages:
    if not isinstance(data, LabeledImages):
        raise TypeError(f"{name}: expected LabeledImages, got {type(data).__name__}")
    if len(data) < min_size:
        raise ValueError(f"{name}: expected at least {min_size} images, got {len(data)}")
    as_images(data, name)
    return data


def check_layers(model: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    """``layers`` as a list of module paths of ``model``; None = ``[model.latent_layer]``."""
    if layers is None:
        latent = getattr(model, "latent_layer", None)
        if not latent:
            raise ValueError(f"layers: {type(model).__name__} has no 'latent_layer'; pass layers=['module.path', ...]")
        names = [latent]
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"layers: expected a module path or a non-empty list of module paths, got {layers!r}")
    resolve_layers(model, names)
    return names


# ---------------------------------------------------------------------- model helpers
@contextmanager
def evaluating(model: nn.Module, name: str = "model") -> Iterator[nn.Module]:
    """Eval mode and no autograd inside the block; every submodule's mode is restored on exit.

    The one place where the defenses run a model: it must be a float32 ``nn.Module`` (:func:`check_model`),
    and every forward pass inside the block has its output checked
    (:func:`analysis.validation.check_model_output`: a logits tensor ``[N, classes]``, no NaN or inf), so a
    tuple, a dict or non-finite logits raise a clear error instead of a late internal one or a silent
    "not flagged".
    """
    check_model(model, name)

    def check_output(_module: nn.Module, _inputs: tuple, output: Any) -> None:
        check_model_output(output, name)

    handle = model.register_forward_hook(check_output)
    try:
        with evaluation_mode(model), torch.no_grad():
            yield model
    finally:
        handle.remove()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs`` ``[B, K]``; 0 log 0 = 0."""
    return torch.special.entr(probs).sum(1)


def softmax64(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of ``logits`` ``[B, K]`` in float64 (on the CPU).

    In float32 a confident prediction's probability rounds to exactly 1.0 (its doubt and entropy to
    exactly 0), so many inputs tie and a suspicion score's ranking, hence its AUROC, depends on the
    last bit of the logits, which differs between CPUs. In float64 those inputs stay ordered by
    their logit margins.
    """
    return logits.detach().double().cpu().softmax(1)


def doubt(logits: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """``1 - p(class | x)`` per row, float64 ``[B]``: how far the model is from predicting ``classes`` ``[B]``.

    With ``S = sum_{j != c} exp(z_j - z_c)`` (logits ``z``, class ``c``) the doubt is ``S / (1 + S)``,
    computed as ``sigmoid(log S)`` in float64: exact where float32 gives exactly 0 for confident
    predictions (a margin of 30 gives ``e^-30 / (1 + e^-30)``, see :func:`softmax64`), and never
    overflows.
    """
    logits = logits.detach().double().cpu()
    index = classes.detach().cpu().long()[:, None]
    margins = (logits - logits.gather(1, index)).scatter(1, index, float("-inf"))
    return torch.sigmoid(torch.logsumexp(margins, 1)).numpy()


def class_margin(values: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """``values[i, c] - max_{j != c} values[i, j]`` with ``c = classes[i]``, float64 ``[B]`` (``values`` ``[B, K]``).

    Non-negative where ``c`` holds the largest value (``argmax`` may still pick an earlier class on
    an exact tie: :func:`signed_margin` settles that), negative where another class beats it: the
    decision value of a defense that flags a changed prediction. ``+inf`` when ``K = 1``.

    Examples
    --------
    >>> import torch
    >>> class_margin(torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]]), torch.tensor([0, 0]))
    array([ 1., -5.])
    """
    values = values.detach().double().cpu()
    index = classes.detach().cpu().long()[:, None]
    own = values.gather(1, index)[:, 0]
    rivals = values.scatter(1, index, float("-inf")).max(1).values
    return (own - rivals).numpy()


def warn_collapsed(predicted: np.ndarray, labels: np.ndarray | None, defense: str, stacklevel: int = 4) -> None:
    """A :class:`analysis.detection.ReferenceWarning` when the model predicts every reference image as one class.

    A collapsed model (or reference images it cannot read: wrong scale, wrong preprocessing) makes a defense's
    reference statistics meaningless: TED's neighbour ranks, SCALE-UP's consistency (every scaled copy keeps
    the one class, so everything is flagged). ``labels``: the reference labels; no warning when they hold a
    single class themselves.
    """
    predicted = np.asarray(predicted)
    if len(predicted) < 2 or len(np.unique(predicted)) > 1:
        return
    if labels is not None and len(np.unique(np.asarray(labels))) < 2:
        return
    warnings.warn(f"reference: the model predicts all {len(predicted)} reference images as class {int(predicted[0])} "
                  f"(a collapsed model, or images it cannot read); {defense}'s statistics and flags are meaningless "
                  f"for such a model", ReferenceWarning, stacklevel=stacklevel)


def features_of(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened outputs of ``layers`` concatenated, float64 ``[N, sum D_l]``, and predicted classes ``[N]``."""
    device = model_device(model)
    chunks, predicted = [], []
    with evaluating(model), capture(model, layers) as outputs:
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device))
            for name in layers:
                check_finite_tensor(outputs[name], f"layer {name!r} of the model", what="features")
            chunks.append(torch.cat([outputs[name] for name in layers], 1).double().cpu().numpy())
            predicted.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(chunks), np.concatenate(predicted)


__all__ = [
    "Defense", "StatelessDefense", "as_images", "check_labeled", "check_layers", "check_model", "class_margin", "doubt",
    "entropy", "warn_collapsed",
    "evaluating", "features_of", "signed_margin", "softmax64",
]
