"""WaNet (Nguyen & Tran, ICLR 2021): an imperceptible warping trigger, with noise mode.

The trigger is a fixed smooth warp: a seeded ``k``×``k`` grid of random offsets (uniform in
[-1, 1], normalised by their mean absolute value), upsampled bicubically to the image size,
scaled by ``strength / H`` and added to the identity sampling grid of
:func:`torch.nn.functional.grid_sample` (``align_corners=True``), then clamped to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import LabeledImages
from .base import Attack, PoisonedTrainingSet


@dataclass(frozen=True)
class WaNetTrainingSet(PoisonedTrainingSet):
    """A WaNet-poisoned training set.

    ``poisoned_indices`` are the backdoor samples (warped, relabelled); ``noise_indices``
    (sorted, disjoint from them) carry a randomly perturbed warp and keep their true label.
    """

    noise_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def identity_grid(height: int, width: int) -> torch.Tensor:
    """The sampling grid ``[1, H, W, 2]`` (x, y in [-1, 1]) that leaves an image unchanged (``align_corners=True``)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return torch.stack([xs, ys], dim=-1).unsqueeze(0)


class WaNet(Attack):
    """Warping backdoor. Paper settings (App. D.3): ``k = 4``, ``strength`` s = 0.5, ρ_n = 0.2, target 0, rate 10%.

    Noise mode: besides the ``rate`` share of backdoor samples (warped, relabelled to the
    target, drawn from the non-target classes), ``noise_rate`` × N further training images
    (N = training-set size, drawn from all remaining images) get the backdoor warp plus
    random grid noise (``(2·U[0,1) - 1) / H`` per grid point) and keep their true label,
    so the model learns this exact warp rather than any warp. ``noise_rate`` is a share
    of the *whole training set*, as in BackdoorBox (which the paper used), where it is
    twice the poisoning rate, i.e. WaNet's cross ratio 2 relative to the number of
    backdoor samples: 0.2 · N noise samples for 0.1 · N backdoor samples.

    Deviation: WaNet redraws the noise of the noise samples whenever they are loaded
    (every epoch); here each noise sample gets one seeded random warp, stored in the
    poisoned training set, as a poison-only attacker who ships a fixed dataset would.
    The grid comes from ``grid_seed``; :meth:`state_tensors` stores it.
    """

    name = "wanet"

    def __init__(
        self,
        target: int = 0,
        *,
        rate: float = 0.10,
        k: int = 4,
        strength: float = 0.5,
        noise_rate: float = 0.2,
        grid_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"k: expected a control-grid size >= 2, got {k!r}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
            raise ValueError(f"strength: expected a non-negative warping strength s, got {strength!r}")
        if isinstance(noise_rate, bool) or not isinstance(noise_rate, (int, float)) or not 0.0 <= noise_rate < 1.0:
            raise ValueError(f"noise_rate: expected a share of the training set in [0, 1), got {noise_rate!r}")
        self.k, self.strength, self.noise_rate, self.grid_seed = int(k), float(strength), float(noise_rate), int(grid_seed)
        generator = torch.Generator().manual_seed(self.grid_seed)
        grid = torch.rand(1, 2, self.k, self.k, generator=generator) * 2 - 1
        self.control_grid = grid / grid.abs().mean()  # [1, 2, k, k], mean |offset| = 1

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": self.k, "strength": self.strength, "noise_rate": self.noise_rate,
                "grid_seed": self.grid_seed}

    def check_image_size(self, height: int, width: int) -> None:
        if height < self.k or width < self.k:
            raise ValueError(f"k: a {self.k}x{self.k} control grid needs images of at least that size, got {height}x{width}")

    def warp_grid(self, height: int, width: int) -> torch.Tensor:
        """The backdoor's sampling grid ``[1, H, W, 2]`` (x, y in [-1, 1])."""
        self.check_image_size(height, width)
        flow = F.interpolate(self.control_grid, size=(height, width), mode="bicubic", align_corners=True)
        flow = flow.permute(0, 2, 3, 1)  # [1, H, W, 2]
        return (identity_grid(height, width) + self.strength * flow / height).clamp(-1, 1)

    @staticmethod
    def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Resample images ``[B, C, H, W]`` at ``grid`` (``[1 or B, H, W, 2]``), bilinear, ``align_corners=True``."""
        grid = grid.to(x.device, x.dtype).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x, self.warp_grid(x.shape[2], x.shape[3]))

    def apply_noise_warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise mode: each image warped by the backdoor grid plus its own random noise ``(2·U - 1) / H``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x: expected a tensor of shape [B, C, H, W], got {getattr(x, 'shape', type(x))}")
        height, width = x.shape[2], x.shape[3]
        noise = (torch.rand(len(x), height, width, 2, generator=generator) * 2 - 1) / height
        grid = (self.warp_grid(height, width) + noise).clamp(-1, 1)
        return self.warp(x.float(), grid).clamp(0.0, 1.0)

    def poison_training_set(self, train: LabeledImages) -> WaNetTrainingSet:
        """Backdoor samples as in :class:`Attack`, plus ``noise_rate`` × N noise-mode samples with true labels."""
        base = super().poison_training_set(train)
        n_noise = int(round(self.noise_rate * len(train)))
        pool = np.setdiff1d(np.arange(len(train)), base.poisoned_indices)
        if n_noise > len(pool):
            raise ValueError(f"noise_rate: {n_noise} noise samples but only {len(pool)} images are not backdoor samples")
        noise_idx = np.sort(self._rng(2).choice(pool, size=n_noise, replace=False))
        x = base.data.x
        if n_noise:
            generator = torch.Generator().manual_seed(int(self._rng(3).integers(2**62)))
            idx = torch.as_tensor(noise_idx)
            x = x.clone()
            x[idx] = self.apply_noise_warp(train.x[idx], generator)
        return WaNetTrainingSet(LabeledImages(x, base.data.y), base.poisoned_indices, base.poisoned_labels, noise_idx)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"control_grid": self.control_grid}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        unknown = set(tensors) - {"control_grid"}
        if unknown:
            raise ValueError(f"tensors: WaNet stores only 'control_grid', got {sorted(unknown)}")
        if "control_grid" in tensors:
            grid = tensors["control_grid"].float().cpu()
            if tuple(grid.shape) != (1, 2, self.k, self.k):
                raise ValueError(
                    f"tensors['control_grid']: expected shape (1, 2, {self.k}, {self.k}), got {tuple(grid.shape)}")
            self.control_grid = grid


__all__ = ["WaNet", "WaNetTrainingSet", "identity_grid"]
