"""The estimator contract shared by the detector and every defense, in one place: settings, the fitted model, and
the :class:`Defense` protocol.

:class:`Defense` is the interface of every detector of inputs: the baselines of :mod:`analysis.defenses` and the
paper's :class:`analysis.detection.LayerwiseDetector` derive from it (its contract: :mod:`analysis.defenses.base`,
where the baselines import it from). It is defined here, below both, so that the detector implements it itself.

Both are :class:`EstimatorMixin`: ``get_params`` reads the constructor's arguments back from the attributes of the same names
(so ``sklearn.base.clone`` works), ``set_params`` refuses unknown names, and a fitted estimator records its settings
(:func:`snapshot_params`) so that a setting its fitted state depends on, changed after ``fit``, is refused
(:func:`check_unchanged_settings`) instead of silently mixing the old fit with the new setting; ``unbind_model``
lifts the check that scored models are the fitted one (:mod:`analysis.fingerprint`).
"""
from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data import LabeledImages
from .devices import model_dtype
from .features import predict_classes
from .fingerprint import check_same_model, model_fingerprint
from .validation import NotFittedError, check_images, same_setting

__all__ = ["Defense", "Detection", "EstimatorMixin", "as_images", "check_model", "check_unchanged_settings",
           "constructor_params", "records_own_fit", "set_params", "signed_margin", "snapshot_params"]

Images = LabeledImages | torch.Tensor | np.ndarray


def constructor_params(estimator: Any) -> dict[str, Any]:
    """``{name: value}`` of the estimator's constructor arguments, read from its attributes (scikit-learn's ``get_params``).

    Examples
    --------
    >>> class Thing:
    ...     def __init__(self, a=1, *, b="x"):
    ...         self.a, self.b = a, b
    >>> constructor_params(Thing(a=2))
    {'a': 2, 'b': 'x'}
    """
    names = [name for name in inspect.signature(type(estimator).__init__).parameters if name != "self"]
    return {name: getattr(estimator, name) for name in names}


def set_params(estimator: Any, params: dict[str, Any]) -> Any:
    """scikit-learn's ``set_params``: set constructor settings by name, refusing unknown ones; returns ``estimator``."""
    valid = estimator.get_params()
    unknown = [name for name in params if name not in valid]
    if unknown:
        raise ValueError(f"set_params: unknown setting(s) {unknown} for {type(estimator).__name__}; "
                         f"valid: {sorted(valid)}")
    for name, value in params.items():
        setattr(estimator, name, value)
    return estimator


def snapshot_params(estimator: Any) -> dict[str, Any]:
    """A deep copy of ``estimator.get_params()``: later in-place changes (``det.layers.append(...)``) cannot reach it."""
    return copy.deepcopy(estimator.get_params())


def check_unchanged_settings(estimator: Any, names: Sequence[str]) -> None:
    """Raise if a setting in ``names`` differs from the one recorded at fit (``estimator.fit_params_``; None: no check).

    The message names each changed setting with both values and asks to refit or set it back.
    """
    recorded = getattr(estimator, "fit_params_", None)
    if recorded is None:
        return
    current = estimator.get_params()
    changed = [name for name in names if not same_setting(current[name], recorded[name])]
    if changed:
        raise ValueError(
            "; ".join(f"{name}: changed after fit (fitted with {recorded[name]!r}, now {current[name]!r})"
                      for name in changed)
            + f"; the fitted state of this {type(estimator).__name__} depends on it: refit (call fit again), "
              f"or set it back")


