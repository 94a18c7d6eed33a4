"""The paper's adaptive attack (Sec. 5.3, Table 7): BadNets trained to keep poisoned features near the target's.

Training loss ``(1 - β) · L_org + β · L_cd``: ``L_org`` is the cross-entropy of the (poisoned)
batch; ``L_cd`` is the cosine distance ``1 - cos(a_p^l, c_t^l)`` between the features
``a_p^l`` of the batch's poisoned samples and the target class's benign feature centroids
``c_t^l``, averaged over the poisoned samples and over the analysed layers ``l``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import LabeledImages
from .badnets import BadNets
from .base import AttackContext


class AdaptiveBadNets(BadNets):
    """BadNets (2×2 white square, target 1, rate 5%) trained with the cosine-distance penalty ``beta`` in [0, 1).

    ``beta = 0`` is plain BadNets training. The paper reports β ∈ {0, 0.5, 0.9, 0.95, 0.99}.

    Layers: ``layers`` (module paths), by default the second half of the model's paper
    layers, 1-indexed ⌊L/2⌋-1 .. L (layers 4..10 of ResNet-18's 10): every layer the
    defender's LOI rule can read (LOI ∈ ⌊L/2⌋+1..L, plus the two layers before it).

    Centroids (the paper does not say how they are estimated during training): for each
    layer, an exponential running mean (``momentum``) of the batch means of the features
    of the *benign target-class* training images in the batch, computed in the same
    forward pass and detached, so the penalty moves only the poisoned samples' features.
    ``L_cd`` is counted from the first batch that holds both a benign target-class image
    (for the centroid) and a poisoned image; batches without poisoned images use
    ``(1 - β) · L_org`` alone. Poisoned rows are known by their training-set indices
    (:func:`analysis.training.train` hands them to a five-argument loss hook).
    """

    name = "adaptive"
    controls_training = True

    def __init__(
        self,
        target: int = 1,
        *,
        rate: float = 0.05,
        beta: float = 0.5,
        layers: Sequence[str] | None = None,
        momentum: float = 0.9,
        seed: int = 0,
        **badnets: Any,
    ) -> None:
        super().__init__(target=target, rate=rate, seed=seed, **badnets)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(f"beta: expected a penalty weight in [0, 1), got {beta!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a running-mean momentum in [0, 1), got {momentum!r}")
        if layers is not None and (isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"layers: expected a non-empty list of module paths, got {layers!r}")
        self.beta, self.momentum = float(beta), float(momentum)
        self.layers = list(layers) if layers is not None else None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "beta": self.beta, "layers": self.layers, "momentum": self.momentum}

    def analysed_layers(self, model: nn.Module) -> list[str]:
        """The module paths ``L_cd`` is computed on."""
        from ..features import paper_layers

        if self.layers is not None:
            return list(self.layers)
        names = paper_layers(model)
        return names[max(len(names) // 2 - 2, 0) :]  # 1-indexed layers floor(L/2)-1 .. L

    def train_model(self, model: nn.Module, train: LabeledImages, context: AttackContext):
        """Poison ``train`` like BadNets and train ``model`` in place with the adaptive loss; returns the History."""
        from ..features import capture
        from ..training import TrainConfig, train as run_training

        poisoned = self.poison_training_set(train)
        is_poisoned = torch.zeros(len(train), dtype=torch.bool)
        is_poisoned[torch.as_tensor(poisoned.poisoned_indices)] = True
        is_benign_target = (train.y == self.target) & ~is_poisoned
        names = self.analysed_layers(model)
        centroids: dict[str, torch.Tensor] = {}

        def adaptive_loss(outputs: dict[str, torch.Tensor], logits: torch.Tensor, y: torch.Tensor,
                          idx: torch.Tensor) -> torch.Tensor:
            original = F.cross_entropy(logits, y)
            if self.beta == 0.0:
                return original
            rows_p = is_poisoned[idx].to(logits.device)
            rows_b = is_benign_target[idx].to(logits.device)
            if rows_b.any():
                for name in names:
                    batch_mean = outputs[name][rows_b].detach().mean(0)
                    previous = centroids.get(name)
                    centroids[name] = batch_mean if previous is None else (
                        self.momentum * previous + (1 - self.momentum) * batch_mean)
            if not rows_p.any() or len(centroids) < len(names):
                return (1 - self.beta) * original
            distance = torch.stack([
                (1 - F.cosine_similarity(outputs[name][rows_p], centroids[name].unsqueeze(0), dim=1, eps=1e-12)).mean()
                for name in names
            ]).mean()
            return (1 - self.beta) * original + self.beta * distance

        with capture(model, names, detach=False) as outputs:  # hooks removed on exit
            return run_training(
                model, poisoned.data, context.config or TrainConfig(), device=context.device,
                progress=context.progress,
                loss_hook=lambda _model, _x, y, logits, idx: adaptive_loss(outputs, logits, y, idx),
            )


__all__ = ["AdaptiveBadNets"]
