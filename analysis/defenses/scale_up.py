"""SCALE-UP (Guo et al., ICLR 2023): a trigger's prediction survives amplifying the pixel values.

Every input ``x`` (pixels in [0, 1]) is multiplied by each factor ``n`` of ``scales``
(paper: 3, 5, 7, 9, 11) and clipped back to [0, 1]. The *scaled prediction consistency*

    SPC(x) = (1 / |scales|) * sum_n [ argmax f(clip(n * x)) == argmax f(x) ]

is the share of scaled copies predicted as the unscaled input is. Benign images lose their
content when their pixels saturate, so their prediction drifts; a trigger that the backdoor
reads as a bright pattern keeps the target class. SPC is in [0, 1], in steps of
``1 / len(scales)``.

Modes
-----
``"data-free"`` (default)
    score = SPC; nothing is learned from the reference set. This is the black-box
    setting the paper leads with and the one its official code (``JunfengGo/SCALE-UP``,
    ``test.py``) scores; the paper reports the data-limited variant next to it.
``"data-limited"``
    the paper's variant for a defender holding a few benign images per class: the mean
    ``mu_c`` and standard deviation ``sigma_c`` of the reference images' SPC are learned
    per class ``c``, and score = ``(SPC(x) - mu_y) / sigma_y`` with ``y`` the predicted
    class of ``x``.

Flag: ``score > threshold`` (paper: "SPC(x) > T"; default T = 0.5, BackdoorBox's default,
used for both modes since the paper gives no separate value for the standardised score).

Deviations from the paper and its code, and choices it leaves open
------------------------------------------------------------------
* Ties: SPC takes ``len(scales) + 1`` values, so many inputs tie. An input whose score
  equals the threshold is *not* flagged (strict ``>``, the paper's wording; BackdoorBox
  writes ``>=``). With 5 factors and T = 0.5 the two agree, as 0.5 is not a value SPC can
  take. AUROC counts a tied benign/poisoned pair as half a correct ordering. Predictions
  are ``argmax`` of the logits; among equal logits the lowest class index wins.
* Data-limited statistics: only reference images the model classifies correctly are used
  (as the per-class re-implementations do; BackdoorBox pools all classes and compares the
  scaled predictions to the label). The reference SPC is computed exactly as an input's
  (consistency with the model's own unscaled prediction). A class with fewer than two
  such images, or an input predicted as a class absent from the reference, gets the
  statistics pooled over all kept reference images. ``sigma`` is the sample standard
  deviation (ddof = 1), floored at one SPC step ``1 / len(scales)`` so that a class
  whose reference SPCs are all equal does not give infinite scores.
* Images are scaled in the [0, 1] pixel space the toolkit's models take (no
  normalisation layer to undo).
* Deterministic: no randomness, hence no ``seed``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import LabeledImages
from ..devices import model_device
from .base import (Defense, as_images, check_choice, check_int, check_labeled, check_model, check_number, evaluating,
                   warn_collapsed)

MODES = ("data-free", "data-limited")


def scaled_prediction_consistency(model: nn.Module, images: torch.Tensor, scales: Sequence[float],
                                  batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """SPC of every image, float64 ``[N]`` in [0, 1], and the unscaled predicted classes, int64 ``[N]``.

    ``images``: ``[N, C, H, W]`` with pixels in [0, 1]; each copy is ``clip(n * x, 0, 1)``
    for ``n`` in ``scales``. The model runs in eval mode without autograd; its modes are restored.
    """
    device = model_device(model)
    spc, predicted = [], []
    with evaluating(model):
        for start in tqdm(range(0, len(images), batch_size), desc="SCALE-UP", disable=not progress):
            block = images[start : start + batch_size].to(device)
            plain = model(block).argmax(1)
            same = torch.zeros(len(block), dtype=torch.float64, device=device)
            for factor in scales:
                same += (model((block * float(factor)).clamp(0.0, 1.0)).argmax(1) == plain).double()
            spc.append((same / len(scales)).cpu().numpy())
            predicted.append(plain.cpu().numpy())
    return np.concatenate(spc), np.concatenate(predicted)


def check_threshold(threshold: float, mode: str) -> None:
    """A ValueError unless ``threshold`` can separate scores of ``mode``: data-free, SPC in [0, 1], so [0, 1).

    Flagging is ``score > threshold``: in data-free mode a threshold of 1 or more flags nothing (SPC <= 1) and a
    negative one flags everything, each silently. The data-limited score (SPC standardised per class) may be
    any finite number. An unknown ``mode`` is left to the mode check.

    Examples
    --------
    >>> check_threshold(0.5, "data-free")
    >>> check_threshold(3.0, "data-free")
    Traceback (most recent call last):
    ...
    ValueError: threshold: expected a number in [0, 1) in data-free mode, got 3.0; ...
    """
    check_number(threshold, "threshold", -float("inf"), float("inf"), low_open=True, high_open=True)
    if mode == "data-free" and not 0.0 <= threshold < 1.0:
        effect = "flags no input (SPC is at most 1)" if threshold >= 1.0 else "flags every input (SPC is at least 0)"
        raise ValueError(f"threshold: expected a number in [0, 1) in data-free mode, got {threshold!r}; the score "
                         f"(SPC) lies in [0, 1] and inputs are flagged where it exceeds the threshold, so this "
                         f"{effect}. A threshold in standard deviations belongs to mode='data-limited'")


class ScaleUp(Defense):
    """Flag inputs whose prediction stays the same when their pixel values are amplified.

    Parameters
    ----------
    scales : pixel multipliers, each > 1 (paper: 3, 5, 7, 9, 11).
    threshold : flag when the score exceeds it (default 0.5: an SPC of at least 3/5 with
        the default scales; in ``"data-limited"`` mode, in standard deviations above the class mean).
        Data-free, it must lie in [0, 1) (outside, nothing or everything would be flagged): refused
        at construction, in ``set_params`` and, when set as an attribute, at the next ``fit`` or use.
    mode : ``"data-free"`` (default; score = SPC) or ``"data-limited"`` (score = SPC
        standardised with the reference images' per-class mean and std).
    batch_size : images per forward pass (each image is run ``1 + len(scales)`` times).
    progress : show a progress bar.

    Learned attributes: ``fitted_`` (True); in ``"data-limited"`` mode also
    ``class_mean_`` / ``class_std_`` (dicts class -> SPC statistics of the correctly
    classified reference images), ``pooled_mean_`` / ``pooled_std_`` (over all of them)
    and ``reference_spc_`` (float64 ``[M]``, NaN for misclassified reference images).
    """

    def _fixed_settings(self) -> tuple[str, ...]:
        """``mode`` is refused when changed after fit; ``scales`` too in data-limited mode (the class statistics
        depend on them). ``threshold`` (and, data-free, ``scales``) are read where used."""
        return ("mode", "scales") if self.fit_params_.get("mode") == "data-limited" else ("mode",)

    def __init__(self, scales: Sequence[float] = (3, 5, 7, 9, 11), *, threshold: float = 0.5,
                 mode: Literal["data-free", "data-limited"] = "data-free", batch_size: int = 256,
                 progress: bool = False) -> None:
        if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and np.isfinite(threshold):
            check_threshold(threshold, mode)  # outside SPC's range: refused at once (NaN, text ...: at fit, as before)
        self.scales = scales
        self.threshold = threshold
        self.mode = mode
        self.batch_size = batch_size
        self.progress = progress

    def set_params(self, **params) -> "ScaleUp":
        """scikit-learn's ``set_params``; a ``threshold`` outside the (new) mode's score range is refused before any is set."""
        check_threshold(params.get("threshold", self.threshold), params.get("mode", self.mode))
        return super().set_params(**params)

    def _check_settings(self) -> None:
        scales = list(self.scales) if isinstance(self.scales, (list, tuple)) else None
        if not scales:
            raise ValueError(f"scales: expected a non-empty list of numbers > 1, got {self.scales!r}")
        for factor in scales:
            check_number(factor, "scales", 1.0, float("inf"), low_open=True, high_open=True)
        check_choice(self.mode, "mode", MODES)
        check_threshold(self.threshold, self.mode)  # also at every use: ``defense.threshold = 2`` after fit
        check_int(self.batch_size, "batch_size")

    def fit(self, model: nn.Module, reference: LabeledImages | None = None, train=None) -> "ScaleUp":
        """Data-free: nothing to learn (a reference, if given, is only checked). Data-limited: per-class SPC statistics."""
        self._check_settings()
        check_model(model)
        if self.mode == "data-free":
            if reference is not None:  # nothing to learn; one pass to see whether the model has collapsed
                check_labeled(reference, "reference")
                images = as_images(reference, "reference")
                with evaluating(model):
                    predicted = np.concatenate([model(images[s : s + self.batch_size].to(model_device(model)))
                                                .argmax(1).cpu().numpy() for s in range(0, len(images), self.batch_size)])
                warn_collapsed(predicted, reference.y.cpu().numpy(), "SCALE-UP")
            self.fitted_ = True
            return self
        check_labeled(reference, "reference", min_size=2)
        spc, predicted = scaled_prediction_consistency(model, as_images(reference, "reference"), self.scales,
                                                       self.batch_size, self.progress)
        labels = reference.y.cpu().numpy()
        warn_collapsed(predicted, labels, "SCALE-UP")
        kept = predicted == labels
        if kept.sum() < 2:
            raise ValueError(f"reference: data-limited SCALE-UP needs at least 2 reference images the model classifies "
                             f"correctly, got {int(kept.sum())}")
        floor = 1.0 / len(self.scales)
        self.reference_spc_ = np.where(kept, spc, np.nan)
        self.pooled_mean_ = float(spc[kept].mean())
        self.pooled_std_ = max(float(spc[kept].std(ddof=1)), floor)
        self.class_mean_, self.class_std_ = {}, {}
        for c in np.unique(labels[kept]):
            values = spc[kept & (labels == c)]
            if len(values) >= 2:
                self.class_mean_[int(c)] = float(values.mean())
                self.class_std_[int(c)] = max(float(values.std(ddof=1)), floor)
        self.fitted_ = True
        return self

    def _detect(self, model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        spc, predicted = scaled_prediction_consistency(model, images, self.scales, self.batch_size, self.progress)
        if self.mode == "data-limited":
            if not hasattr(self, "class_mean_"):
                raise RuntimeError("this ScaleUp holds no class statistics (fitted in data-free mode); fit it again")
            mean = np.array([self.class_mean_.get(int(c), self.pooled_mean_) for c in predicted])
            std = np.array([self.class_std_.get(int(c), self.pooled_std_) for c in predicted])
            scores = (spc - mean) / std
        else:
            scores = spc
        return scores, self.threshold - scores


__all__ = ["MODES", "ScaleUp", "check_threshold", "scaled_prediction_consistency"]
