"""Label-Consistent (Turner et al. 2019): clean-label poisoning with adversarially perturbed target images.

Only target-class training images are poisoned, and they keep their true label. Each one is
first pushed away from its class by an untargeted L∞ PGD attack against a benign model (so
the victim cannot fit it from its content and leans on the trigger instead), then stamped
with the BadNets trigger. At test time the trigger alone is applied.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import LabeledImages
from ..validation import NotFittedError
from ..devices import model_device
from .badnets import BadNets
from .base import Attack, AttackContext, PoisonedTrainingSet


def pgd_away_from_label(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
                        batch_size: int = 128) -> torch.Tensor:
    """Untargeted L∞ PGD without random start: ``steps`` signed-gradient steps of size ``step`` that
    maximise the cross-entropy of the true labels ``y``, projected on ``|x' - x| <= eps`` and [0, 1].

    ``x``: ``[N, C, H, W]`` in [0, 1]; returns the perturbed images on the CPU. The model runs in eval mode.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            clean = x[start : start + batch_size].to(device)
            labels = y[start : start + batch_size].to(device)
            adv = clean.clone()
            for _ in range(steps):
                adv.requires_grad_(True)
                loss = F.cross_entropy(model(adv), labels)
                (grad,) = torch.autograd.grad(loss, adv)
                with torch.no_grad():
                    adv = adv + step * grad.sign()
                    adv = (clean + (adv - clean).clamp(-eps, eps)).clamp(0.0, 1.0)
            out.append(adv.detach().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def adversarial_training_loss(eps: float, steps: int):
    """A ``loss_hook`` for :func:`analysis.training.train` that trains on adversarial examples
    (Madry et al. 2018): each batch is replaced by an untargeted L∞ PGD attack on the current model
    (``steps`` steps of size ``2.5 · eps / steps``, no random start, generated in eval mode) and the
    loss is the cross-entropy on those. ``eps`` in pixel units."""
    step = 2.5 * eps / steps

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        adversarial = pgd_away_from_label(model, x, y, eps, step, steps, batch_size=len(x)).to(x.device)
        return F.cross_entropy(model(adversarial), y)

    return loss


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


SURROGATES = ("standard", "adversarial")


class LabelConsistent(Attack):
    """Clean-label attack. Paper settings (Sec. 5.1, App. D.3): BadNets trigger, ε = 16/255, target 2, rate 5%.

    ``rate`` is a share of the *whole* training set: ``round(rate · N)`` images are drawn
    from the target class (an error says so when the class is too small). PGD: ``pgd_steps``
    steps of size ``pgd_step`` (defaults 20 × 2/255; the paper gives only ε), untargeted,
    no random start. The trigger is a :class:`BadNets` square (``trigger_size``,
    ``trigger_position``, ``trigger_value``; BadNets' defaults).

    :meth:`prepare` trains the benign model (``context.arch``, ``context.width``,
    ``context.config``, on the clean training set) and perturbs the chosen images. With
    ``context.cache_dir`` both are cached there (safetensors, each with a small JSON file
    holding its key and settings; never pickle): the benign model under a key of the
    training data, architecture, width and training settings, the perturbed images under
    that key plus the PGD settings and chosen indices. A second run with the same inputs
    loads them instead of recomputing.

    ``surrogate="adversarial"`` (an option; the paper gives only ε, and the default perturbs against a
    normally trained benign model) trains
    the surrogate adversarially (Madry et al.; L∞ budget ``surrogate_eps``, ``surrogate_steps``
    PGD steps per batch, see :func:`adversarial_training_loss`), as Turner et al. did: perturbations
    of a robust model change what the image looks like rather than adding a model-specific pattern.
    It makes the surrogate's training several times slower (``benchmarks/attack_variants.py``, ResNet-18
    on digits: 301 s for the row that trains it against 54 s with the cached standard surrogate).
    """

    name = "lc"
    clean_label = True

    def __init__(
        self,
        target: int = 2,
        *,
        rate: float = 0.05,
        eps: float = 16 / 255,
        pgd_step: float = 2 / 255,
        pgd_steps: int = 20,
        trigger_size: int = 2,
        trigger_position: tuple[int, int] | None = None,
        trigger_value: float = 1.0,
        surrogate: str = "standard",
        surrogate_eps: float = 16 / 255,
        surrogate_steps: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(target, rate, seed)
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate: expected one of {SURROGATES}, got {surrogate!r}")
        if (isinstance(surrogate_eps, bool) or not isinstance(surrogate_eps, (int, float))
                or not 0.0 < surrogate_eps < 1.0):
            raise ValueError(
                f"surrogate_eps: expected an L-infinity budget in (0, 1) (pixel units), got {surrogate_eps!r}")
        if (isinstance(surrogate_steps, bool) or not isinstance(surrogate_steps, (int, np.integer))
                or surrogate_steps < 1):
            raise ValueError(f"surrogate_steps: expected a positive integer, got {surrogate_steps!r}")
        self.surrogate, self.surrogate_eps = surrogate, float(surrogate_eps)
        self.surrogate_steps = int(surrogate_steps)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
            raise ValueError(f"eps: expected an L-infinity budget in (0, 1) (pixel units), got {eps!r}")
        if isinstance(pgd_step, bool) or not isinstance(pgd_step, (int, float)) or not 0.0 < pgd_step <= eps:
            raise ValueError(f"pgd_step: expected a step size in (0, eps={eps}], got {pgd_step!r}")
        if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, (int, np.integer)) or pgd_steps < 1:
            raise ValueError(f"pgd_steps: expected a positive integer, got {pgd_steps!r}")
        self.eps, self.pgd_step, self.pgd_steps = float(eps), float(pgd_step), int(pgd_steps)
        self.trigger = BadNets(target=target, rate=rate, size=trigger_size, position=trigger_position,
                               value=trigger_value, seed=seed)
        self.perturbed: torch.Tensor | None = None  # [n_poison, C, H, W]: PGD output, before the trigger
        self.perturbed_indices: np.ndarray | None = None
        self._prepared_for: str | None = None  # digest of the clean images the perturbations came from
        self.loaded_from_cache = False

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "eps": self.eps, "pgd_step": self.pgd_step, "pgd_steps": self.pgd_steps,
                "trigger_size": self.trigger.size, "trigger_position": self.trigger.position,
                "trigger_value": self.trigger.value, "surrogate": self.surrogate,
                "surrogate_eps": self.surrogate_eps, "surrogate_steps": self.surrogate_steps}

    def _surrogate_key(self) -> list:
        """What the surrogate adds to the cache keys (nothing for the standard one, so older caches stay valid)."""
        return [] if self.surrogate == "standard" else [self.surrogate, self.surrogate_eps, self.surrogate_steps]

    def check_image_size(self, height: int, width: int) -> None:
        self.trigger.check_image_size(height, width)

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.trigger._stamp(x)

    # ------------------------------------------------------------------ preparation
    def benign_model(self, train: LabeledImages, num_classes: int, context: AttackContext) -> nn.Module:
        """The benign model the perturbations are computed against: loaded from the cache or trained (eval mode)."""
        from ..devices import pick_device, seed_everything
        from ..models import build_model, cpu_width
        from ..training import TrainConfig, train as run_training

        config = context.config or TrainConfig()
        width = context.width if context.width is not None else cpu_width(context.arch)
        key = _digest(train.x, train.y, [context.arch, width, num_classes, config.to_dict()],
                      *self._surrogate_key())[:20]
        meta = {"key": key, "kind": "lc-benign-model", "arch": context.arch, "width": width,
                "num_classes": num_classes, "train": config.to_dict(), "images": len(train),
                "surrogate": self.surrogate, "surrogate_eps": self.surrogate_eps,
                "surrogate_steps": self.surrogate_steps}
        seed_everything(config.seed)
        model = build_model(context.arch, num_classes, width)
        cached = self._load("benign", key, context)
        if cached is not None:
            model.load_state_dict(cached)
            return model.to(pick_device(context.device)).eval()
        hook = (adversarial_training_loss(self.surrogate_eps, self.surrogate_steps)
                if self.surrogate == "adversarial" else None)
        run_training(model, train, config, device=context.device, loss_hook=hook, progress=context.progress)
        self._save("benign", key, meta, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                   context)
        return model.eval()

    def prepare(self, train: LabeledImages, num_classes: int, context: AttackContext) -> None:
        """Train (or load) the benign model, then PGD-perturb the chosen target-class images (or load them)."""
        self._check_target(train)
        indices = self.select_indices(train.y.numpy())
        config = context.config.to_dict() if hasattr(context.config, "to_dict") else None
        width = context.width
        key = _digest(train.x, train.y, torch.as_tensor(indices),
                      [context.arch, width, num_classes, config, self.eps, self.pgd_step, self.pgd_steps],
                      *self._surrogate_key())[:20]
        cached = self._load("perturbed", key, context)
        if cached is not None and np.array_equal(cached["indices"].numpy(), indices):
            self.perturbed, self.perturbed_indices, self.loaded_from_cache = cached["perturbed"], indices, True
            self._prepared_for = _digest(train.x[torch.as_tensor(indices)])
            return
        model = self.benign_model(train, num_classes, context)
        idx = torch.as_tensor(indices)
        self.perturbed = pgd_away_from_label(model, train.x[idx], train.y[idx], self.eps, self.pgd_step,
                                             self.pgd_steps)
        self.perturbed_indices, self.loaded_from_cache = indices, False
        self._prepared_for = _digest(train.x[idx])
        meta = {"key": key, "kind": "lc-perturbed-images", "eps": self.eps, "pgd_step": self.pgd_step,
                "pgd_steps": self.pgd_steps, "target": self.target, "count": len(indices)}
        self._save("perturbed", key, meta, {"perturbed": self.perturbed.contiguous(), "indices": idx.contiguous()},
                   context)

    @staticmethod
    def _paths(kind: str, key: str, context: AttackContext) -> tuple[Path, Path] | None:
        if context.cache_dir is None:
            return None
        folder = Path(context.cache_dir)
        return folder / f"lc-{kind}-{key}.safetensors", folder / f"lc-{kind}-{key}.json"

    def _load(self, kind: str, key: str, context: AttackContext) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        paths = self._paths(kind, key, context)
        if paths is None or not (paths[0].is_file() and paths[1].is_file()):
            return None
        meta = json.loads(paths[1].read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        return load_file(str(paths[0]))

    def _save(self, kind: str, key: str, meta: dict, tensors: dict[str, torch.Tensor], context: AttackContext) -> None:
        from safetensors.torch import save_file

        paths = self._paths(kind, key, context)
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        partial = paths[0].with_suffix(".partial")
        save_file(tensors, str(partial))
        os.replace(partial, paths[0])  # the JSON, written last, marks the entry complete
        paths[1].write_text(json.dumps(meta, indent=1, sort_keys=True, default=str), encoding="utf-8")

    # ------------------------------------------------------------------ poisoning
    def poison_training_set(self, train: LabeledImages) -> PoisonedTrainingSet:
        """Replace the chosen target-class images by their perturbed, triggered versions; labels unchanged."""
        self._check_target(train)
        indices = self.select_indices(train.y.numpy())
        if (self.perturbed is None or not np.array_equal(self.perturbed_indices, indices)
                or self._prepared_for != _digest(train.x[torch.as_tensor(indices)])):
            raise NotFittedError("LabelConsistent: call prepare(train, num_classes, context) on this training set first")
        x = train.x.clone()
        x[torch.as_tensor(indices)] = self.apply_trigger(self.perturbed)
        return PoisonedTrainingSet(LabeledImages(x, train.y.clone()), indices, train.y.numpy()[indices])


__all__ = ["LabelConsistent", "SURROGATES", "adversarial_training_loss", "pgd_away_from_label"]
