"""The contract every attack in the registry keeps (``analysis.attacks.base.Attack``), checked once per attack.

An attack is built with settings only; ``prepare`` (or ``train_model`` for an attack that controls
training) learns what the trigger needs; then

* ``apply_trigger(x)`` maps a float batch ``[B, C, H, W]`` in [0, 1] to a new batch of the same shape in
  [0, 1], leaves ``x`` untouched, changes the images, and refuses anything that is not such a batch;
* ``poison_training_set(train)`` keeps the set's length and order and changes only ``poisoned_indices``
  (sorted, seeded, ``round(rate * n)`` of them), whose labels become the target: a dirty-label attack
  relabels non-target images, a clean-label one (LC) poisons target images and keeps their labels;
* ``poisoned_test_set(test)`` is every non-target test image with the trigger and its true label;
* ``examples(data, n)`` are ``n`` benign non-target images and their triggered versions (Fig. 4);
* ``state_tensors()`` rebuild the same trigger in a fresh attack with the same settings;
* a target the data does not have is refused by name.

The attack-specific tests (``tests/test_<attack>.py``) teach what each trigger *is*.
"""
import numpy as np
import pytest
import torch

from analysis.attacks import ATTACKS, AttackContext, build_attack
from analysis.data import DatasetSplits, LabeledImages
from analysis.detection import LayerwiseDetector
from analysis.models import build_model
from analysis.pipeline import attacked_model
from analysis.training import TrainConfig

#: The smallest budgets that make each attack usable (seconds on a CPU): enough for the plumbing, not for a backdoor.
TINY = {"issba": {"steps": 40, "warmup_steps": 20, "ramp_steps": 10, "width": 4, "batch_size": 32},
        "iad": {"mask_epochs": 1, "width": 4}, "lc": {"pgd_steps": 2}}


def _context(cache_dir=None) -> AttackContext:
    return AttackContext(config=TrainConfig(epochs=1, batch_size=64, seed=0), arch="resnet18", width=4, device="cpu",
                         progress=False, cache_dir=cache_dir)


def _fresh(name: str, **changes):
    return build_attack(name, **{**TINY.get(name, {}), "seed": 3, **changes})


@pytest.fixture(scope="module")
def train(digits) -> LabeledImages:
    return digits.train.subset(np.arange(0, len(digits.train), 4))  # 270 images, every class


@pytest.fixture(scope="module", params=sorted(ATTACKS))
def ready(request, train, tmp_path_factory):
    """``(name, attack)``: each registered attack, prepared on ``train`` with its tiny budget."""
    name = request.param
    attack = _fresh(name)
    context = _context(tmp_path_factory.mktemp(f"{name}-cache"))
    if attack.controls_training:
        torch.manual_seed(0)
        attack.train_model(build_model("resnet18", 10, 4), train, context)  # prepares the trigger itself
    else:
        attack.prepare(train, 10, context)
    return name, attack


def test_the_registry_builds_every_attack_by_name_and_refuses_others():
    for name, cls in ATTACKS.items():
        attack = build_attack(name)
        assert type(attack) is cls and type(attack)(**attack.settings()).settings() == attack.settings()
    with pytest.raises(ValueError, match="attack: expected one of"):
        build_attack("trojan")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_settings_after_the_target_are_keyword_only(name):
    """As in scikit-learn: ``BadNets(2, rate=0.1)``, never ``BadNets(2, 0.1)``, so a setting cannot land in another's slot."""
    import inspect

    kinds = [p.kind for p in inspect.signature(type(build_attack(name))).parameters.values()]
    assert kinds[0] == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for kind in kinds[1:])


def test_trigger_is_a_new_batch_of_the_same_shape_in_the_unit_range(ready, digits):
    _, attack = ready
    x = digits.test.x[:8]
    before = x.clone()
    stamped = attack.apply_trigger(x)
    assert stamped.shape == x.shape and stamped.dtype == torch.float32
    assert float(stamped.min()) >= 0.0 and float(stamped.max()) <= 1.0
    assert torch.equal(x, before)  # the input is left as it was
    assert not torch.equal(stamped, x)  # the trigger changes the images
    with pytest.raises(ValueError, match=r"x: expected images of shape \[N, C, H, W\]"):
        attack.apply_trigger(x[0])
    with pytest.raises(ValueError, match="x"):
        attack.apply_trigger((x * 255).to(torch.uint8))


