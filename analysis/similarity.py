"""Centroids and per-sample similarity to them (paper, Definitions 1 and 2).

Plain functions on ``[N, D]`` arrays; torch tensors are accepted and computed in
float64 for reproducible sums.
"""
from __future__ import annotations

import numpy as np
import torch

EPS = 1e-12


def as_float64(values: np.ndarray | torch.Tensor, name: str = "features") -> torch.Tensor:
    """A ``[N, D]`` float64 tensor (on its original device for torch input)."""
    tensor = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    if tensor.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, D], got shape {tuple(tensor.shape)}")
    return tensor.to(torch.float64)


def centroid(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mean feature vector ``[D]`` of ``[N, D]`` features (Definition 1)."""
    return as_float64(features).mean(0)


def cosine_to(features: np.ndarray | torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[N]`` of each row to ``center`` (Definition 2); zero vectors give 0."""
    feats = as_float64(features)
    center = center.to(feats.device, torch.float64)
    dots = feats @ center
    norms = feats.norm(dim=1) * center.norm()
    return dots / norms.clamp_min(EPS)


def euclidean_to(features: np.ndarray | torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[N]`` of each row to ``center`` (the paper's Table 8 alternative)."""
    feats = as_float64(features)
    return (feats - center.to(feats.device, torch.float64)).norm(dim=1)
