"""IAD, the input-aware dynamic attack (Nguyen & Tran, NeurIPS 2020).

Two generators make each image's own trigger: a mask generator ``M`` (where) and a
pattern generator ``G`` (what); the triggered image is ``x + M(x) * (G(x) - x)``.
The attacker controls training: ``G`` is learned together with the classifier.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..validation import NotFittedError, check_images
from .base import Attack, AttackContext, PoisonedTrainingSet
from .generators import (
    DOWNSAMPLING, TriggerGenerator, fingerprint, load_module_tensors, module_tensors, read_cache, write_cache,
)

EPSILON = 1e-7
#: Where the mask generator's losses are computed: on the thresholded masks (IAD's released code), or on the
#: generator's raw output (this toolkit before the fix; kept for digits, whose zoo models were trained so).
MASK_LOSS_ON = ("sharpened", "raw")
#: A mask generator whose sharpened masks cover less than this share of pixels has collapsed (IAD's density: 3.2 %).
EMPTY_MASK_SHARE = 1e-3


def sharpen(mask: torch.Tensor) -> torch.Tensor:
    """IAD's soft threshold at 0.5: values in (0, 1) pushed towards 0 or 1 (differentiable)."""
    return torch.tanh(20.0 * mask - 10.0) / (2.0 + EPSILON) + 0.5


def diversity_loss(x1: torch.Tensor, x2: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor) -> torch.Tensor:
    """IAD's diversity loss: mean over pairs of ``‖x1 − x2‖ / ‖g(x1) − g(x2)‖`` (RMS distances).

    Small when different inputs get different outputs: it keeps the generators from
    producing one trigger for every image.
    """
    d_in = (x1 - x2).pow(2).flatten(1).mean(1).sqrt()
    d_out = ((out1 - out2).pow(2).flatten(1).mean(1) + EPSILON).sqrt()  # EPSILON inside: finite gradient at 0
    return (d_in / d_out).mean()


