"""Degenerate references and inputs are never a silent answer (issue 33, classes 6 and 7).

A collapsed model warns in TED and SCALE-UP, a NaN score raises instead of counting as "not flagged",
and an implausibly dark batch (images divided by 255 twice) warns.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from analysis.data import LabeledImages
from analysis.defenses import build_defense
from analysis.defenses.base import StatelessDefense, warn_collapsed
from analysis.detection import ReferenceWarning
from analysis.models import build_model
from analysis.validation import DARK_MAX, InputWarning, check_images

REFERENCE = LabeledImages(torch.rand(15, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(15) % 3)


def _model(predict):
    """The small ResNet-18 with its logits replaced by a large one-hot of ``predict(batch size)``."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    model.fc.register_forward_hook(
        lambda _m, _i, out: out + 100.0 * torch.nn.functional.one_hot(predict(len(out)), out.shape[1]).float())
    return model


COLLAPSED = dict(predict=lambda n: torch.zeros(n, dtype=torch.long))  # every input is class 0
HEALTHY = dict(predict=lambda n: torch.arange(n) % 3)  # the reference images' own labels


@pytest.mark.parametrize("name, settings", [
    ("ted", {"n_components": 2}), ("scale-up", {}), ("scale-up", {"mode": "data-limited"}),
])
def test_a_collapsed_model_warns(name, settings):
    with pytest.warns(ReferenceWarning, match=r"predicts all 15 reference images as class 0.*collapsed"):
        build_defense(name, **settings).fit(_model(**COLLAPSED), REFERENCE)


@pytest.mark.parametrize("name, settings", [
    ("ted", {"n_components": 2}), ("scale-up", {}), ("scale-up", {"mode": "data-limited"}),
])
def test_a_healthy_model_does_not_warn(name, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceWarning)
        build_defense(name, **settings).fit(_model(**HEALTHY), REFERENCE)


def test_warn_collapsed_rules():
    with pytest.warns(ReferenceWarning, match="SCALE-UP"):
        warn_collapsed(np.array([2, 2, 2]), np.array([0, 1, 2]), "SCALE-UP")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_collapsed(np.array([2, 1, 2]), np.array([0, 1, 2]), "TED")  # two classes predicted
        warn_collapsed(np.array([1, 1, 1]), np.array([1, 1, 1]), "TED")  # a one-class reference set
        warn_collapsed(np.array([1]), None, "TED")  # a single image says nothing


class _NaNDefense(StatelessDefense):
    """A defense whose score is NaN for the second input (a degenerate statistic)."""

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = batch_size

    def _detect(self, model, images):
        scores = np.zeros(len(images))
        scores[1] = np.nan
        return scores, 0.5 - scores


def test_a_nan_score_raises_instead_of_not_flagged():
    model = _model(**HEALTHY)
    defense = _NaNDefense().fit(model)
    for method in ("predict", "suspicion", "decision_function", "score_samples"):
        with pytest.raises(ValueError, match=r"_NaNDefense: 1 of 4 inputs got a NaN score \(first at index 1\)"):
            getattr(defense, method)(model, torch.rand(4, 3, 32, 32))


def test_a_nan_statistic_in_ted_raises(monkeypatch):
    model = _model(**HEALTHY)
    ted = build_defense("ted", n_components=2).fit(model, REFERENCE)
    monkeypatch.setattr(type(ted), "_outlier_scores", lambda self, t: np.full(len(t), np.nan))
    with pytest.raises(ValueError, match="TED: 4 of 4 inputs got a NaN score"):
        ted.predict(model, torch.rand(4, 3, 32, 32))


def test_layerwise_nan_scores_of_unknown_classes_stay_as_documented():
    model = _model(predict=lambda n: torch.full((n,), 2, dtype=torch.long))  # class 2: no reference samples
    reference = LabeledImages(REFERENCE.x[:10], torch.arange(10) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferenceWarning)
        hook_free = build_model("resnet18", 3, 2).eval()
        defense = build_defense("layerwise", unknown_class="flag").fit(hook_free, reference).unbind_model()
    assert defense.predict(model, torch.rand(3, 3, 32, 32)).all()  # flagged, as unknown_class="flag" says


# ---------------------------------------------------------------------- dark batches
def test_images_divided_by_255_twice_warn():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(InputWarning, match=r"x: implausibly dark batch.*divided by 255 twice"):
        check_images(images / 255.0)
    with pytest.warns(InputWarning, match="reference: implausibly dark"):
        LabeledImages(images * (DARK_MAX / 2), torch.zeros(4, dtype=torch.long))
        check_images(images * (DARK_MAX / 2), "reference")


def test_ordinary_and_black_batches_do_not_warn(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        check_images(torch.rand(4, 3, 8, 8))
        check_images(torch.zeros(2, 3, 8, 8))  # all black: a blank canvas, not a scale mistake
        check_images(torch.full((2, 3, 8, 8), 0.05))  # dim, but not a scale mistake
        for split in (digits.train, digits.reference, digits.test):  # the repository's own data, in [0, 1]
            check_images(split, "digits")
            assert float(split.x.amax((1, 2, 3)).min()) >= DARK_MAX  # no single digit image is that dark either


def test_collapsed_warning_points_at_the_callers_line():
    with pytest.warns(ReferenceWarning) as caught:
        build_defense("scale-up").fit(_model(**COLLAPSED), REFERENCE)
    assert any(w.filename == __file__ for w in caught)
