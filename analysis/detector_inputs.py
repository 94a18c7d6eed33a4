"""Checks of what the detector is given besides images: class labels, feature lists and the threshold tau.

Images go through :func:`analysis.validation.check_images`; these are the detector's other inputs, each refused
with the argument's name, what was expected and what was given, since each would otherwise run through and
return a wrong answer (a float label truncated to another class, a NaN feature that no input can fall below).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ArrayLike", "as_labels", "check_feature_list", "check_finite", "check_tau"]

ArrayLike = np.ndarray | torch.Tensor


def as_labels(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D ``int64`` array of class indices; integral floats are accepted, other floats refused."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {array.shape}")
    if len(array) and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name}: expected integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def check_finite(values: ArrayLike, name: str) -> None:
    """Raise if an array or tensor holds NaN or inf."""
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise ValueError(f"{name}: contains NaN or inf")


def check_feature_list(features: Sequence[ArrayLike], n: int, expected_layers: int | None) -> list[ArrayLike]:
    """One finite ``[n, D_l]`` array (or None, for a layer not read) per layer, index 0 = layer 1; arrays as given."""
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
        check_finite(f, f"features[{i}] (layer {i + 1})")
        checked.append(f)
    return checked


def check_tau(value: Any, name: str = "tau", low: float = 0.0, high: float | None = None) -> float:
    """``value`` as a float if it is a finite threshold in standard deviations, ``>= low`` (and ``<= high``).

    The one check of tau: the detector's setting and arguments, the explorer's, and the apps' sliders (which
    pass their range as ``low``/``high``). Booleans, strings, NaN and inf are refused.

    Examples
    --------
    >>> check_tau(2)
    2.0
    >>> check_tau(-1)
    Traceback (most recent call last):
    ...
    ValueError: tau: expected a finite number >= 0, got -1 (a threshold in standard deviations)
    >>> check_tau(5.0, low=0.5, high=4.0)
    Traceback (most recent call last):
    ...
    ValueError: tau: expected a value in 0.5..4.0, got 5.0 (a threshold in standard deviations)
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value)) and value >= low and (high is None or value <= high)
    if not ok:
        expected = f"a finite number >= {low:g}" if high is None else f"a value in {low}..{high}"
        raise ValueError(f"{name}: expected {expected}, got {value!r} (a threshold in standard deviations)")
    return float(value)