class IAD(Attack):
    """Input-aware dynamic backdoor: every image gets its own generated mask and pattern.

    Paper settings (Sec. 5.1, App. D.3): target 1, backdoor probability (``rate``) 10%,
    IAD's defaults otherwise: cross probability ``cross_rate`` 10%, mask density 0.032,
    λ_norm 100, λ_div 1, Adam (lr 0.01, betas 0.5/0.9) for the generators. Training
    (the attacker controls it, ``controls_training = True``):

    1. :meth:`prepare` trains the mask generator alone for ``mask_epochs`` epochs on the
       training images: λ_div · diversity loss + λ_norm · mean(relu(mask − density)), both on the
       masks after IAD's soft threshold (:func:`sharpen`), as IAD's code computes them
       (``mask_loss_on="sharpened"``), with Adam at ``mask_lr`` 0.001: IAD uses 0.01 on generators with
       batch normalisation, and on ours, without it, 0.01 drives every raw output to 0 on GTSRB, where the
       threshold's gradient vanishes, and the masks stay empty (``benchmarks/iad_masks.py``).
       ``mask_loss_on="raw"`` computes them on the generator's output before the threshold, as this
       toolkit did (at lr 0.01) until a GTSRB run in which every sharpened mask was empty, no pixel
       carried a trigger and no backdoor was learned (MobileNetV2, ASR 4.7 %); on raw outputs the
       losses can be met by values below 0.5 everywhere, which the threshold turns into empty masks. Digits keeps ``"raw"``
       (:data:`analysis.attacks.DATASET_ATTACK_SETTINGS`), with which its zoo models were trained and
       implanted. A warning says when the trained masks are empty (:meth:`check_masks`).
    2. :meth:`train_model` trains the classifier and the pattern generator together (the
       mask generator frozen). In every batch, a ``rate`` share (taken from the non-target
       images, as App. D.3 says) gets its own trigger and the target label, a
       ``cross_rate`` share gets the trigger generated from *another* image and keeps its
       label (the cross mode that makes triggers non-transferable), the rest stays clean;
       loss = cross-entropy + λ_div · the pattern generator's diversity loss. The classifier
       uses SGD with ``context.config`` (lr, momentum 0.9, weight decay 5e-4, schedule,
       epochs, augmentation, seed), like :func:`analysis.training.train`.

    Deviations from IAD, stated for the README: the generators are small U-Nets without
    batch normalisation (``width`` channels, :mod:`.generators`) so they train on a CPU
    and give each image the same trigger whatever its batch; patterns are produced
    directly in pixel space [0, 1] (IAD normalises them per dataset); the mask generator
    trains for ``mask_epochs`` = 10 epochs (IAD: 25) at ``mask_lr`` 0.001 (IAD: 0.01, see step 1); no
    learning-rate decay for the generators.

    :meth:`poison_training_set` is *not* how IAD trains (its poisoned samples change every
    batch); it returns a static view for inspection: a seeded ``rate`` share of non-target
    images with their trained triggers, relabelled to the target.
    """

    name = "iad"
    controls_training = True

    def __init__(
        self,
        target: int = 1,
        *,
        rate: float = 0.10,
        cross_rate: float = 0.10,
        mask_density: float = 0.032,
        lambda_norm: float = 100.0,
        lambda_div: float = 1.0,
        mask_epochs: int = 10,
        generator_lr: float = 0.01,
        width: int = 8,
        mask_loss_on: str = "sharpened",
        mask_lr: float = 0.001,
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        if mask_loss_on not in MASK_LOSS_ON:
            raise ValueError(f"mask_loss_on: expected one of {MASK_LOSS_ON}, got {mask_loss_on!r}")
        self.mask_loss_on = mask_loss_on
        if not isinstance(cross_rate, (int, float)) or not 0.0 <= cross_rate < 1.0 or rate + cross_rate >= 1.0:
            raise ValueError(f"cross_rate: expected a probability in [0, 1) with rate + cross_rate < 1, "
                             f"got {cross_rate!r} (rate {rate})")
        if not isinstance(mask_density, (int, float)) or not 0.0 < mask_density < 1.0:
            raise ValueError(f"mask_density: expected a share of pixels in (0, 1), got {mask_density!r}")
        for name, value in (("lambda_norm", lambda_norm), ("lambda_div", lambda_div)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {value!r}")
        for name, value in (("mask_epochs", mask_epochs), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(generator_lr, (int, float)) or generator_lr <= 0:
            raise ValueError(f"generator_lr: expected a positive learning rate, got {generator_lr!r}")
        self.cross_rate, self.mask_density = float(cross_rate), float(mask_density)
        self.lambda_norm, self.lambda_div = float(lambda_norm), float(lambda_div)
        if isinstance(mask_lr, bool) or not isinstance(mask_lr, (int, float)) or not mask_lr > 0:
            raise ValueError(f"mask_lr: expected a positive learning rate, got {mask_lr!r}")
        self.mask_epochs, self.generator_lr, self.width = mask_epochs, float(generator_lr), width
        self.mask_lr = float(mask_lr)
        self.mask_net: TriggerGenerator | None = None
        self.pattern_net: TriggerGenerator | None = None
        self.pattern_trained = False

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "cross_rate": self.cross_rate, "mask_density": self.mask_density,
                "lambda_norm": self.lambda_norm, "lambda_div": self.lambda_div, "mask_epochs": self.mask_epochs,
                "generator_lr": self.generator_lr, "width": self.width,
                # the settings from before these two options (raw losses, mask lr = generator lr) are left
                # out, so checkpoints trained with them (digits' zoo) stay valid
                **({} if self.mask_loss_on == "raw" and self.mask_lr == self.generator_lr
                   else {"mask_loss_on": self.mask_loss_on, "mask_lr": self.mask_lr})}

    # ------------------------------------------------------------------ networks
    def _build(self, channels: int) -> tuple[TriggerGenerator, TriggerGenerator]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mask_net = TriggerGenerator(channels, 1, self.width)
            pattern_net = TriggerGenerator(channels, channels, self.width)
        return mask_net, pattern_net

    @property
    def is_trained(self) -> bool:
        return self.mask_net is not None and self.pattern_net is not None and self.pattern_trained

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise NotFittedError(
                "IAD: the trigger generators are not trained yet; train a model with train_model(model, train, "
                "context) (e.g. via analysis.pipeline.attacked_model) or call load_state_tensors(...) first"
            )

    def _optimizer(self, net: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=self.generator_lr if lr is None else lr, betas=(0.5, 0.9))

    def _trigger(self, x: torch.Tensor, source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(triggered x, pattern)`` with the mask and pattern generated from ``source`` (default ``x``)."""
        source = x if source is None else source
        mask = sharpen(self.mask_net(source))
        pattern = self.pattern_net(source)
        return x + mask * (pattern - x), pattern

    # ------------------------------------------------------------------ step 1: mask generator
    def prepare(self, train: LabeledImages, num_classes: int, context: AttackContext | None = None) -> None:
        """Train the mask generator (or load it from ``context.cache_dir``); the pattern generator starts fresh."""
        from ..devices import pick_device

        context = context or AttackContext()
        self._check_target(train)
        n, channels, height, width = train.x.shape
        self.check_image_size(height, width)
        self.mask_net, self.pattern_net = self._build(channels)
        self.pattern_trained = False
        batch_size = getattr(context.config, "batch_size", 128)  # the mask generator trains on these batches
        cache = None
        if context.cache_dir is not None:
            key = fingerprint(train.x, {**self.settings(), "mask_batch_size": batch_size})
            cache = Path(context.cache_dir) / f"iad-mask-{key}.safetensors"
            cached = read_cache(cache)
            if cached is not None:
                load_module_tensors("mask", self.mask_net, cached, "IAD")
                self.mask_net.eval()
                self.check_masks(train.x)
                return
        device = pick_device(context.device)
        net = self.mask_net.to(device).train()
        optimizer = self._optimizer(net, self.mask_lr)
        generator = torch.Generator().manual_seed(self.seed)
        steps = (n + batch_size - 1) // batch_size
        bar = tqdm(total=self.mask_epochs * steps, desc="IAD mask generator", unit="batch", disable=not context.progress)
        for _ in range(self.mask_epochs):
            order, partner = torch.randperm(n, generator=generator), torch.randperm(n, generator=generator)
            for step in range(steps):
                x1 = train.x[order[step * batch_size:(step + 1) * batch_size]].to(device)
                x2 = train.x[partner[step * batch_size:(step + 1) * batch_size]].to(device)
                m1, m2 = net(x1), net(x2)
                if self.mask_loss_on == "sharpened":
                    m1, m2 = sharpen(m1), sharpen(m2)
                norm = F.relu(m1 - self.mask_density).mean()
                loss = self.lambda_div * diversity_loss(x1, x2, m1, m2) + self.lambda_norm * norm
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.close()
        self.mask_net = net.cpu().eval()
        write_cache(cache, module_tensors("mask", self.mask_net))
        self.check_masks(train.x)

    def check_masks(self, x: torch.Tensor, max_images: int = 256) -> float:
        """The share of pixels the trained mask generator's sharpened masks cover on (up to ``max_images`` of)
        ``x`` ``[N, C, H, W]``; warns when it is below :data:`EMPTY_MASK_SHARE`: such masks change no pixel, so
        the triggered images equal the clean ones and no backdoor can be learned."""
        if self.mask_net is None:
            raise NotFittedError("IAD: the mask generator is not trained yet; call prepare(...) first")
        with torch.no_grad():
            share = float((sharpen(self.mask_net(x[:max_images].cpu())) > 0.5).float().mean())
        if share < EMPTY_MASK_SHARE:
            warnings.warn(f"IAD: the mask generator's masks cover {share:.2%} of the pixels (IAD aims at "
                          f"mask_density {self.mask_density:.1%}): the triggers change almost no pixel and "
                          f"the attack cannot implant a backdoor (mask_loss_on={self.mask_loss_on!r})",
                          RuntimeWarning, stacklevel=2)
        return share

    # ------------------------------------------------------------------ step 2: classifier + pattern generator
    def train_model(self, model: nn.Module, train: LabeledImages, context: AttackContext | None = None):
        """Train ``model`` in place with IAD's backdoor / cross / clean batches; returns a training History.

        Runs :meth:`prepare` first if the mask generator is not trained yet. Per-epoch
        records as in :func:`analysis.training.train`, plus ``backdoor_acc`` (share of the
        epoch's triggered samples classified as the target).
        """
        from ..devices import pick_device, seed_everything
        from ..training import History, TrainConfig, lr_scheduler, random_shift

        context = context or AttackContext()
        config = context.config or TrainConfig()
        if self.mask_net is None:
            self.prepare(train, len(train.classes), context)
        self._check_target(train)
        seed_everything(config.seed)
        device = pick_device(context.device)
        model.to(device)
        mask_net, pattern_net = self.mask_net.to(device).eval(), self.pattern_net.to(device).train()
        for parameter in mask_net.parameters():
            parameter.requires_grad_(False)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        g_optimizer = self._optimizer(pattern_net)
        n = len(train)
        steps = (n + config.batch_size - 1) // config.batch_size
        scheduler, step_on = lr_scheduler(optimizer, config, steps)
        generator = torch.Generator().manual_seed(config.seed)
        history = History()
        bar = tqdm(total=config.epochs * steps, desc="IAD training", unit="batch", disable=not context.progress)
        try:
            for epoch in range(1, config.epochs + 1):
                started = time.perf_counter()
                model.train()
                order, partner = torch.randperm(n, generator=generator), torch.randperm(n, generator=generator)
                loss_sum, correct, bd_hits, bd_total = 0.0, 0, 0, 0
                for step in range(steps):
                    batch = slice(step * config.batch_size, (step + 1) * config.batch_size)
                    x, y = train.x[order[batch]], train.y[order[batch]].clone()
                    x2 = train.x[partner[batch]]
                    if config.augment == "shift":
                        x = random_shift(x, config.shift, generator)
                        x2 = random_shift(x2, config.shift, generator)
                    x, y, x2 = x.to(device), y.to(device), x2.to(device)
                    bd, cross = self._split_batch(y)
                    inputs = x.clone()
                    inputs[bd], patterns_bd = self._trigger(x[bd])
                    inputs[cross], patterns_cross = self._trigger(x[cross], x2[cross])
                    y[bd] = self.target
                    logits = model(inputs)
                    loss = F.cross_entropy(logits, y)
                    pairs = min(len(bd), len(cross))
                    if pairs and self.lambda_div > 0:
                        loss = loss + self.lambda_div * diversity_loss(
                            x[bd[:pairs]], x2[cross[:pairs]], patterns_bd[:pairs], patterns_cross[:pairs])
                    optimizer.zero_grad(set_to_none=True)
                    g_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    g_optimizer.step()
                    if scheduler is not None and step_on == "step":
                        scheduler.step()
                    predicted = logits.detach().argmax(1)
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((predicted == y).sum())
                    bd_hits += int((predicted[bd] == self.target).sum())
                    bd_total += len(bd)
                    bar.update(1)
                if scheduler is not None and step_on == "epoch":
                    scheduler.step()
                history.records.append({
                    "epoch": epoch, "loss": loss_sum / n, "train_acc": correct / n,
                    "backdoor_acc": bd_hits / max(bd_total, 1), "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - started,
                })
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", bd=f"{bd_hits / max(bd_total, 1):.3f}")
        finally:
            bar.close()
            for parameter in mask_net.parameters():
                parameter.requires_grad_(True)
        self.mask_net, self.pattern_net = mask_net.cpu().eval(), pattern_net.cpu().eval()
        self.pattern_trained = True
        model.eval()
        return history

    def _split_batch(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in a (shuffled) batch: the first ``round(rate·B)`` non-target ones get the backdoor,
        the next ``round(cross_rate·B)`` of the others the cross trigger."""
        b = len(y)
        non_target = torch.nonzero(y != self.target).flatten()
        bd = non_target[: int(round(self.rate * b))]
        rest = torch.ones(b, dtype=torch.bool, device=y.device)
        rest[bd] = False
        cross = torch.nonzero(rest).flatten()[: int(round(self.cross_rate * b))]
        return bd, cross

    # ------------------------------------------------------------------ trigger
    def check_image_size(self, height: int, width: int) -> None:
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(f"x: IAD's generators need heights and widths divisible by {DOWNSAMPLING}, "
                             f"got {height}x{width} images")

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        self._require_trained()
        check_images(x, "x", allow_empty=True)  # the contract first: a channels-last batch is named as such
        channels = self.pattern_net.unet.head.out_channels
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] != channels:
            raise ValueError(f"x: the generators were trained on {channels}-channel images, got {x.shape[1]} channels")
        return super().apply_trigger(x)

    @torch.no_grad()
    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        self.mask_net.to(x.device)
        self.pattern_net.to(x.device)
        return self._trigger(x)[0]

    @torch.no_grad()
    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """The (sharpened) masks ``[B, 1, H, W]`` in [0, 1] that the trigger of ``x`` uses."""
        self._require_trained()
        return sharpen(self.mask_net.to(x.device)(x.float()))

    def poison_training_set(self, train: LabeledImages) -> PoisonedTrainingSet:
        """A static view for inspection only; IAD itself poisons different samples in every batch (see class doc)."""
        self._require_trained()
        return super().poison_training_set(train)

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Both generators' weights (``mask.*``, ``pattern.*``)."""
        self._require_trained()
        return {**module_tensors("mask", self.mask_net), **module_tensors("pattern", self.pattern_net)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        key = "mask.unet.down0.0.0.weight"
        if key not in tensors:
            raise ValueError(f"tensors: IAD needs the generators' weights ({key!r}); got keys {sorted(tensors)[:5]}")
        mask_net, pattern_net = self._build(int(tensors[key].shape[1]))
        load_module_tensors("mask", mask_net, tensors, "IAD")
        load_module_tensors("pattern", pattern_net, tensors, "IAD")
        self.mask_net, self.pattern_net, self.pattern_trained = mask_net.eval(), pattern_net.eval(), True


__all__ = ["EPSILON", "IAD", "diversity_loss", "sharpen"]
