"""Supervised training: SGD (momentum 0.9, weight decay 5e-4), a schedule, seeded, with a progress bar.

Two schedules:

* ``"onecycle"`` (the CPU profile): one-cycle learning rate peaking at ``lr``;
* ``"multistep"`` (the paper, App. D.2): ``lr`` divided by 10 at each of ``milestones``.

Augmentation is applied to the stored (possibly poisoned) images on the fly, as a
defender's training pipeline would: ``"none"`` (default) or ``"shift"`` = random
translation by up to ``shift`` pixels (zero padding). The default is ``"none"``
because a shifted 2×2 trigger is learned much later (on digits, 30 epochs with
±2 px shifts gave ASR 97-99% but 8-10 epochs without shifts already reach 94%;
on GTSRB shifts stopped BadNets from being learned at all).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import LabeledImages
from .devices import model_device, pick_device, seed_everything

LossHook = Callable[..., torch.Tensor]  # (model, x, y, logits) or (model, x, y, logits, idx) -> loss


@dataclass
class TrainConfig:
    """Training settings. ``epochs`` × ``len(data)`` images are seen in total."""

    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["onecycle", "multistep", "constant"] = "onecycle"
    milestones: tuple[int, ...] = ()
    augment: Literal["shift", "none"] = "none"
    shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: expected a positive integer, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size}")
        if self.schedule not in ("onecycle", "multistep", "constant"):
            raise ValueError(f"schedule: expected 'onecycle', 'multistep' or 'constant', got {self.schedule!r}")
        if self.augment not in ("shift", "none"):
            raise ValueError(f"augment: expected 'shift' or 'none', got {self.augment!r}")

    @classmethod
    def cpu(cls, arch: str, seed: int = 0) -> "TrainConfig":
        """The CPU profile: 30 epochs, one-cycle, batch 128, no augmentation, peak lr 0.05 (ResNet-18)
        / 0.1 (MobileNetV2).

        MobileNetV2 ×0.5 at lr 0.05 did not learn the BadNets trigger on digits in 30 epochs
        (ASR 16%); at 0.1 it did (98%). Batch 32 (4× the SGD steps, about the same time) was
        tried for MobileNetV2 and not kept: IAD stays seed-dependent (seeds 0/1/2: 88/92/0%; at
        batch 128: 88/13/7%), ISSBA drops from 91% to 61% and BadNets seed 0 from 98% to 89%
        (``benchmarks/attack_variants.py --arch mobilenetv2 --batch-size 32``).
        """
        return cls(epochs=30, lr=0.1 if arch == "mobilenetv2" else 0.05, seed=seed)

    @classmethod
    def paper(cls, arch: str, seed: int = 0) -> "TrainConfig":
        """The paper's schedule: 200 epochs, lr 0.1 (ResNet-18) / 0.01 (MobileNetV2), ÷10 at 100 and 150."""
        return cls(epochs=200, lr=0.1 if arch == "resnet18" else 0.01, schedule="multistep", milestones=(100, 150), seed=seed)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Per-epoch records: ``epoch, loss, train_acc, lr, seconds`` plus ``eval_*`` accuracies."""

    records: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(r["seconds"] for r in self.records))

    def last(self) -> dict:
        return self.records[-1] if self.records else {}


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]² with zero fill."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, r : r + h, c : c + w] for i, (r, c) in enumerate(offsets)])


def lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule of ``config`` for ``optimizer``, and when to step it.

    Parameters
    ----------
    optimizer : the optimizer whose learning rate is scheduled.
    config : its ``schedule`` (``"onecycle"``, ``"multistep"`` or anything else: none), ``lr``, ``epochs`` and
        ``milestones``.
    steps_per_epoch : batches per epoch (OneCycle's step count).

    Returns
    -------
    ``(scheduler, step_on)``: the ``torch.optim.lr_scheduler`` object (None for a constant rate) and ``"step"``
    (step it after every batch) or ``"epoch"`` (after every epoch).
    """
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
        ), "step"
    if config.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=0.1), "epoch"
    return None, "epoch"


@torch.no_grad()
def accuracy(model: nn.Module, data: LabeledImages, batch_size: int = 512) -> float:
    """Share of ``data`` whose predicted class equals its label (:func:`analysis.metrics.main_accuracy`)."""
    from .features import predict_classes
    from .metrics import main_accuracy

    return main_accuracy(predict_classes(model, data, batch_size), data.y.numpy())


def _accepts_five_arguments(hook: Callable) -> bool:
    try:
        inspect.signature(hook).bind(None, None, None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): keep the original four-argument call
        return False
    return True


def train(
    model: nn.Module,
    data: LabeledImages,
    config: TrainConfig | None = None,
    device: str | torch.device | None = None,
    eval_sets: dict[str, LabeledImages] | None = None,
    loss_hook: LossHook | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on ``data``; returns the per-epoch history.

    ``loss_hook(model, x, y, logits)`` may return the loss to optimise instead of the
    plain cross-entropy (used by attacks that control training); a hook that takes a fifth
    argument also gets ``idx``, the batch's row indices into ``data`` (int64 ``[B]``).
    ``eval_sets`` are evaluated (accuracy against their labels) after every epoch.
    """
    config = config or TrainConfig()
    hook_wants_idx = loss_hook is not None and _accepts_five_arguments(loss_hook)
    if len(data) == 0:
        raise ValueError("data: got no training images")
    seed_everything(config.seed)
    device = pick_device(device)
    model.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps_per_epoch = (len(data) + config.batch_size - 1) // config.batch_size
    scheduler, step_on = lr_scheduler(optimizer, config, steps_per_epoch)
    history = History()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="training", unit="batch", disable=not progress)
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(data), generator=generator)
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x, y = data.x[idx], data.y[idx]
            if config.augment == "shift":
                x = random_shift(x, config.shift, generator)
            x, y = x.to(device), y.to(device)
            logits = model(x)
            if loss_hook is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = loss_hook(model, x, y, logits, idx) if hook_wants_idx else loss_hook(model, x, y, logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and step_on == "step":
                scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.update(1)
        if scheduler is not None and step_on == "epoch":
            scheduler.step()
        record = {
            "epoch": epoch,
            "loss": loss_sum / len(data),
            "train_acc": correct / len(data),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        for name, subset in (eval_sets or {}).items():
            record[f"eval_{name}"] = accuracy(model, subset)
        history.records.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}")
    bar.close()
    model.eval()
    return history


__all__ = ["History", "TrainConfig", "accuracy", "lr_scheduler", "model_device", "random_shift", "train"]
