"""ISSBA (Li et al., ICCV 2021): an invisible, sample-specific trigger hidden by a steganographic encoder.

The attacker trains a StegaStamp-style encoder/decoder pair that hides a bit string in an
image as a small residual; the poisoned images are the training images with one fixed,
seeded secret encoded in them (each image gets its own residual), relabelled to the target.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..metrics import psnr
from ..validation import NotFittedError, check_images
from .base import Attack, AttackContext
from .generators import (
    DOWNSAMPLING, SecretDecoder, SecretEncoder, fingerprint, load_module_tensors, module_tensors, read_cache,
    write_cache,
)


class ISSBA(Attack):
    """Sample-specific invisible backdoor: ``encoded = clamp(x + encoder(x, secret), 0, 1)``.

    Paper settings (Sec. 5.1, App. D.3): target 1, rate 5%, poisoned labels; the encoder
    is ISSBA's default StegaStamp. Here the encoder/decoder are trained by
    :meth:`prepare` on the attacked training images, on a CPU, in minutes:

    * both nets are small U-Net / strided-conv networks (:mod:`.generators`), trained with
      Adam (lr ``lr``) on batches of ``batch_size`` images, each with its own random
      ``secret_bits``-bit secret (a fixed secret would let the pair "hide" nothing);
    * loss = BCE(decoder bits, secret) + ``w`` · mean squared residual, where ``w`` is 0
      for the first ``warmup_steps`` steps (the decoder first learns to read bits at all),
      then rises linearly to ``residual_weight`` over ``ramp_steps`` steps and stays there
      until ``steps``.

    Deviations from ISSBA/StegaStamp, stated for the README: StegaStamp's perceptual
    (LPIPS) and adversarial (critic) image losses are replaced by the plain pixel (L2)
    loss on the residual; its spatial transformer and the simulated print/camera
    distortions (blur, noise, JPEG, colour shifts) are left out, since the trigger only
    has to survive a digital pipeline; the networks are much smaller (``width`` channels).
    After training, :meth:`quality` reports the decoder's bit accuracy on held-out images
    and the residual's size as PSNR.

    The trained weights and the secret are :meth:`state_tensors` (so checkpoints rebuild
    the poisoned sets without retraining); with ``context.cache_dir`` they are also cached
    as ``issba-<fingerprint>.safetensors`` keyed by the training images and settings.
    """

    name = "issba"

    def __init__(
        self,
        target: int = 1,
        *,
        rate: float = 0.05,
        secret_bits: int = 32,
        width: int = 16,
        steps: int = 1000,
        warmup_steps: int = 200,
        ramp_steps: int = 400,
        residual_weight: float = 5.0,
        batch_size: int = 64,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        for name, value in (("secret_bits", secret_bits), ("width", width), ("steps", steps),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name, value in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if not isinstance(residual_weight, (int, float)) or residual_weight < 0:
            raise ValueError(f"residual_weight: expected a non-negative number, got {residual_weight!r}")
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr!r}")
        self.secret_bits, self.width, self.steps = secret_bits, width, steps
        self.warmup_steps, self.ramp_steps = warmup_steps, ramp_steps
        self.residual_weight, self.batch_size, self.lr = float(residual_weight), batch_size, float(lr)
        self.secret = torch.as_tensor(self._rng(2).integers(0, 2, size=secret_bits), dtype=torch.float32)
        self.encoder: SecretEncoder | None = None
        self.decoder: SecretDecoder | None = None
        self.image_size: tuple[int, int] | None = None
        self.train_log: list[dict[str, float]] = []

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "secret_bits": self.secret_bits, "width": self.width, "steps": self.steps,
                "warmup_steps": self.warmup_steps, "ramp_steps": self.ramp_steps,
                "residual_weight": self.residual_weight, "batch_size": self.batch_size, "lr": self.lr}

    # ------------------------------------------------------------------ training the encoder
    @property
    def is_trained(self) -> bool:
        return self.encoder is not None and self.decoder is not None and self.image_size is not None

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise NotFittedError(
                "ISSBA: the encoder is not trained yet; call prepare(train, num_classes, context) "
                "or load_state_tensors(...) first"
            )

    def _build(self, channels: int) -> tuple[SecretEncoder, SecretDecoder]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return (SecretEncoder(self.secret_bits, channels, self.width),
                    SecretDecoder(self.secret_bits, channels, self.width))

    def prepare(self, train: LabeledImages, num_classes: int, context: AttackContext | None = None) -> None:
        """Train the encoder/decoder on ``train.x`` (or load them from ``context.cache_dir``)."""
        from ..devices import pick_device

        context = context or AttackContext()
        self._check_target(train)
        n, channels, height, width = train.x.shape
        self.check_image_size(height, width, trained_size=False)
        cache = None
        if context.cache_dir is not None:
            cache = Path(context.cache_dir) / f"issba-{fingerprint(train.x, self.settings())}.safetensors"
            cached = read_cache(cache)
            if cached is not None:
                self.load_state_tensors(cached)
                return
        encoder, decoder = self._build(channels)
        device = pick_device(context.device)
        encoder.to(device).train()
        decoder.to(device).train()
        optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.train_log = []
        bar = tqdm(range(self.steps), desc="ISSBA encoder", unit="step", disable=not context.progress)
        for step in bar:
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
            image = train.x[idx].to(device)
            secret = torch.randint(0, 2, (len(idx), self.secret_bits), generator=generator).float().to(device)
            residual = encoder(image, secret)
            logits = decoder((image + residual).clamp(0.0, 1.0))
            bce = F.binary_cross_entropy_with_logits(logits, secret)
            pixel = residual.pow(2).mean()
            loss = bce + self._residual_weight_at(step) * pixel
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == self.steps - 1:
                bits = float(((logits.detach() > 0).float() == secret).float().mean())
                self.train_log.append({"step": step, "bce": float(bce.detach()), "pixel_mse": float(pixel.detach()),
                                       "bit_accuracy": bits})
                bar.set_postfix(bits=f"{bits:.3f}", mse=f"{float(pixel.detach()):.4f}")
        bar.close()
        self.encoder, self.decoder = encoder.cpu().eval(), decoder.cpu().eval()
        self.image_size = (height, width)
        write_cache(cache, self.state_tensors())

    def _residual_weight_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.0
        if self.ramp_steps == 0:
            return self.residual_weight
        return self.residual_weight * min(1.0, (step - self.warmup_steps + 1) / self.ramp_steps)

    # ------------------------------------------------------------------ trigger
    def check_image_size(self, height: int, width: int, trained_size: bool = True) -> None:
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(f"x: ISSBA's encoder needs heights and widths divisible by {DOWNSAMPLING}, "
                             f"got {height}x{width} images")
        if trained_size and self.image_size is not None and (height, width) != self.image_size:
            raise ValueError(f"x: the encoder was trained on {self.image_size[0]}x{self.image_size[1]} images, "
                             f"got {height}x{width}")

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        self._require_trained()
        check_images(x, "x", allow_empty=True)  # the contract first: a channels-last batch is named as such
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] != self.encoder.channels:
            raise ValueError(f"x: the encoder was trained on {self.encoder.channels}-channel images, "
                             f"got {x.shape[1]} channels")
        return super().apply_trigger(x)

    @torch.no_grad()
    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder.to(x.device)
        secret = self.secret.to(x.device).expand(len(x), -1)
        return (x + encoder(x, secret)).clamp(0.0, 1.0)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's bits ``[B, secret_bits]`` (0/1 floats) for images ``[B, C, H, W]``."""
        self._require_trained()
        return (self.decoder.to(x.device)(x.float()) > 0).float()

    @torch.no_grad()
    def quality(self, images: torch.Tensor | LabeledImages, batch_size: int = 512) -> dict[str, float]:
        """How well the fixed secret is hidden in ``images`` ([N, C, H, W] in [0, 1], e.g. held-out test images).

        Returns ``bit_accuracy`` (share of the secret's bits the decoder reads back from the
        encoded images, in [0, 1]) and ``psnr`` (mean over images of
        :func:`analysis.metrics.psnr`, in dB; higher = less visible residual).
        """
        x = images.x if isinstance(images, LabeledImages) else images
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) == 0:
            raise ValueError(f"images: expected a non-empty tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
        correct, psnrs = [], []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].float()
            encoded = self.apply_trigger(batch)
            correct.append((self.decode(encoded) == self.secret.to(encoded.device)).float().mean(1))
            psnrs.append(psnr(batch, encoded))
        return {"bit_accuracy": float(torch.cat(correct).mean()), "psnr": float(np.mean(np.concatenate(psnrs)))}

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Encoder and decoder weights (``encoder.*``, ``decoder.*``), the ``secret`` and the ``image_size``."""
        self._require_trained()
        return {**module_tensors("encoder", self.encoder), **module_tensors("decoder", self.decoder),
                "secret": self.secret.clone(), "image_size": torch.tensor(self.image_size, dtype=torch.int64)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for key in ("secret", "image_size", "encoder.project.0.weight"):
            if key not in tensors:
                raise ValueError(f"tensors: ISSBA needs {key!r}; got keys {sorted(tensors)[:5]}...")
        secret = tensors["secret"].float()
        if secret.shape != (self.secret_bits,):
            raise ValueError(f"tensors: secret has shape {tuple(secret.shape)}, expected ({self.secret_bits},)")
        channels = tensors["encoder.project.0.weight"].shape[0] // 64
        encoder, decoder = self._build(channels)
        load_module_tensors("encoder", encoder, tensors, "ISSBA")
        load_module_tensors("decoder", decoder, tensors, "ISSBA")
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.secret = secret.clone()
        self.image_size = tuple(int(v) for v in tensors["image_size"].tolist())


__all__ = ["ISSBA"]
