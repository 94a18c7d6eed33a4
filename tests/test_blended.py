"""Blended: a fixed seeded noise pattern mixed into the whole image, x' = (1 - λ)·x + λ·pattern."""
import numpy as np
import pytest
import torch

from analysis.attacks import Blended, build_attack


def test_paper_defaults():
    attack = build_attack("blended")
    assert isinstance(attack, Blended)
    assert (attack.target, attack.rate, attack.ratio) == (1, 0.05, 0.1)
    assert attack.pattern.shape == (3, 32, 32) and not attack.clean_label and not attack.controls_training


def test_trigger_is_the_convex_mix_with_the_pattern(digits):
    attack = Blended()
    x = digits.test.x[:3]
    out = attack.apply_trigger(x)
    torch.testing.assert_close(out - 0.9 * x, 0.1 * attack.pattern.expand_as(x))  # x' - (1-λ)x = λ·pattern
    assert not torch.equal(out, x)
    assert torch.equal(x, digits.test.x[:3])  # input untouched


def test_hand_computed_pixel():
    attack = Blended(ratio=0.25)
    attack.load_state_tensors({"pattern": torch.full((3, 32, 32), 0.8)})
    out = attack.apply_trigger(torch.full((1, 3, 32, 32), 0.4))
    torch.testing.assert_close(out, torch.full((1, 3, 32, 32), 0.75 * 0.4 + 0.25 * 0.8))  # = 0.5


def test_pattern_is_uniform_noise_drawn_from_its_seed():
    pattern = Blended(pattern_seed=3).pattern
    assert float(pattern.min()) >= 0 and float(pattern.max()) <= 1
    assert 0.45 < float(pattern.mean()) < 0.55 and len(torch.unique(pattern)) > 3000  # noise, not a constant
    assert torch.equal(pattern, Blended(pattern_seed=3).pattern)
    assert not torch.equal(pattern, Blended(pattern_seed=4).pattern)


def test_pattern_round_trips_through_state_tensors(digits):
    source = Blended(pattern_seed=5)
    copy = Blended()
    assert not torch.equal(copy.pattern, source.pattern)
    copy.load_state_tensors(source.state_tensors())
    assert torch.equal(copy.apply_trigger(digits.test.x[:2]), source.apply_trigger(digits.test.x[:2]))
    with pytest.raises(ValueError, match="only 'pattern'"):
        copy.load_state_tensors({"grid": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"expected shape \(3, 32, 32\)"):
        copy.load_state_tensors({"pattern": torch.zeros(3, 8, 8)})


def test_poisoned_training_set(digits):
    poisoned = Blended(seed=1).poison_training_set(digits.train)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.05 * len(digits.train)) == 54
    assert np.all(digits.train.y.numpy()[idx] != 1)  # drawn from the non-target classes
    assert np.all(poisoned.data.y.numpy()[idx] == 1) and np.all(poisoned.poisoned_labels == 1)
    torch.testing.assert_close(poisoned.data.x[idx], Blended().apply_trigger(digits.train.x[idx]))
    untouched = np.setdiff1d(np.arange(len(digits.train)), idx)
    assert torch.equal(poisoned.data.x[untouched], digits.train.x[untouched])
    assert torch.equal(poisoned.data.y[untouched], digits.train.y[untouched])
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1


@pytest.mark.parametrize("settings, message", [
    ({"ratio": 0.0}, "ratio: expected a blend ratio"), ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"),
    ({"rate": 1.5}, "rate"), ({"rate": 0.0}, "rate"), ({"target": -2}, "target"), ({"image_shape": (3, 32)}, "image_shape"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Blended(**settings)


def test_bad_data(digits):
    with pytest.raises(ValueError, match="the blend pattern is 32x32, got 16x16 images"):
        Blended().apply_trigger(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="3 channels, got 1"):
        Blended().apply_trigger(torch.zeros(1, 1, 32, 32))
