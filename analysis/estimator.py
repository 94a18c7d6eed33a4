"""The estimator contract shared by the detector and every defense, in one place: settings and the fitted model.

Used by :class:`analysis.detection.LayerwiseDetector` and :class:`analysis.defenses.base.Defense`, both
:class:`EstimatorMixin`: ``get_params`` reads the constructor's arguments back from the attributes of the same names
(so ``sklearn.base.clone`` works), ``set_params`` refuses unknown names, and a fitted estimator records its settings
(:func:`snapshot_params`) so that a setting its fitted state depends on, changed after ``fit``, is refused
(:func:`check_unchanged_settings`) instead of silently mixing the old fit with the new setting; ``unbind_model``
lifts the check that scored models are the fitted one (:mod:`analysis.fingerprint`).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Sequence

from .validation import same_setting

__all__ = ["EstimatorMixin", "check_unchanged_settings", "constructor_params", "set_params", "snapshot_params"]


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
