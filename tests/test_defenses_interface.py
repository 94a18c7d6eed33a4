"""The shared interface: registry, settings, bad inputs, seeding, and the layer-wise detector as one of the defenses."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from analysis.data import LabeledImages
from analysis.defenses import DEFENSES, DETECTORS, RECENT_DEFENSES, Defense, build_defense
from analysis.detection import LayerwiseDetector
from analysis.models import build_model
from analysis.training import TrainConfig

N = 16  # inputs per test
FAST = {  # small budgets so every defense runs in well under a second here
    "rs": {"n_samples": 4}, "shrinkpad": {}, "fp": {"finetune": TrainConfig(epochs=1)},
    "ac": {"n_components": 2}, "strip": {"n_blends": 4}, "scan": {}, "layerwise": {},
    "scale-up": {}, "ibd-psc": {}, "ted": {"n_components": 2}, "layerwise-gaussian": {"target_fpr": 0.2},
}

THRESHOLD_OF = {  # the defenses that threshold their suspicion score, and where each keeps its threshold
    "scale-up": lambda d: d.threshold, "scan": lambda d: d.threshold, "ted": lambda d: d.threshold_,
    "strip": lambda d: -d.threshold_,  # suspicion = -entropy, flagged when the entropy is below threshold_
    "ac": lambda d: 1.0 - d.size_threshold, "layerwise": lambda d: 2.5, "layerwise-gaussian": lambda d: d.threshold_,
}
# RS, ShrinkPad and Fine-Pruning flag a changed prediction (their decision is a class margin, tested below);
# IBD-PSC thresholds 1 - PSC while its suspicion is -log(1 - PSC), so its decision is a monotone map of the
# suspicion, not a shift (checked in the contract test).


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    return model, reference, torch.rand(N, 3, 32, 32)


def test_registry_holds_the_six_paper_defenses_the_recent_ones_the_layerwise_detector_and_the_gaussian_option():
    assert sorted(DEFENSES) == ["ac", "fp", "rs", "scan", "shrinkpad", "strip"]
    assert sorted(RECENT_DEFENSES) == ["ibd-psc", "scale-up", "ted"]
    assert sorted(DETECTORS) == sorted([*DEFENSES, *RECENT_DEFENSES, "layerwise", "layerwise-gaussian"])
    with pytest.raises(ValueError, match="unknown defense 'nc'"):
        build_defense("nc")
    with pytest.raises(TypeError, match="settings of defense 'rs'"):
        build_defense("rs", sigma=0.1)


def test_paper_defaults():
    assert build_defense("rs").get_params()["n_samples"] == 100 and build_defense("rs").std == 0.1
    assert build_defense("shrinkpad").shrink == 0.1
    fp = build_defense("fp")
    assert fp.prune_ratio == 0.95 and fp.finetune_fraction == 0.05
    assert build_defense("ac").n_components == 10
    strip = build_defense("strip")
    assert (strip.n_blends, strip.alpha, strip.percentile) == (100, 0.5, 10.0)
    assert build_defense("scan").threshold == pytest.approx(np.e)
    assert build_defense("layerwise").tau == 2.5
    assert build_defense("layerwise").get_params() == LayerwiseDetector().get_params()  # the paper's default
    assert build_defense("layerwise", spread="mad").spread == "mad"


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_has_the_same_shape(setup, name):
    model, reference, x = setup
    settings = dict(FAST[name])
    if name == "layerwise":
        settings["unknown_class"] = "flag"  # random images may be predicted as any class
    defense = build_defense(name, **settings)
    assert defense.fit(model, reference, train=reference) is defense
    flagged = defense.predict(model, x)
    scores = defense.suspicion(model, x)
    assert flagged.dtype == bool and flagged.shape == (N,)
    assert scores.dtype == np.float64 and scores.shape == (N,)
    np.testing.assert_array_equal(defense.score_samples(model, x), -scores)  # scikit-learn: higher = more normal
    decision = defense.decision_function(model, x)  # scikit-learn's sign: negative exactly where flagged
    assert decision.dtype == np.float64 and decision.shape == (N,)
    np.testing.assert_array_equal(decision < 0, flagged)
    if name in THRESHOLD_OF:  # a thresholded score: the decision is the threshold minus the suspicion
        np.testing.assert_allclose(decision, THRESHOLD_OF[name](defense) - scores)
    if name == "ibd-psc":  # flagged when PSC > threshold, scored -log(1 - PSC): decision = (1 - PSC) - (1 - threshold)
        np.testing.assert_allclose(decision, np.exp(-scores) - (1.0 - defense.threshold))
    found = defense.detect(model, LabeledImages(x, torch.zeros(N, dtype=torch.long)))
    np.testing.assert_array_equal(found.flagged, flagged)
    assert found.predicted.shape == (N,)
    assert all(k.endswith("_") for k in vars(defense) if k not in defense.get_params())


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_settings_after_the_first_are_keyword_only(name):
    """As in scikit-learn: ``STRIP(50, alpha=0.4)``, never ``STRIP(50, 0.4)``, so a setting cannot land in another's slot."""
    import inspect

    kinds = [p.kind for p in inspect.signature(type(build_defense(name))).parameters.values()]
    assert kinds[0] == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(kind == inspect.Parameter.KEYWORD_ONLY for kind in kinds[1:])


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_bad_inputs_raise_clear_errors(setup, name):
    model, reference, x = setup
    defense = build_defense(name, **FAST[name])
    with pytest.raises(NotFittedError, match="not fitted"):  # the same error as scikit-learn's and the detector's
        defense.predict(model, x)
    defense.fit(model, reference, train=reference)
    with pytest.raises(ValueError, match=r"x: expected images of shape \[N, C, H, W\]"):
        defense.predict(model, x[0])
    with pytest.raises(ValueError, match="x: got no images"):
        defense.predict(model, x[:0])
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x: contains NaN"):
        defense.predict(model, nan)
    if name not in ("rs", "shrinkpad"):  # the two pre-processing defenses learn nothing from the reference
        with pytest.raises(TypeError, match="reference: expected LabeledImages"):
            build_defense(name, **FAST[name]).fit(model, x, train=reference)


