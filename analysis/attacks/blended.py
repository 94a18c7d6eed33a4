"""Blended (Chen et al. 2017): a fixed random-noise pattern blended over the whole image, poisoned labels."""
from __future__ import annotations

from typing import Any

import torch

from .base import Attack


class Blended(Attack):
    """``x' = (1 - ratio) · x + ratio · pattern`` with a fixed noise ``pattern`` ``[C, H, W]``, uniform in [0, 1].

    Paper settings (Sec. 5.1, App. D.3): random-noise pattern, blend ratio λ = ``ratio`` = 0.1,
    target 1, rate 5% (poison-label: non-target images, relabelled to the target).
    The pattern is drawn once, at construction, from ``pattern_seed`` with the shape
    ``image_shape`` (default 3×32×32); it is part of :meth:`state_tensors`, so a checkpoint
    rebuilds exactly the same trigger. Images of another shape are refused.
    """

    name = "blended"

    def __init__(
        self,
        target: int = 1,
        *,
        rate: float = 0.05,
        ratio: float = 0.1,
        pattern_seed: int = 0,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"ratio: expected a blend ratio λ in (0, 1), got {ratio!r}")
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"image_shape: expected (channels, height, width) of positive integers, got {image_shape!r}")
        self.ratio, self.pattern_seed, self.image_shape = float(ratio), int(pattern_seed), shape
        generator = torch.Generator().manual_seed(self.pattern_seed)
        self.pattern = torch.rand(*shape, generator=generator)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "ratio": self.ratio, "pattern_seed": self.pattern_seed,
                "image_shape": list(self.image_shape)}

    def check_image_size(self, height: int, width: int) -> None:
        if (height, width) != tuple(self.pattern.shape[1:]):
            raise ValueError(
                f"image_shape: the blend pattern is {self.pattern.shape[1]}x{self.pattern.shape[2]}, "
                f"got {height}x{width} images"
            )

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.pattern.shape[0]:
            raise ValueError(f"image_shape: the blend pattern has {self.pattern.shape[0]} channels, got {x.shape[1]}")
        return (1.0 - self.ratio) * x + self.ratio * self.pattern.to(x.device, x.dtype)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"pattern": self.pattern}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        unknown = set(tensors) - {"pattern"}
        if unknown:
            raise ValueError(f"tensors: Blended stores only 'pattern', got {sorted(unknown)}")
        if "pattern" in tensors:
            pattern = tensors["pattern"].float()
            if tuple(pattern.shape) != self.image_shape:
                raise ValueError(f"tensors['pattern']: expected shape {self.image_shape}, got {tuple(pattern.shape)}")
            if float(pattern.min()) < 0.0 or float(pattern.max()) > 1.0:
                raise ValueError("tensors['pattern']: expected values in [0, 1]")
            self.pattern = pattern.cpu()


__all__ = ["Blended"]
