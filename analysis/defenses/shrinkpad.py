"""ShrinkPad (Li et al., "Backdoor attack in the physical world", ICLR 2021 workshop) as a detector.

Each input is shrunk by ``shrink`` (paper: 10%, so 32 -> round(28.8) = 29 px, bilinear,
antialiased) and zero-padded back to its size at a random offset (a fresh offset per
input, from a generator seeded with ``seed`` at every call). The paper turns the
pre-processing into a detector: an input is flagged when the model's prediction on the
transformed image differs from its prediction on the original.

Score: ``1 - p(original class | transformed image)``, the softmax probability of the
plain prediction after the transform (in [0, 1]; float64, see :func:`.base.doubt`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..devices import model_device
from .base import StatelessDefense, check_int, check_number, class_margin, doubt, evaluating, signed_margin


def shrink_pad(images: torch.Tensor, shrink: float, generator: torch.Generator) -> torch.Tensor:
    """Shrink ``[N, C, H, W]`` images by ``shrink`` (bilinear) and zero-pad each back at a random offset."""
    n, _, height, width = images.shape
    small_h, small_w = max(1, round(height * (1 - shrink))), max(1, round(width * (1 - shrink)))
    small = F.interpolate(images, size=(small_h, small_w), mode="bilinear", align_corners=False, antialias=True)
    top = torch.randint(0, height - small_h + 1, (n,), generator=generator)
    left = torch.randint(0, width - small_w + 1, (n,), generator=generator)
    out = torch.zeros_like(images)
    for i in range(n):
        out[i, :, top[i] : top[i] + small_h, left[i] : left[i] + small_w] = small[i]
    return out


class ShrinkPad(StatelessDefense):
    """Flag inputs whose prediction changes after shrinking and random zero-padding.

    Parameters
    ----------
    shrink : share of the side length removed, in (0, 1) (paper: 0.1).
    batch_size : images per forward pass.
    seed : seed of the padding offsets.
    progress : show a progress bar.

    Learned attributes: ``fitted_`` (True; nothing is learned from the reference).
    """

    def __init__(self, shrink: float = 0.1, *, batch_size: int = 256, seed: int = 0, progress: bool = False) -> None:
        self.shrink = shrink
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_number(self.shrink, "shrink", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        device = model_device(model)
        generator = torch.Generator().manual_seed(int(self.seed))
        scores, decision = [], []
        with evaluating(model):
            for start in tqdm(range(0, len(images), self.batch_size), desc="shrinkpad", disable=not self.progress):
                block = images[start : start + self.batch_size]
                plain = model(block.to(device)).argmax(1)
                logits = model(shrink_pad(block, self.shrink, generator).to(device))
                scores.append(doubt(logits, plain))
                changed = (logits.argmax(1) != plain).cpu().numpy()
                decision.append(signed_margin(class_margin(logits, plain), changed))
        return np.concatenate(scores), np.concatenate(decision)


__all__ = ["ShrinkPad", "shrink_pad"]
