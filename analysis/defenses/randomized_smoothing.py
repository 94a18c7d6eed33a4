"""Randomized smoothing (Cohen et al., ICML 2019; used as a backdoor defense by Rosenfeld et al., ICML 2020) as a detector.

For each input x, ``n`` Gaussian neighbours ``x + N(0, std^2 I)`` are classified; the
smoothed prediction is their majority vote. Paper settings (App. D.4): n = 100, mean 0,
std 0.1. The paper turns the pre-processing defense into a detector by comparing
predictions before and after it: an input is flagged when the smoothed prediction
differs from the model's plain prediction.

Score: the share of neighbours whose prediction differs from the plain prediction
(in [0, 1]). Note that the flag (majority vote changed) is not a threshold of this
score in general: a vote can be lost with a share below 0.5 when the other votes split.
Decision value: the plain prediction's vote margin, ``(votes for it - votes for the best
other class) / n``, in [-1, 1], negative exactly where the majority vote changed (a tie
lost to a smaller class index counts as changed).

Neighbours are not clamped to [0, 1] by default (as in Cohen et al.); ``clamp=True``
clamps them. Noise is drawn from a generator seeded with ``seed`` at every call, so
repeated calls on the same inputs give the same answer.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..devices import model_device
from .base import StatelessDefense, check_int, check_number, class_margin, evaluating, signed_margin


class RandomizedSmoothing(StatelessDefense):
    """Flag inputs whose majority vote over Gaussian neighbours differs from the plain prediction.

    Parameters
    ----------
    n_samples : neighbours per input (paper: 100).
    std : standard deviation of the Gaussian noise, in pixel units of [0, 1] images (paper: 0.1).
    clamp : clamp neighbours to [0, 1] (default False, as in Cohen et al.).
    batch_size : images (neighbours) per forward pass (64 was the fastest for both CPU-width models on a 2-core CPU).
    seed : seed of the noise.
    progress : show a progress bar.

    Learned attributes: ``fitted_`` (True; the defense learns nothing from the reference).
    """

    def __init__(self, n_samples: int = 100, *, std: float = 0.1, clamp: bool = False, batch_size: int = 64,
                 seed: int = 0, progress: bool = False) -> None:
        self.n_samples = n_samples
        self.std = std
        self.clamp = clamp
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_int(self.n_samples, "n_samples")
        check_number(self.std, "std", 0.0, np.inf, low_open=True, high_open=True)
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        device = model_device(model)
        generator = torch.Generator().manual_seed(int(self.seed))
        per_pass = max(1, self.batch_size // self.n_samples)  # inputs whose neighbours fit in one pass
        scores = np.zeros(len(images))
        decision = np.zeros(len(images))
        with evaluating(model):
            for start in tqdm(range(0, len(images), per_pass), desc="randomized smoothing", disable=not self.progress):
                block = images[start : start + per_pass]
                plain_logits = model(block.to(device))
                plain = plain_logits.argmax(1).cpu()
                noise = torch.randn((len(block), self.n_samples, *block.shape[1:]), generator=generator) * self.std
                neighbours = (block[:, None] + noise).flatten(0, 1)
                if self.clamp:
                    neighbours = neighbours.clamp(0.0, 1.0)
                votes = torch.cat([model(neighbours[s : s + self.batch_size].to(device)).argmax(1).cpu()
                                   for s in range(0, len(neighbours), self.batch_size)]).view(len(block), -1)
                counts = torch.zeros(len(block), plain_logits.shape[1]).scatter_add_(1, votes, torch.ones(votes.shape))
                smoothed = counts.argmax(1)  # ties: the smallest class among the most frequent
                scores[start : start + len(block)] = (votes != plain[:, None]).double().mean(1).numpy()
                vote_margin = class_margin(counts, plain) / self.n_samples
                decision[start : start + len(block)] = signed_margin(vote_margin, (smoothed != plain).numpy())
        return scores, decision


__all__ = ["RandomizedSmoothing"]
