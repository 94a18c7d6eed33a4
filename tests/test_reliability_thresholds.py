"""Thresholds outside a detector's score range and a PCA target the model does not have are refused (issue 33,
class 6): each would otherwise flag nothing, flag everything or draw an empty picture without a word."""
import pytest
import torch
from sklearn.base import clone

from analysis.data import LabeledImages
from analysis.defenses.scale_up import ScaleUp, check_threshold
from analysis.models import build_model
from analysis.projection import Projector


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    return model, LabeledImages(torch.rand(12, 3, 32, 32), torch.arange(12) % 3), torch.rand(4, 3, 32, 32)


# ---------------------------------------------------------------------- SCALE-UP: SPC lies in [0, 1]
@pytest.mark.parametrize(("threshold", "effect"), [(1.0, "flags no input"), (2.5, "flags no input"),
                                                   (-0.1, "flags every input")])
def test_a_data_free_threshold_outside_spc_is_refused_at_construction(threshold, effect):
    with pytest.raises(ValueError, match=rf"threshold: expected a number in \[0, 1\) in data-free mode, got "
                                         rf"{threshold}; .*so this {effect}"):
        ScaleUp(threshold=threshold)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.99])
def test_a_data_free_threshold_inside_spc_is_accepted(threshold):
    assert clone(ScaleUp(threshold=threshold)).threshold == threshold


def test_a_standardised_threshold_is_any_finite_number_in_data_limited_mode():
    assert ScaleUp(threshold=2.5, mode="data-limited").threshold == 2.5
    assert ScaleUp(threshold=-1.0, mode="data-limited").threshold == -1.0


def test_set_params_refuses_before_setting_anything():
    defense = ScaleUp(threshold=0.5)
    with pytest.raises(ValueError, match=r"threshold: expected a number in \[0, 1\) in data-free mode, got 3"):
        defense.set_params(threshold=3)
    assert defense.threshold == 0.5
    defense.set_params(threshold=3, mode="data-limited")  # the new mode's range
    assert (defense.threshold, defense.mode) == (3, "data-limited")
    with pytest.raises(ValueError, match="in data-free mode, got 3"):
        defense.set_params(mode="data-free")


def test_a_threshold_set_as_an_attribute_after_fit_is_refused_at_use(setup):
    model, _, x = setup
    defense = ScaleUp(threshold=0.5).fit(model)
    defense.threshold = 1.5
    with pytest.raises(ValueError, match=r"in data-free mode, got 1\.5"):
        defense.predict(model, x)
    defense.threshold = 0.9
    assert defense.predict(model, x).shape == (4,)


def test_check_threshold_leaves_an_unknown_mode_to_the_mode_check():
    check_threshold(5.0, "data-rich")  # no range for a mode that does not exist: the mode check names it
    with pytest.raises(ValueError, match="mode"):
        ScaleUp(threshold=0.5, mode="data-rich").fit(build_model("resnet18", 3, 2).eval())


# ---------------------------------------------------------------------- PCA target class
@pytest.mark.parametrize(("target", "error", "message"), [
    (3, ValueError, r"target: expected an integer from 0 to 2, got 3: the model has 3 classes \(0\.\.2\), so no "
                    r"input could be classified as target 3 and the projection would be empty"),
    (-1, ValueError, r"target: expected an integer from 0 to 2, got -1: the model has 3 classes"),
    (1.7, ValueError, r"target: expected an integer from 0 to 2, got 1\.7 \(not a whole number: it would be "
                      r"truncated to 1\): the model has 3 classes"),
    ("1", TypeError, r"target: expected an integer from 0 to 2, got '1' \(a class of the model: 0\.\.2\)"),
    (True, TypeError, r"target: expected an integer from 0 to 2, got True"),
])
def test_a_pca_target_outside_the_models_classes(setup, target, error, message):
    model, reference, _ = setup
    with pytest.raises(error, match=message):
        Projector(model, reference, reference, reference, target)


def test_a_pca_target_of_the_model_is_accepted_as_an_int(setup):
    model, reference, _ = setup
    projector = Projector(model, reference, reference, reference, 2.0)
    assert projector.target == 2 and type(projector.target) is int
