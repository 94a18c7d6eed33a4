"""Centroids and per-sample similarity to them (paper, Definitions 1 and 2).

Plain functions on ``[N, D]`` arrays; torch tensors are accepted and computed in
float64 for reproducible sums.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["EPS", "as_float64", "cosine_to", "euclidean_to", "float64_device", "leave_one_out_cosine"]

EPS = 1e-12


def float64_device(device: torch.device) -> torch.device:
    """Where float64 sums of tensors on ``device`` run: that device, or the CPU where it has no float64 (Apple MPS)."""
    return torch.device("cpu") if device.type == "mps" else device


def as_float64(values: np.ndarray | torch.Tensor, name: str = "features") -> torch.Tensor:
    """A ``[N, D]`` float64 tensor, on the input's device (the CPU for arrays, and for MPS: see :func:`float64_device`)."""
    tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    if tensor.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, D], got shape {tuple(tensor.shape)}")
    return tensor.to(float64_device(tensor.device), torch.float64)


def cosine_to(features: np.ndarray | torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[N]`` of each row to ``center`` (Definition 2); zero vectors give 0.

    Examples
    --------
    >>> import torch
    >>> cosine_to(torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]]), torch.tensor([3.0, 0.0]))
    tensor([ 1.0000,  0.7071, -1.0000,  0.0000], dtype=torch.float64)
    """
    feats = as_float64(features)
    center = center.to(feats.device, torch.float64)  # feats: float64 on a device that has it
    dots = feats @ center
    norms = feats.norm(dim=1) * center.norm()
    return dots / norms.clamp_min(EPS)


def euclidean_to(features: np.ndarray | torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[N]`` of each row to ``center`` (the paper's Table 8 alternative)."""
    feats = as_float64(features)
    return (feats - center.to(feats.device, torch.float64)).norm(dim=1)


def leave_one_out_cosine(features: np.ndarray | torch.Tensor, center: torch.Tensor, count: int) -> torch.Tensor:
    """Cosine similarity ``[N]`` of each row to ``center`` recomputed *without that row*.

    ``center`` is the mean of ``count`` rows of a class, these rows among them. Without row ``x`` the mean is
    ``(count * center - x) / (count - 1)``; the cosine is scale-free, so it is
    ``(count x·c - |x|²) / (|x| |count c - x|)``, with ``|count c - x|² = count² |c|² - 2 count x·c + |x|²``:
    no second pass over the class. Zero vectors give 0, as in :func:`cosine_to`.
    """
    if count < 2:
        raise ValueError(f"count: a leave-one-out centroid needs at least 2 samples, got {count}")
    feats = as_float64(features)
    center = center.to(feats.device, torch.float64)
    dots, squares, center_sq = feats @ center, (feats * feats).sum(1), center @ center
    rest_sq = (count * count * center_sq - 2 * count * dots + squares).clamp_min(0.0)
    return (count * dots - squares) / (squares.sqrt() * rest_sq.sqrt()).clamp_min(EPS)