@pytest.mark.parametrize("name, setting, value", [
    ("rs", "n_samples", 0), ("rs", "std", -0.1), ("shrinkpad", "shrink", 1.0), ("strip", "alpha", 1.5),
    ("strip", "percentile", 120), ("fp", "prune_ratio", 1.0), ("ac", "reduction", "tsne"),
    ("ac", "size_threshold", 0.7), ("scan", "statistic", "max"),
])
def test_bad_settings_are_named(setup, name, setting, value):
    model, reference, _ = setup
    with pytest.raises(ValueError, match=setting):
        build_defense(name, **{setting: value}).fit(model, reference, train=reference)


@pytest.mark.parametrize("name", ["rs", "shrinkpad", "strip", "ac"])
def test_seeded_defenses_are_deterministic(setup, name):
    model, reference, x = setup
    a = build_defense(name, seed=3, **FAST[name]).fit(model, reference).suspicion(model, x)
    b = build_defense(name, seed=3, **FAST[name]).fit(model, reference).suspicion(model, x)
    np.testing.assert_array_equal(a, b)


def test_the_registered_layerwise_defense_is_the_detector_itself():
    """No adapter: the registry's "layerwise" is the paper's detector, a Defense with the detector's own settings."""
    assert DETECTORS["layerwise"] is LayerwiseDetector and issubclass(LayerwiseDetector, Defense)
    settings = {"tau": 1.5, "metric": "cosine", "layers": None, "score_layers": [1, 2], "batch_size": 7,
                "unknown_class": "flag", "spread": "mad", "score": "trajectory", "target_fpr": 0.1}
    assert build_defense("layerwise", **settings).get_params() == settings


def test_layerwise_suspicion_is_the_normalised_raw_score(setup):
    model, reference, x = setup
    detector = build_defense("layerwise", unknown_class="flag").fit(model, reference, train=reference)  # train: ignored
    raw = LayerwiseDetector(unknown_class="flag").fit(model, reference).detect(model, x)
    mu = np.array([detector.mu_.get(int(t), np.nan) for t in raw.predicted])
    sigma = np.array([detector.sigma_.get(int(t), np.nan) for t in raw.predicted])
    np.testing.assert_allclose(detector.suspicion(model, x), (mu - raw.scores) / sigma)
    np.testing.assert_array_equal(detector.suspicion(model, x), raw.suspicion)  # Detection.suspicion: the same
    np.testing.assert_array_equal(detector.suspicion_from_scores(raw.scores, raw.predicted), raw.suspicion)
    np.testing.assert_array_equal(detector.predict(model, x), raw.flagged)
    known = ~np.isnan(mu)
    np.testing.assert_array_equal(detector.suspicion(model, x)[known] > 2.5, raw.flagged[known])