class EstimatorMixin:
    """Mixin: scikit-learn's ``get_params`` and ``set_params`` for an estimator whose settings are its constructor's
    arguments, stored under the same names, and ``unbind_model``. The estimator defines ``_check_fitted``."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's settings by name (scikit-learn's ``get_params``; ``deep`` is accepted and has no effect)."""
        return constructor_params(self)

    def set_params(self, **params: Any) -> Any:
        """Set constructor settings by name (scikit-learn's ``set_params``); returns ``self``.

        After ``fit``, a setting the fitted state depends on (the estimator's ``_refit_settings``) is refused at the
        next call with a ValueError asking to refit; the others take effect at the next call.
        """
        return set_params(self, params)

    def unbind_model(self) -> Any:
        """Forget which model ``fit`` saw (``model_fingerprint_ = None``), so that other models can be scored on purpose.

        After ``fit``, scoring a model whose weights differ from the fitted one's
        (:func:`analysis.fingerprint.model_fingerprint`) raises :class:`analysis.fingerprint.ModelMismatchError`.
        """
        self._check_fitted()
        self.model_fingerprint_ = None
        return self


# ---------------------------------------------------------------------- the Defense protocol
@dataclass(frozen=True)
class Detection:
    """What ``detect(model, x)`` found, one entry per input, for every detector (the defenses and the layer-wise one).

    ``suspicion`` is the score of every detector's ROC (higher = more suspicious); ``scores`` is the detector's
    raw score: :class:`analysis.detection.LayerwiseDetector`'s summed similarity or distance (higher = more normal
    for the paper's cosine sums), a baseline's own score, which is its suspicion (``suspicion`` left None = ``scores``).
    """

    predicted: np.ndarray  # [N] int64, the model's class
    scores: np.ndarray  # [N] float64, the raw score (LayerwiseDetector: summed similarity or distance)
    flagged: np.ndarray  # [N] bool, True = poisoned
    suspicion: np.ndarray | None = None  # [N] float64, higher = more suspicious; None: the same as ``scores``

    def __post_init__(self) -> None:
        if self.suspicion is None:
            object.__setattr__(self, "suspicion", self.scores)


def as_images(x: Images, name: str = "x") -> torch.Tensor:
    """Images as a float32 tensor ``[N, C, H, W]`` in [0, 1]; anything else raises (:func:`analysis.validation.check_images`)."""
    return check_images(x, name).float()


def check_model(model: Any, name: str = "model", float32_only: bool = True) -> nn.Module:
    """``model`` if it is a ``torch.nn.Module`` (float32 with ``float32_only``); a TypeError or ValueError otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}")
    if float32_only and model_dtype(model) != torch.float32:
        raise ValueError(f"{name}: the baseline defenses run float32 models, got {type(model).__name__} with "
                         f"{model_dtype(model)} parameters; pass a float32 model "
                         f"(model.float() converts it in place; copy.deepcopy(model).float() leaves it as it is)")
    return model


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


def records_own_fit(fit):
    """Mark a :class:`Defense` subclass's ``fit`` that calls ``self._record_fit(model)`` itself, so it is not wrapped:
    the wrapper adds a frame, and warnings raised in ``fit`` would point at it instead of the caller's line."""
    fit._records_fit = True
    return fit


class Defense(EstimatorMixin):
    """Base class of every detector of inputs; the contract is in :mod:`analysis.defenses.base`."""

    _fitted_attribute = "fitted_"
    #: whether the defense runs only float32 models (the layer-wise detector runs any floating dtype)
    _float32_only = True
    #: settings the fitted state depends on: changed after ``fit`` (attribute or :meth:`set_params`), they are
    #: refused with "refit"; every other setting is read where it is used, so a change takes effect at the next call
    _refit_settings: tuple[str, ...] = ()
    #: whether a NaN score is a documented answer (the layer-wise detector: classes without reference samples, as
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
        margin for those that flag a changed prediction (see :mod:`analysis.defenses.base`).
        """
        return self._run(model, x)[1]

    def detect(self, model: nn.Module, x: Images) -> Detection:
        """The model's predicted class, the suspicion score and the flag of every input, from one pass of the defense."""
        scores, _, flagged = self._run(model, x)
        return Detection(predict_classes(model, as_images(x, "x")), scores, flagged)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"
