"""Fine-Pruning (Liu et al., RAID 2018) as a detector: compare the repaired model with the original.

Fit, on a deep copy of the model (the caller's model is never modified):

1. the mean activation of every output channel of ``layer`` over the benign
   ``reference`` images (mean over images and spatial positions of the module's output).
   Default ``layer``: the module whose output is the last convolutional feature map,
   i.e. the parent of ``model.last_conv_layer`` (:func:`default_layer`; ResNet-18:
   the block ``layer4.1``, after BatchNorm, the shortcut and ReLU, where Liu et al. read
   activations). Pruning only ``layer4.1.conv2`` (pass ``layer=model.last_conv_layer``)
   leaves the residual shortcut, which carries the backdoor features past it;
2. prune the ``prune_ratio`` (paper: 95%) least activated ("dormant") channels: a
   forward hook multiplies the layer's output by a 0/1 channel mask, also during
   fine-tuning, so pruned channels stay at zero;
3. fine-tune the pruned copy on a seeded ``finetune_fraction`` (paper: 5%) of ``train``
   (:func:`analysis.training.train` with ``finetune`` = TrainConfig, default 5 epochs,
   constant lr 0.01, no augmentation).

Predict: an input is flagged when the repaired model's prediction differs from the
original model's (the paper's adaptation of model-repairing defenses into detectors).

Score: ``1 - p_repaired(original prediction | x)``, in [0, 1].

Notes: ``train`` must be given (the experiments pass the clean training split).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..data import LabeledImages
from ..devices import model_device
from ..features import resolve_layers
from ..training import TrainConfig, train as train_model
from .base import Defense, as_images, check_int, check_labeled, check_number, class_margin, doubt, evaluating, signed_margin


def default_layer(model: nn.Module) -> str:
    """The module whose output is the last convolutional feature map: the parent of ``model.last_conv_layer``.

    For this toolkit's ResNet-18 (``layer4.1.conv2``) that is the residual block ``layer4.1``
    (after BatchNorm, the shortcut addition and ReLU); for MobileNetV2 (``conv_last.0``) the
    conv-BN-ReLU6 block ``conv_last``; a top-level conv layer is used as it is.
    """
    last = getattr(model, "last_conv_layer", None)
    if not last:
        raise ValueError(f"layer: {type(model).__name__} has no 'last_conv_layer'; pass layer='module.path'")
    return last.rsplit(".", 1)[0] if "." in last else last


class FinePruning(Defense):
    """Flag inputs on which a pruned and fine-tuned copy of the model disagrees with the model.

    Parameters
    ----------
    prune_ratio : share of the layer's channels pruned, least activated first (paper: 0.95).
    finetune_fraction : share of ``train`` used for fine-tuning (paper: 0.05).
    finetune : the fine-tuning TrainConfig; None = 5 epochs, constant lr 0.01, batch 128,
        no augmentation, seeded with ``seed``.
    layer : module path of the pruned layer (any module with a [B, C, ...] output); None =
        :func:`default_layer`, the parent of ``model.last_conv_layer``.
    batch_size : images per forward pass.
    seed : seed of the fine-tuning subset (and of fine-tuning when ``finetune`` is None).
    progress : show the fine-tuning progress bar.

    Learned attributes: ``layer_`` (module path), ``mean_activation_`` ([C] per channel),
    ``pruned_channels_`` (indices), ``mask_`` ([C] 0/1 tensor), ``finetune_indices_``
    (rows of ``train``), ``repaired_model_`` (the pruned, fine-tuned copy), ``history_``.
    """

    _fitted_attribute = "repaired_model_"
    #: settings refused when changed after fit (they decide the pruned, fine-tuned copy);
    #: the others are read where they are used
    _refit_settings = ("prune_ratio", "finetune_fraction", "finetune", "layer", "seed")

    def __init__(self, prune_ratio: float = 0.95, *, finetune_fraction: float = 0.05, finetune: TrainConfig | None = None,
                 layer: str | None = None, batch_size: int = 256, seed: int = 0, progress: bool = False) -> None:
        self.prune_ratio = prune_ratio
        self.finetune_fraction = finetune_fraction
        self.finetune = finetune
        self.layer = layer
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress

    def _check_settings(self) -> None:
        check_number(self.prune_ratio, "prune_ratio", 0.0, 1.0, high_open=True)
        check_number(self.finetune_fraction, "finetune_fraction", 0.0, 1.0, low_open=True)
        if self.finetune is not None and not isinstance(self.finetune, TrainConfig):
            raise ValueError(f"finetune: expected a TrainConfig or None, got {type(self.finetune).__name__}")
        check_int(self.batch_size, "batch_size")
        check_int(self.seed, "seed", minimum=0)

    def fit(self, model: nn.Module, reference: LabeledImages, train: LabeledImages | None = None) -> "FinePruning":
        """Prune the dormant channels of a copy of ``model`` and fine-tune it on part of ``train``."""
        self._check_settings()
        check_labeled(reference, "reference")
        if train is None:
            raise ValueError("train: FinePruning fine-tunes on a share of the training set; pass train=LabeledImages")
        check_labeled(train, "train")
        layer = self.layer if self.layer is not None else default_layer(model)
        resolve_layers(model, [layer])

        activation = self._mean_activation(model, as_images(reference, "reference"), layer)
        n_pruned = int(round(self.prune_ratio * len(activation)))
        order = np.argsort(activation, kind="stable")  # least activated first
        mask = torch.ones(len(activation))
        mask[torch.as_tensor(order[:n_pruned])] = 0.0

        repaired = copy.deepcopy(model)
        device = model_device(model)
        channel_mask = mask.to(device)

        def prune_hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            return output * channel_mask.view(1, -1, *([1] * (output.ndim - 2)))

        self.hook_handle_ = resolve_layers(repaired, [layer])[0].register_forward_hook(prune_hook)
        rng = np.random.default_rng(self.seed)
        n_finetune = max(1, int(round(self.finetune_fraction * len(train))))
        indices = np.sort(rng.choice(len(train), size=n_finetune, replace=False))
        config = self.finetune or TrainConfig(epochs=5, lr=0.01, schedule="constant", augment="none", seed=int(self.seed))
        self.history_ = train_model(repaired, train.subset(indices), config, device=device, progress=self.progress)
        repaired.eval()

        self.layer_ = layer
        self.mean_activation_ = activation
        self.pruned_channels_ = np.sort(order[:n_pruned])
        self.mask_ = mask
        self.finetune_indices_ = indices
        self.repaired_model_ = repaired
        return self

    def _mean_activation(self, model: nn.Module, images: torch.Tensor, layer: str) -> np.ndarray:
        """Mean of each output channel of ``layer`` (dim 1 of its output) over images and positions."""
        device = model_device(model)
        module = resolve_layers(model, [layer])[0]
        captured: dict[str, torch.Tensor] = {}

        def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            # a copy: a later in-place op (ReLU(inplace=True), `out += identity`) would rewrite the output
            captured["out"] = output.detach().clone() if isinstance(output, torch.Tensor) else output

        total, count = None, 0
        handle = module.register_forward_hook(keep)
        try:
            with evaluating(model):
                for start in range(0, len(images), self.batch_size):
                    block = images[start : start + self.batch_size]
                    model(block.to(device))
                    out = captured["out"]
                    if not isinstance(out, torch.Tensor) or out.ndim < 2:
                        raise ValueError(f"layer: {layer!r} must output a tensor [B, C, ...] with channels to prune, "
                                         f"got {type(out).__name__} of shape {getattr(out, 'shape', None)}")
                    per_channel = out.double().flatten(2).mean(2).sum(0) if out.ndim > 2 else out.double().sum(0)
                    total = per_channel.cpu() if total is None else total + per_channel.cpu()
                    count += len(block)
        finally:
            handle.remove()
        return (total / count).numpy()

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        device = model_device(model)
        repaired_device = model_device(self.repaired_model_)
        scores, decision = [], []
        with evaluating(model), evaluating(self.repaired_model_):
            for start in range(0, len(images), self.batch_size):
                block = images[start : start + self.batch_size]
                plain = model(block.to(device)).argmax(1).cpu()
                logits = self.repaired_model_(block.to(repaired_device)).cpu()
                scores.append(doubt(logits, plain))
                decision.append(signed_margin(class_margin(logits, plain), (logits.argmax(1) != plain).numpy()))
        return np.concatenate(scores), np.concatenate(decision)


__all__ = ["FinePruning", "default_layer"]
