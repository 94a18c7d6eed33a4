"""A fitted detector or defense is tied to its model and its settings (issue 33, classes 1 and 2).

* Class 1: ``fit`` records a fingerprint of the model; scoring another model raises, ``unbind_model()``
  allows it on purpose.
* Class 2: every setting of every estimator, changed after ``fit``, is either read where it is used (the
  result equals a fresh fit with the new value) or refused with "changed after fit ... refit";
  ``set_params`` and ``sklearn.base.clone`` work on every estimator.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from analysis.data import LabeledImages
from analysis.defenses import build_defense
from analysis.detection import LayerwiseDetector
from analysis.fingerprint import ModelMismatchError, model_fingerprint
from analysis.models import build_model
from analysis.training import TrainConfig
from analysis.validation import NotFittedError, same_setting

FAST = {
    "rs": {"n_samples": 4}, "shrinkpad": {}, "fp": {"finetune": TrainConfig(epochs=1)},
    "ac": {"n_components": 2}, "strip": {"n_blends": 4}, "scan": {}, "layerwise": {"unknown_class": "flag"},
    "scale-up": {}, "ibd-psc": {}, "ted": {"n_components": 2},
    "scale-up-limited": {"mode": "data-limited"}, "detector": {"unknown_class": "flag"},
    "layerwise-gaussian": {"target_fpr": 0.2},
}


def make(name: str, **settings):
    settings = {**FAST[name], **settings}
    if name == "detector":
        return LayerwiseDetector(**settings)
    if name == "scale-up-limited":
        return build_defense("scale-up", **settings)
    return build_defense(name, **settings)


def fit(estimator, model, reference):
    return estimator.fit(model, reference, train=reference)  # every one a Defense: the layer-wise detector ignores train


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    torch.manual_seed(1)
    other = build_model("resnet18", 3, 2).eval()  # same architecture, other weights
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    return model, other, reference, torch.rand(6, 3, 32, 32)


# ---------------------------------------------------------------------- class 1: the model
def test_fingerprint_sees_weights_buffers_and_layers_not_copies():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2)
    fingerprint = model_fingerprint(model)
    assert fingerprint.matches(model_fingerprint(copy.deepcopy(model)))  # the same weights
    assert fingerprint.matches(model_fingerprint(copy.deepcopy(model).double()))  # the same values, another dtype
    tweaked = copy.deepcopy(model)
    with torch.no_grad():
        tweaked.fc.weight.mul_(1.01)  # e.g. fine-tuned
    assert not fingerprint.matches(model_fingerprint(tweaked))
    pruned = copy.deepcopy(model)
    with torch.no_grad():  # a change at unsampled positions still moves the tensor's sum
        pruned.stem[0].weight.view(-1)[1] += 1.0
    assert not fingerprint.matches(model_fingerprint(pruned))
    stats = copy.deepcopy(model)
    stats.stem[1].running_mean += 0.5  # a buffer: BatchNorm statistics after training mode
    assert not fingerprint.matches(model_fingerprint(stats))
    assert not fingerprint.matches(model_fingerprint(build_model("resnet18", 3, 4)))  # other shapes
    assert len(str(fingerprint)) == 12


@pytest.mark.parametrize("name", sorted(FAST))
def test_scoring_another_model_raises_and_unbind_model_allows_it(setup, name):
    model, other, reference, x = setup
    estimator = fit(make(name), model, reference)
    assert estimator.model_fingerprint_ is not None
    estimator.predict(copy.deepcopy(model), x)  # the same weights in another object: accepted
    with pytest.raises(ModelMismatchError, match=r"model: this \w+ was fitted on another model \(fingerprint \w{12}"):
        estimator.predict(other, x)
    with pytest.raises(ValueError, match="refit it on this model, or call unbind_model"):
        estimator.decision_function(other, x)
    assert estimator.unbind_model() is estimator and estimator.model_fingerprint_ is None
    assert estimator.predict(other, x).shape == (6,)


def test_detector_checks_the_model_in_every_model_method(setup):
    model, other, reference, x = setup
    detector = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    for method in ("detect", "predict", "score_samples", "decision_function", "layerwise_similarity"):
        with pytest.raises(ModelMismatchError):
            getattr(detector, method)(other, x)
    with pytest.raises(ModelMismatchError):
        LayerwiseDetector(target_fpr=0.2, unknown_class="flag").fit(model, reference).calibrate(other, x)
    with pytest.raises(ModelMismatchError):  # the TED trajectories too
        fit(make("ted"), model, reference).trajectories(other, x)


def test_fit_features_and_with_score_layers_keep_the_right_fingerprint(setup):
    model, other, reference, x = setup
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 12)
    features = [np.eye(3)[labels] + rng.normal(scale=0.3, size=(24, 3)) for _ in range(6)]
    assert LayerwiseDetector().fit_features(features, labels).model_fingerprint_ is None
    detector = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    single = detector.with_score_layers([detector.n_layers_])
    assert single.model_fingerprint_ is detector.model_fingerprint_
    with pytest.raises(ModelMismatchError):
        single.predict(other, x)


# ---------------------------------------------------------------------- class 2: the settings
#: (setting, value after fit, refused?) for every setting of every estimator; a new setting must be added here
CHANGES = {
    "rs": [("n_samples", 3, False), ("std", 0.2, False), ("clamp", True, False), ("batch_size", 8, False),
           ("seed", 1, False), ("progress", True, False)],
    "shrinkpad": [("shrink", 0.2, False), ("batch_size", 4, False), ("seed", 1, False), ("progress", True, False)],
    "fp": [("prune_ratio", 0.5, True), ("finetune_fraction", 0.5, True), ("finetune", TrainConfig(epochs=2), True),
           ("layer", "layer3", True), ("batch_size", 4, False), ("seed", 1, True), ("progress", True, False)],
    "ac": [("layers", ["layer3"], True), ("n_components", 3, False), ("reduction", "pca", False),
           ("size_threshold", 0.2, False), ("criterion", "reference", False), ("batch_size", 4, False),
           ("seed", 1, False), ("progress", True, False)],
    "strip": [("n_blends", 3, True), ("alpha", 0.3, True), ("percentile", 20.0, True), ("batch_size", 8, False),
              ("seed", 1, True), ("progress", True, False)],
    "scan": [("layers", ["layer3"], True), ("threshold", 1.0, False), ("n_components", 4, True), ("reg", 1e-2, True),
             ("statistic", "sum", False), ("max_iter", 50, True), ("batch_size", 4, False), ("progress", True, False)],
    "scale-up": [("scales", (2, 4), False), ("threshold", 0.3, False), ("mode", "data-limited", True),
                 ("batch_size", 4, False), ("progress", True, False)],
    "scale-up-limited": [("scales", (2, 4), True), ("threshold", 0.3, False), ("mode", "data-free", True),
                         ("batch_size", 4, False), ("progress", True, False)],
    "ibd-psc": [("scale", 2.0, True), ("n_models", 3, True), ("error_bound", 0.3, True), ("threshold", 0.5, False),
                ("batch_size", 4, False), ("progress", True, False)],
    "ted": [("layers", "paper_layers[1:]", True), ("metric", "cosine", True), ("n_components", 1, True),
            ("contamination", 0.1, True), ("batch_size", 4, False), ("seed", 1, True), ("progress", True, False)],
}
CHANGES["layerwise"] = CHANGES["detector"] = [
    ("tau", 1.0, False), ("metric", "euclidean", True), ("layers", "paper_layers[1:]", True),
    ("score_layers", (5, 6, 7), True), ("batch_size", 4, False), ("unknown_class", "ignore", False),
    ("spread", "mad", True), ("score", "trajectory", True), ("target_fpr", 0.2, True),
]
CHANGES["layerwise-gaussian"] = [
    ("target_fpr", 0.3, False), ("aggregate", "mean", True), ("layers", "paper_layers[1:]", True), ("folds", 3, True),
    ("batch_size", 4, False), ("seed", 1, True),
]
CASES = [(name, *change) for name in sorted(CHANGES) for change in CHANGES[name]]


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_setting_is_classified(name):
    assert sorted(make(name).get_params()) == sorted(setting for setting, _, _ in CHANGES[name])


def _decisions(estimator, model, x):
    return np.asarray(estimator.decision_function(model, x), dtype=np.float64)


@pytest.mark.parametrize("name, setting, value, refused", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_setting_changed_after_fit_is_recomputed_or_refused(setup, name, setting, value, refused):
    model, _, reference, x = setup
    if value == "paper_layers[1:]":
        value = list(model.paper_layers[1:])
    estimator = fit(make(name), model, reference)
    setattr(estimator, setting, value)
    if refused:
        with pytest.raises((ValueError, NotFittedError), match=rf"{setting}: changed after fit.*refit|fit again"):
            estimator.predict(model, x)
        setattr(estimator, setting, copy.deepcopy(make(name).get_params()[setting]))  # set back: accepted again
        estimator.predict(model, x)
    else:
        fresh = fit(make(name, **{setting: value}), model, reference)
        np.testing.assert_allclose(_decisions(estimator, model, x), _decisions(fresh, model, x), equal_nan=True)
        np.testing.assert_array_equal(estimator.predict(model, x), fresh.predict(model, x))


def test_refused_setting_names_both_values_and_set_params_reaches_it(setup):
    model, _, reference, x = setup
    detector = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    assert detector.set_params(spread="mad") is detector
    with pytest.raises(ValueError, match=r"spread: changed after fit \(fitted with 'std', now 'mad'\).*refit"):
        detector.predict(model, x)
    with pytest.raises(ValueError, match=r"spread: changed after fit"):  # features-only scoring too
        detector.thresholds()
    with pytest.raises(ValueError, match=r"set_params: unknown setting\(s\) \['sigma'\]"):
        detector.set_params(sigma=1.0)
    strip = fit(make("strip"), model, reference).set_params(alpha=0.3)
    with pytest.raises(ValueError, match=r"alpha: changed after fit \(fitted with 0.5, now 0.3\)"):
        strip.suspicion(model, x)
    with pytest.raises(ValueError, match=r"set_params: unknown setting"):
        strip.set_params(sigma=1.0)


def test_a_list_setting_mutated_in_place_after_fit_is_seen(setup):
    model, _, reference, x = setup
    layers = list(model.paper_layers)
    detector = LayerwiseDetector(layers=layers, unknown_class="flag").fit(model, reference)
    layers.pop(0)  # the detector holds the same list
    with pytest.raises(ValueError, match="layers: changed after fit"):
        detector.predict(model, x)
    assert same_setting([3, 5], (3, 5)) and not same_setting([3, 5], (3, 6))


def test_target_fpr_changed_after_fit_asks_for_calibration(setup):
    model, _, reference, x = setup
    detector = LayerwiseDetector(target_fpr=0.1, unknown_class="flag").fit(model, reference)
    detector.target_fpr = 0.3
    with pytest.raises(ValueError, match=r"target_fpr: changed after fit \(calibrated for 0.1, now 0.3\)"):
        detector.predict(model, x)
    detector.calibrate(model, torch.rand(40, 3, 32, 32))  # a calibration for the new rate: accepted
    assert detector.calibration_ == "held-out"
    detector.predict(model, x)
    detector.target_fpr = None  # back to tau: the same as a fresh fit without target_fpr
    fresh = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    np.testing.assert_array_equal(detector.predict(model, x), fresh.predict(model, x))


def test_layerwise_tau_changed_after_fit_takes_effect_at_the_next_call(setup):
    model, _, reference, x = setup
    defense = fit(make("layerwise"), model, reference)
    before = defense.decision_function(model, x)
    defense.tau = 0.0
    np.testing.assert_allclose(defense.decision_function(model, x) - 0.0,
                               -defense.suspicion(model, x), equal_nan=True)
    np.testing.assert_allclose(defense.decision_function(model, x), before - 2.5, equal_nan=True)


# ---------------------------------------------------------------------- clone
@pytest.mark.parametrize("name", sorted(FAST))
def test_clone_round_trip(setup, name):
    model, _, reference, _ = setup
    original = make(name, batch_size=7)
    twin = clone(original)
    assert type(twin) is type(original) and twin is not original
    assert all(same_setting(twin.get_params()[k], v) for k, v in original.get_params().items())
    if name != "detector":  # the defenses' repr lists their settings
        assert repr(twin) == repr(original)
    fitted = fit(make(name), model, reference)
    unfitted = clone(fitted)
    assert not any(key.endswith("_") for key in vars(unfitted))  # learned state is not carried over
    with pytest.raises(NotFittedError):
        unfitted.predict(model, torch.rand(2, 3, 32, 32))


def test_fingerprint_docstring_examples_run():
    import doctest

    import analysis.fingerprint

    result = doctest.testmod(analysis.fingerprint, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_user_defense_that_renames_a_setting_still_fits():
    from analysis.defenses.base import StatelessDefense

    class Renamed(StatelessDefense):
        def __init__(self, strength: float = 1.0) -> None:
            self._strength = strength  # not get_params-compatible: no settings check, but no crash either

        def _detect(self, model, images):
            return np.zeros(len(images)), np.ones(len(images))

    model = build_model("resnet18", 3, 2).eval()
    defense = Renamed().fit(model)
    assert defense.fit_params_ is None and defense.model_fingerprint_ is not None
    assert not defense.predict(model, torch.rand(2, 3, 32, 32)).any()
