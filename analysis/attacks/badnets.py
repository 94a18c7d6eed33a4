"""BadNets (Gu et al.): a small white square stamped on the image, poisoned labels."""
from __future__ import annotations

from typing import Any

import torch

from .base import Attack


class BadNets(Attack):
    """A ``size``×``size`` square of value ``value`` at ``(row, col)`` (top-left corner), all channels.

    Paper settings (Sec. 5.1, App. D.3): 2×2 white square, target 1, rate 5%. The
    default position is the bottom-right corner with a one-pixel margin, i.e. rows and
    columns ``H-3..H-2`` (29-30 on 32×32), so the patch survives a ±1 px shift.

    Examples
    --------
    >>> import torch
    >>> stamped = BadNets().apply_trigger(torch.zeros(1, 3, 32, 32))
    >>> stamped[0, 0, 28:32, 28:32]
    tensor([[0., 0., 0., 0.],
            [0., 1., 1., 0.],
            [0., 1., 1., 0.],
            [0., 0., 0., 0.]])
    """

    name = "badnets"

    def __init__(
        self,
        target: int = 1,
        *,
        rate: float = 0.05,
        size: int = 2,
        position: tuple[int, int] | None = None,
        value: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected a positive integer, got {size!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"value: expected a pixel value in [0, 1], got {value!r}")
        self.size, self.position, self.value = size, position, float(value)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "size": self.size, "position": self.position, "value": self.value}

    def _corner(self, height: int, width: int) -> tuple[int, int]:
        if self.position is not None:
            return self.position
        return height - self.size - 1, width - self.size - 1

    def check_image_size(self, height: int, width: int) -> None:
        row, col = self._corner(height, width)
        if row < 0 or col < 0 or row + self.size > height or col + self.size > width:
            raise ValueError(
                f"position: a {self.size}x{self.size} trigger at (row {row}, col {col}) does not fit "
                f"{height}x{width} images"
            )

    def trigger_mask(self, height: int, width: int) -> torch.Tensor:
        """``[H, W]`` bool mask of the trigger's pixels."""
        row, col = self._corner(height, width)
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[row : row + self.size, col : col + self.size] = True
        return mask

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        row, col = self._corner(x.shape[2], x.shape[3])
        out[:, :, row : row + self.size, col : col + self.size] = self.value
        return out


__all__ = ["BadNets"]
