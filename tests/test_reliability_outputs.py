"""Model outputs are checked wherever a defense or the detector runs the model (issue 33, class 5).

NaN or inf logits, a model that returns a tuple or a dict, and a float64 model each give a clear error
(or, for the layer-wise detector, a float64 model works) instead of a silent "not flagged" or a late
internal error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.defenses import build_defense
from analysis.defenses.base import evaluating, features_of
from analysis.detection import LayerwiseDetector
from analysis.features import predict_classes
from analysis.models import build_model
from analysis.training import TrainConfig
from analysis.validation import check_model_output

FAST = {
    "rs": {"n_samples": 4}, "shrinkpad": {}, "fp": {"finetune": TrainConfig(epochs=1)},
    "ac": {"n_components": 2}, "strip": {"n_blends": 4}, "scan": {}, "layerwise": {"unknown_class": "flag"},
    "scale-up": {}, "ibd-psc": {}, "ted": {"n_components": 2},
}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    return model, reference, torch.rand(6, 3, 32, 32)


def _poison_logits(model: nn.Module, value: float):
    """A hook on the model's last layer that writes ``value`` into one logit of the first input of each batch."""
    def hook(_module, _inputs, output):
        output = output.clone()
        output[0, 1] = value
        return output
    return model.fc.register_forward_hook(hook)


def _replace_output(model: nn.Module, make):
    return model.register_forward_hook(lambda _m, _i, output: make(output))


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "inf"), (-float("inf"), "inf")])
def test_non_finite_logits_at_predict_raise_naming_which(setup, name, value, word):
    model, reference, x = setup
    defense = build_defense(name, **FAST[name]).fit(model, reference, train=reference)
    handle = _poison_logits(model, value)
    try:
        # the layer-wise detector does not read logit values beyond argmax, but a NaN logit is still refused
        with pytest.raises(ValueError, match=rf"model.*{word}"):
            defense.predict(model, x)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(n for n in FAST if n not in ("rs", "shrinkpad")))
def test_non_finite_logits_at_fit_raise(setup, name):
    model, reference, _ = setup
    handle = _poison_logits(model, float("nan"))
    try:
        settings = {**FAST[name], **({"mode": "data-limited"} if name == "scale-up" else {})}  # data-free: no model run
        with pytest.raises(ValueError, match="model.*NaN"):
            build_defense(name, **settings).fit(model, reference, train=reference)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("kind, make", [
    ("tuple", lambda out: (out, out)), ("dict", lambda out: {"logits": out}), ("list", lambda out: [out]),
])
def test_a_model_returning_a_tuple_or_dict_is_refused(setup, name, kind, make):
    model, reference, x = setup
    defense = build_defense(name, **FAST[name]).fit(model, reference, train=reference)
    handle = _replace_output(model, make)
    try:
        with pytest.raises(TypeError, match=rf"model: a model must return a logits tensor \[N, classes\], got a {kind}"):
            defense.predict(model, x)
    finally:
        handle.remove()


def test_a_model_returning_a_3d_tensor_is_refused(setup):
    model, reference, x = setup
    handle = _replace_output(model, lambda out: out[:, :, None])
    try:
        with pytest.raises(ValueError, match=r"logits tensor \[N, classes\], got a tensor of shape \(6, 3, 1\)"):
            predict_classes(model, x)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(n for n in FAST if n != "layerwise"))
def test_a_float64_model_is_refused_at_fit_and_predict_with_a_clear_error(setup, name):
    model, reference, x = setup
    import copy
    double = copy.deepcopy(model).double()
    with pytest.raises(ValueError, match="model: the baseline defenses run float32 models.*float64"):
        build_defense(name, **FAST[name]).fit(double, reference, train=reference)
    defense = build_defense(name, **FAST[name]).fit(model, reference, train=reference)
    with pytest.raises(ValueError, match="model: the baseline defenses run float32 models.*float64"):
        defense.predict(double, x)


def test_the_layerwise_adapter_runs_a_float64_model(setup):
    import copy
    model, reference, x = setup
    double = copy.deepcopy(model).double()
    found = build_defense("layerwise", unknown_class="flag").fit(double, reference).detect(double, x)
    expected = LayerwiseDetector(unknown_class="flag").fit(model, reference).detect(model, x)
    np.testing.assert_array_equal(found.predicted, expected.predicted)


def test_nan_features_with_finite_logits_are_refused():
    class TwoHeads(nn.Module):  # the latent branch is not what the logits are computed from
        def __init__(self):
            super().__init__()
            self.latent = nn.Linear(12, 4)
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            flat = x.flatten(1)[:, :12]
            self.latent(flat)
            return self.fc(flat)

    model = TwoHeads()
    model.latent.register_forward_hook(lambda _m, _i, out: torch.full_like(out, float("nan")))
    with pytest.raises(ValueError, match="layer 'latent' of the model: returned NaN features"):
        features_of(model, torch.rand(3, 3, 4, 4), ["latent"], batch_size=2)


def test_evaluating_removes_its_check_and_restores_the_mode():
    model = nn.Sequential(nn.Linear(4, 2)).train()
    with evaluating(model):
        assert len(model._forward_hooks) == 1 and not model.training
    assert len(model._forward_hooks) == 0 and model.training
    with pytest.raises(ValueError, match="NaN"), evaluating(model):
        model(torch.full((2, 4), float("nan")))
    assert len(model._forward_hooks) == 0


def test_check_model_output_messages():
    logits = torch.zeros(4, 3)
    assert check_model_output(logits) is logits
    logits[1, 0], logits[2, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"model: returned NaN and inf logits for 1 of 4 inputs \(rows with NaN: 1, inf: 1\)"):
        check_model_output(logits)
    with pytest.raises(TypeError, match=r"got a dict with keys \['logits'\]"):
        check_model_output({"logits": logits})