def test_poisoned_training_set_changes_a_seeded_rate_of_rows_to_the_target(ready, train):
    name, attack = ready
    poisoned = attack.poison_training_set(train)
    idx = poisoned.poisoned_indices
    assert len(poisoned.data) == len(train) and len(idx) == round(attack.rate * len(train))
    assert np.array_equal(idx, np.sort(idx)) and np.all(poisoned.poisoned_labels == attack.target)
    assert np.all(poisoned.data.y.numpy()[idx] == attack.target)
    original = train.y.numpy()[idx]
    assert np.all(original == attack.target) if attack.clean_label else np.all(original != attack.target)
    changed = set(idx.tolist()) | set(getattr(poisoned, "noise_indices", np.empty(0, int)).tolist())
    untouched = np.setdiff1d(np.arange(len(train)), sorted(changed))
    assert torch.equal(poisoned.data.x[untouched], train.x[untouched])
    assert torch.equal(poisoned.data.y[untouched], train.y[untouched])
    again = attack.poison_training_set(train)
    assert np.array_equal(again.poisoned_indices, idx) and torch.equal(again.data.x, poisoned.data.x)
    other_seed = _fresh(name, seed=4).select_indices(train.y.numpy())
    assert not np.array_equal(other_seed, idx)  # the seed draws the rows


def test_poisoned_test_set_is_every_non_target_image_triggered_with_its_true_label(ready, digits):
    _, attack = ready
    test = digits.test.subset(np.arange(60))
    poisoned = attack.poisoned_test_set(test, batch_size=16)  # batching must not matter
    keep = test.y != attack.target
    assert torch.equal(poisoned.y, test.y[keep]) and attack.target not in poisoned.classes
    torch.testing.assert_close(poisoned.x, attack.apply_trigger(test.x[keep]), rtol=0, atol=1e-6)


def test_examples_pair_benign_non_target_images_with_their_triggered_versions(ready, digits):
    _, attack = ready
    benign, poisoned = attack.examples(digits.test, n=3)
    assert benign.shape == poisoned.shape == (3, 3, 32, 32)
    torch.testing.assert_close(poisoned, attack.apply_trigger(benign), rtol=0, atol=1e-6)


def test_state_tensors_rebuild_the_same_trigger(ready, digits):
    name, attack = ready
    fresh = _fresh(name)
    fresh.load_state_tensors(attack.state_tensors())
    x = digits.test.x[:6]
    torch.testing.assert_close(fresh.apply_trigger(x), attack.apply_trigger(x), rtol=0, atol=1e-6)


def test_a_target_the_data_does_not_have_is_refused(ready, digits):
    name, attack = ready
    wrong = type(attack)(**{**attack.settings(), "target": 12})
    wrong.load_state_tensors(attack.state_tensors())
    with pytest.raises(ValueError, match=r"target: class 12 is not among the data's classes"):
        wrong.poisoned_test_set(digits.test)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_pipeline_evaluates_on_the_attacks_own_poisoned_test_set(name, digits):
    """1 epoch on 200 images (ResNet-18 width 4): the attacked model's poisoned test set is the attack's, and the
    evaluation counts every benign and every poisoned input (no backdoor is expected from this budget)."""
    small = DatasetSplits("digits", digits.train.subset(np.arange(200)), digits.reference,
                          digits.test.subset(np.arange(120)), 10)
    run = attacked_model(data=small, attack=_fresh(name), width=4, config=TrainConfig(epochs=1, seed=0),
                         checkpoints=None, progress=False)
    expected = run.attack.poisoned_test_set(small.test)
    assert torch.equal(run.poisoned_test.y, expected.y)
    torch.testing.assert_close(run.poisoned_test.x, expected.x, rtol=0, atol=1e-6)
    detector = LayerwiseDetector().fit(run.model, small.reference)
    assert len(detector.predict(run.model, small.test)) == len(small.test)
    assert len(detector.predict(run.model, run.poisoned_test)) == len(expected)
