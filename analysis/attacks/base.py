"""The interface every attack shares.

An attack (1) poisons a training set: it picks ``round(rate * N)`` training images,
stamps its trigger on them and gives them a label, and says which indices it changed;
(2) applies its trigger to any batch of images; (3) builds the poisoned test set:
every evaluation image *not* of the target class, with the trigger, true labels kept,
so that ASR and the detector's TPR are measured on the same inputs.

Poison-label attacks pick from the non-target classes and relabel to ``target``;
clean-label attacks (``clean_label = True``) pick target-class images and keep their
labels. Attacks that must control training (``controls_training = True``) provide
their own training entry point.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..data import LabeledImages
from ..validation import check_images


@dataclass
class AttackContext:
    """What an attack may use while preparing or training: the training settings, device, a cache folder."""

    config: Any = None  # analysis.training.TrainConfig of the victim model
    arch: str = "resnet18"
    width: float | None = None
    device: Any = None
    progress: bool = True
    cache_dir: Any = None  # pathlib.Path or None: where costly intermediate results may be cached


@dataclass(frozen=True)
class PoisonedTrainingSet:
    """A training set after poisoning.

    ``data`` has the same length and order as the clean set; ``poisoned_indices``
    (sorted) are the rows that were changed and ``poisoned_labels`` the labels they
    carry now.
    """

    data: LabeledImages
    poisoned_indices: np.ndarray
    poisoned_labels: np.ndarray

    @property
    def rate(self) -> float:
        return len(self.poisoned_indices) / len(self.data)


class Attack(ABC):
    """Base class: ``target`` class, poisoning ``rate`` in (0, 1), ``seed`` for every random choice."""

    name: ClassVar[str] = "attack"
    clean_label: ClassVar[bool] = False
    controls_training: ClassVar[bool] = False

    def __init__(self, target: int, rate: float, seed: int = 0) -> None:
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
            raise ValueError(f"target: expected a non-negative class index, got {target!r}")
        if not isinstance(rate, (int, float)) or not 0.0 < float(rate) < 1.0:
            raise ValueError(f"rate: expected a poisoning rate in (0, 1), got {rate!r}")
        self.target = int(target)
        self.rate = float(rate)
        self.seed = int(seed)

    # -------------------------------------------------------------- to implement
    @abstractmethod
    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Trigger on a validated batch ``[B, C, H, W]`` in [0, 1]; returns a new tensor."""

    def settings(self) -> dict[str, Any]:
        """The constructor settings, for manifests and reports."""
        return {"target": self.target, "rate": self.rate, "seed": self.seed}

    def check_image_size(self, height: int, width: int) -> None:
        """Raise when the trigger does not fit images of this size (override where it matters)."""

    # -------------------------------------------------------------- optional hooks
    def prepare(self, train: LabeledImages, num_classes: int, context: "AttackContext") -> None:
        """Learn what the attack needs before it can poison (e.g. LC's benign model, ISSBA's encoder).

        Called once by :func:`analysis.pipeline.attacked_model` before :meth:`poison_training_set`;
        the default needs nothing.
        """

    def train_model(self, model, train: LabeledImages, context: "AttackContext"):
        """For ``controls_training`` attacks: train ``model`` (in place) the attacker's way; return a History."""
        raise NotImplementedError(f"{type(self).__name__} does not control training; use analysis.training.train")

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors that rebuild the trigger without retraining (pattern, grid, generator weights); default none."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`state_tensors`."""
        if tensors:
            raise ValueError(f"{type(self).__name__} stores no tensors, got {sorted(tensors)}")

    # -------------------------------------------------------------- shared
    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """The triggered version of a batch ``[B, C, H, W]`` in [0, 1] (input left unchanged).

        ``x`` must be a float tensor, channels first, with values in [0, 1]
        (:func:`analysis.validation.check_images`): a uint8 or channels-last batch would get its trigger
        stamped at the wrong scale or on the wrong axes.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"x: expected images of shape [N, C, H, W], got {shape}")
        check_images(x, "x", allow_empty=True)
        self.check_image_size(x.shape[2], x.shape[3])
        return self._stamp(x.float()).clamp(0.0, 1.0)

    def _check_target(self, data: LabeledImages) -> None:
        classes = data.classes
        if self.target not in classes:
            raise ValueError(f"target: class {self.target} is not among the data's classes {classes}")

    def _rng(self, purpose: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, purpose])

    def select_indices(self, labels: np.ndarray) -> np.ndarray:
        """Sorted indices of the training images to poison (seeded)."""
        n_poison = int(round(self.rate * len(labels)))
        pool = np.flatnonzero(labels == self.target) if self.clean_label else np.flatnonzero(labels != self.target)
        if n_poison < 1:
            raise ValueError(f"rate: {self.rate} of {len(labels)} images poisons no image")
        if n_poison > len(pool):
            kind = "target-class" if self.clean_label else "non-target"
            raise ValueError(f"rate: {n_poison} images to poison but only {len(pool)} {kind} images exist")
        return np.sort(self._rng().choice(pool, size=n_poison, replace=False))

    def poison_training_set(self, train: LabeledImages) -> PoisonedTrainingSet:
        """Stamp the trigger on a seeded ``rate`` share of ``train`` and (poison-label) relabel it."""
        self._check_target(train)
        indices = self.select_indices(train.y.numpy())
        x, y = train.x.clone(), train.y.clone()
        idx = torch.as_tensor(indices)
        x[idx] = self.apply_trigger(train.x[idx])
        if not self.clean_label:
            y[idx] = self.target
        return PoisonedTrainingSet(LabeledImages(x, y), indices, y[idx].numpy())

    def poisoned_test_set(self, test: LabeledImages, batch_size: int = 512) -> LabeledImages:
        """Every non-target image of ``test`` with the trigger; true labels kept."""
        self._check_target(test)
        keep = test.of_class_not(self.target)
        stamped = [self.apply_trigger(keep.x[s : s + batch_size]) for s in range(0, len(keep), batch_size)]
        return LabeledImages(torch.cat(stamped), keep.y.clone())

    def examples(self, data: LabeledImages, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` benign non-target images and their poisoned versions, for a gallery (Fig. 4)."""
        keep = data.of_class_not(self.target)
        idx = np.sort(self._rng(1).choice(len(keep), size=min(n, len(keep)), replace=False))
        benign = keep.x[torch.as_tensor(idx)]
        return benign, self.apply_trigger(benign)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


__all__ = ["Attack", "AttackContext", "PoisonedTrainingSet"]
