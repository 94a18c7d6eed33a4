"""A cheap fingerprint of a model's weights, so that a fitted detector or defense is used only with its own model.

A detector fitted on one model and then given another (a retrained copy, the clean model instead of
the attacked one, a model loaded from another checkpoint) returns numbers without a word, and they
mean nothing: the centroids, thresholds and clusters were learned from the first model's features.
:meth:`analysis.detection.LayerwiseDetector.fit` and every defense's ``fit`` record
:func:`model_fingerprint` of the model in ``model_fingerprint_``; scoring another model raises
:class:`ModelMismatchError` (a ``ValueError``). To score another model on purpose, call the estimator's
``unbind_model()`` (it forgets the fingerprint; ``model_fingerprint_`` is then None, as after
``fit_features``, which sees no model).

The fingerprint reads, for every parameter and buffer (in ``named_parameters()`` then
``named_buffers()`` order): its name and shape, up to :data:`SAMPLES` entries at evenly spaced
positions (exact values, as float64), and its sum (accumulated in float64 on the tensor's own device,
compared with a relative tolerance). Nothing is copied but those few numbers, so it costs one pass over
the weights (a few milliseconds for a ResNet-18). It does not depend on the device: the same model moved
to another device has the same fingerprint. It changes when any sampled entry changes or a sum moves by
more than the tolerance (any fine-tuning, pruning, re-initialisation, another checkpoint); a change
confined to unsampled entries whose sum stays within the tolerance is not seen: the check is a guard
against mix-ups, not a proof of identity.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["ModelFingerprint", "ModelMismatchError", "SAMPLES", "SUM_RTOL", "check_same_model", "model_fingerprint"]

#: entries sampled per parameter or buffer (evenly spaced, first and last included)
SAMPLES = 8
#: relative tolerance on each tensor's sum (float32 sums on another device differ in the last bits)
SUM_RTOL = 1e-5


class ModelMismatchError(ValueError):
    """A fitted detector or defense was given another model than the one it was fitted on."""


@dataclass(frozen=True)
class ModelFingerprint:
    """``digest``: SHA-256 (hex) of the names, shapes and sampled values; ``sums``: float64 ``[P]``, one per tensor."""

    digest: str
    sums: np.ndarray = field(repr=False, compare=False)

    def matches(self, other: "ModelFingerprint") -> bool:
        """Same names, shapes and sampled values, and every sum within :data:`SUM_RTOL` (relative) of the other's."""
        if self.digest != other.digest or self.sums.shape != other.sums.shape:
            return False
        scale = np.maximum(np.abs(self.sums), np.abs(other.sums))
        return bool(np.all(np.abs(self.sums - other.sums) <= SUM_RTOL * scale + 1e-12))

    def __str__(self) -> str:
        return self.digest[:12]


def _sum64(tensor: torch.Tensor) -> float:
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    try:
        return float(tensor.sum(dtype=torch.float64))
    except (RuntimeError, TypeError):  # a device without float64 (Apple MPS)
        return float(tensor.sum(dtype=torch.float32))


@torch.no_grad()
def model_fingerprint(model: nn.Module) -> ModelFingerprint:
    """The :class:`ModelFingerprint` of ``model``'s parameters and buffers (see the module docstring).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(3, 2)
    >>> before = model_fingerprint(model)
    >>> before.matches(model_fingerprint(model))
    True
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(0.1)  # e.g. fine-tuned
    >>> before.matches(model_fingerprint(model))
    False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    digest = hashlib.sha256(type(model).__qualname__.encode())
    sums = []
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        flat = tensor.detach().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        if flat.numel():
            positions = torch.linspace(0, flat.numel() - 1, min(SAMPLES, flat.numel())).round().long()
            sampled = flat[positions.to(flat.device)]
            if sampled.dtype == torch.bool:
                sampled = sampled.to(torch.uint8)
            digest.update(sampled.cpu().to(torch.float64).numpy().tobytes())
        sums.append(_sum64(flat) if flat.numel() else 0.0)
    return ModelFingerprint(digest.hexdigest(), np.asarray(sums, dtype=np.float64))


def check_same_model(fitted: Any, model: nn.Module) -> None:
    """Raise :class:`ModelMismatchError` unless ``model`` matches ``fitted.model_fingerprint_`` (None: no check)."""
    recorded = getattr(fitted, "model_fingerprint_", None)
    if recorded is None:
        return
    given = model_fingerprint(model)
    if not recorded.matches(given):
        raise ModelMismatchError(
            f"model: this {type(fitted).__name__} was fitted on another model (fingerprint {recorded}, this model's "
            f"{given}: other weights or layers); refit it on this model, or call unbind_model() on it to score "
            f"other models on purpose")
