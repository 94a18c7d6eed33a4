"""The interface shared by the baseline defenses.

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
"""
from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..detection import Detection
from ..devices import evaluation_mode, model_device, model_dtype
from ..estimator import EstimatorMixin, check_unchanged_settings, snapshot_params
from ..features import capture, predict_classes, resolve_layers
from ..fingerprint import check_same_model, model_fingerprint
from ..reference_checks import ReferenceWarning
from ..validation import (NotFittedError, check_choice, check_finite_tensor, check_images, check_int,  # noqa: F401
                          check_model_output, check_number)

Images = LabeledImages | torch.Tensor | np.ndarray


class Defense(EstimatorMixin):
    """Base class of the defenses; see the module docstring for the contract."""

    _fitted_attribute = "fitted_"
    #: whether the defense runs only float32 models (the layer-wise adapter runs any floating dtype)
    _float32_only = True
    #: settings the fitted state depends on: changed after ``fit`` (attribute or :meth:`set_params`), they are
    #: refused with "refit"; every other setting is read where it is used, so a change takes effect at the next call
    _refit_settings: tuple[str, ...] = ()
    #: whether a NaN score is a documented answer (the layer-wise adapter: classes without reference samples, as
    #: its ``unknown_class`` says); for every other defense a NaN score raises instead of counting as "not flagged"
    _nan_scores_allowed = False

    def __init_subclass__(cls, **kwargs) -> None:
        """Every subclass's ``fit`` records the model's fingerprint and the fitted settings (:meth:`_record_fit`)."""
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is None or getattr(fit, "_records_fit", False):
            return

        @functools.wraps(fit)
        def recording_fit(self, model, *args, **kwargs):
            result = fit(self, model, *args, **kwargs)
            self._record_fit(model)
            return result

        recording_fit._records_fit = True
        cls.fit = recording_fit

    def _record_fit(self, model: nn.Module | None) -> None:
        """``model_fingerprint_`` (None without a model, e.g. ``fit_features``) and ``fit_params_`` (the settings)."""
        self.model_fingerprint_ = model_fingerprint(model) if isinstance(model, nn.Module) else None
        try:
            self.fit_params_ = snapshot_params(self)
        except AttributeError:  # a user's subclass that keeps a setting under another name: no settings check
            self.fit_params_ = None

    def _check_same_model(self, model: nn.Module) -> None:
        """:class:`analysis.fingerprint.ModelMismatchError` unless ``model`` is the one ``fit`` saw (or after ``unbind_model``)."""
        check_same_model(self, model)

    def _fixed_settings(self) -> tuple[str, ...]:
        """The settings refused when changed after fit (:attr:`_refit_settings`; a subclass may decide per fit)."""
        return self._refit_settings

    def fit(self, model: nn.Module, reference: LabeledImages | None = None, train: LabeledImages | None = None):
        raise NotImplementedError

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(suspicion [N], decision [N])``: higher suspicion = more suspicious; decision < 0 exactly where flagged."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attribute):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(model, reference) first")
        check_unchanged_settings(self, self._fixed_settings())

    def _run(self, model: nn.Module, x: Images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(suspicion, decision, flagged)``, each ``[N]``; ``flagged = decision < 0``."""
        self._check_fitted()
        check_model(model, float32_only=self._float32_only)
        self._check_same_model(model)
        self._check_settings()
        scores, decision = self._detect(model, as_images(x, "x"))
        scores, decision = np.asarray(scores, dtype=np.float64), np.asarray(decision, dtype=np.float64)
        if not self._nan_scores_allowed:
            nan = np.isnan(scores) | np.isnan(decision)
            if nan.any():  # NaN < 0 is False: each would be reported as "not flagged"
                raise ValueError(f"{type(self).__name__}: {int(nan.sum())} of {len(nan)} inputs got a NaN score (first "
                                 f"at index {int(np.flatnonzero(nan)[0])}); refusing to report them as not flagged. "
                                 f"Check the model and the reference set (degenerate features or statistics)")
        return scores, decision, decision < 0

    def _check_settings(self) -> None:
        """Raise a ValueError naming the first bad setting (subclasses override)."""

    def predict(self, model: nn.Module, x: Images) -> np.ndarray:
        """bool ``[N]``: True = flagged as poisoned (``decision_function(model, x) < 0``)."""
        return self._run(model, x)[2]

    def suspicion(self, model: nn.Module, x: Images) -> np.ndarray:
        """float ``[N]``: suspicion score, higher = more suspicious (the score behind AUROC and ROC curves)."""
        return self._run(model, x)[0]

    def score_samples(self, model: nn.Module, x: Images) -> np.ndarray:
        """float ``[N]``: scikit-learn's direction, higher = more normal: ``-suspicion(model, x)``."""
        return -self.suspicion(model, x)

    def decision_function(self, model: nn.Module, x: Images) -> np.ndarray:
        """float64 ``[N]``: scikit-learn's sign convention, negative exactly where :meth:`predict` flags.

        ``threshold - suspicion`` for a defense that thresholds its score; the plain prediction's
        margin for those that flag a changed prediction (see the module docstring).
        """
        return self._run(model, x)[1]

    def detect(self, model: nn.Module, x: Images) -> Detection:
        """The model's predicted class, the suspicion score and the flag of every input, from one pass of the defense."""
        scores, _, flagged = self._run(model, x)
        return Detection(predict_classes(model, as_images(x, "x")), scores, flagged)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class StatelessDefense(Defense):
    """A defense with nothing to learn (it transforms each input on its own): ``fit`` checks the settings only."""

    def fit(self, model: nn.Module, reference: LabeledImages | None = None, train: LabeledImages | None = None):
        """Nothing to learn; checks the model and the settings and returns ``self``."""
        check_model(model, float32_only=self._float32_only)
        self._check_settings()
        self.fitted_ = True
        return self


# ---------------------------------------------------------------------- checks
def as_images(x: Images, name: str = "x") -> torch.Tensor:
    """Images as a float32 tensor ``[N, C, H, W]`` in [0, 1]; anything else raises (:func:`analysis.validation.check_images`)."""
    return check_images(x, name).float()


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
def check_model(model: Any, name: str = "model", float32_only: bool = True) -> nn.Module:
    """``model`` if it is a ``torch.nn.Module`` (float32 with ``float32_only``); a TypeError or ValueError otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}")
    if float32_only and model_dtype(model) != torch.float32:
        raise ValueError(f"{name}: the baseline defenses run float32 models, got {type(model).__name__} with "
                         f"{model_dtype(model)} parameters; pass a float32 model "
                         f"(model.float() converts it in place; copy.deepcopy(model).float() leaves it as it is)")
    return model


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


def signed_margin(margin: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """``margin`` float64 ``[N]`` with its sign made to agree with ``flagged`` ``[N]``: negative exactly where flagged.

    Only boundary cases move: a flagged input whose margin is 0 (a tie lost to an earlier class),
    slightly positive (rounding, where the flag came from a comparison on another scale) or NaN gets
    the negative float nearest 0; an accepted one whose margin is slightly negative or NaN gets 0.

    Examples
    --------
    A tie that ``argmax`` gave to an earlier class (flagged, margin 0) moves just below 0:

    >>> import numpy as np
    >>> decision = signed_margin(np.array([2.0, 0.0, 0.0, -1.0]), np.array([False, False, True, True]))
    >>> decision < 0, bool(decision[2] == -np.nextafter(0.0, 1.0))
    (array([False, False,  True,  True]), True)
    """
    margin = np.asarray(margin, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    below = np.nextafter(0.0, -1.0)
    return np.where(flagged, np.fmin(margin, below), np.fmax(margin, 0.0))


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