def test_a_class_without_reference_samples_is_decided_by_its_flag(setup):
    """NaN suspicion (no reference samples): the decision's sign follows unknown_class, as predict does."""
    model, reference, x = setup
    predicted = LayerwiseDetector().fit(model, reference).detect(model, x).predicted
    missing = int(np.bincount(predicted).argmax())
    keep = torch.as_tensor(reference.y.numpy() != missing)
    partial = LabeledImages(reference.x[keep], reference.y[keep])
    for unknown_class, flagged in (("flag", True), ("ignore", False)):
        detector = LayerwiseDetector(unknown_class=unknown_class).fit(model, partial)
        unknown = predicted == missing
        assert np.isnan(detector.suspicion(model, x)[unknown]).all()
        decision = detector.decision_function(model, x)
        np.testing.assert_array_equal(decision < 0, detector.predict(model, x))
        assert (decision[unknown] < 0).all() == flagged


def test_suspicion_of_a_model_and_of_raw_scores_do_not_mix(setup):
    """suspicion(model, x) for every detector; raw scores go through suspicion_from_scores, never the wrong way."""
    model, reference, x = setup
    detector = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    found = detector.detect(model, x)
    with pytest.raises(TypeError, match="suspicion_from_scores"):
        detector.suspicion(x, x)
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):  # another defense given raw scores
        build_defense("scan").fit(model, reference).suspicion(found.scores, found.predicted)
    with pytest.warns(DeprecationWarning, match="suspicion_from_scores"):  # the old call: the same values, renamed
        old = detector.suspicion(found.scores, found.predicted)
    np.testing.assert_array_equal(old, found.suspicion)
    with pytest.warns(DeprecationWarning, match="detector_"):  # the removed adapter's attribute: the detector itself
        assert detector.detector_ is detector


@pytest.mark.parametrize("settings", [{}, {"metric": "euclidean"}, {"score": "trajectory"}])
def test_detector_score_samples_is_higher_for_more_normal_inputs(setup, settings):
    """scikit-learn's direction whatever the raw score's: the standardised score, signed so that higher = more
    normal; decision_function adds tau, so it is negative exactly where an input is flagged; Detection.suspicion is
    its negative."""
    model, reference, x = setup
    detector = LayerwiseDetector(unknown_class="flag", **settings).fit(model, reference)
    found = detector.detect(model, x)
    mu = np.array([detector.mu_[int(t)] for t in found.predicted])
    sigma = np.array([detector.sigma_[int(t)] for t in found.predicted])
    sign = 1.0 if settings == {} else -1.0  # summed cosine similarity: higher = more normal; distances: lower
    np.testing.assert_allclose(detector.score_samples(model, x), sign * (found.scores - mu) / sigma)
    np.testing.assert_allclose(detector.decision_function(model, x), detector.score_samples(model, x) + 2.5)
    np.testing.assert_array_equal(found.suspicion, -detector.score_samples(model, x))


def test_class_margin_and_the_ties_that_argmax_settles():
    """The decision of a defense that flags a changed prediction: how far the plain class leads its best rival."""
    from analysis.defenses.base import class_margin, signed_margin

    logits = torch.tensor([[3.0, 1.0, 2.0], [1.0, 3.0, 3.0], [1.0, 3.0, 3.0], [0.0, 5.0, 1.0]])
    plain = torch.tensor([0, 1, 2, 0])
    margin = class_margin(logits, plain)
    np.testing.assert_array_equal(margin, [1.0, 0.0, 0.0, -5.0])  # 3-2, 3-3, 3-3, 0-5
    changed = (logits.argmax(1) != plain).numpy()  # argmax takes the first of tied classes: row 2 loses its tie
    assert changed.tolist() == [False, False, True, True]
    decision = signed_margin(margin, changed)
    np.testing.assert_array_equal(decision < 0, changed)
    assert decision[1] == 0.0 and decision[2] == np.nextafter(0.0, -1.0)  # only the lost tie moves
    np.testing.assert_array_equal(signed_margin(np.array([np.nan, np.nan]), np.array([True, False])) < 0, [True, False])
