"""BadNets and the attack interface every attack shares."""
import numpy as np
import pytest
import torch

from analysis.attacks import BadNets, build_attack


def test_paper_defaults():
    attack = BadNets()
    assert (attack.target, attack.rate, attack.size, attack.value) == (1, 0.05, 2, 1.0)


def test_trigger_is_a_white_2x2_square_bottom_right():
    x = torch.zeros(1, 3, 32, 32)
    out = BadNets().apply_trigger(x)
    changed = (out != x).any(1)[0]
    assert changed.nonzero().tolist() == [[29, 29], [29, 30], [30, 29], [30, 30]]
    assert torch.all(out[0, :, 29:31, 29:31] == 1.0)
    assert torch.equal(x, torch.zeros(1, 3, 32, 32))  # input untouched


def test_poisoned_training_set(digits):
    attack = BadNets(target=1, rate=0.05, seed=3)
    poisoned = attack.poison_training_set(digits.train)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.05 * len(digits.train)) == 54
    assert poisoned.rate == pytest.approx(54 / 1078)
    assert np.all(digits.train.y.numpy()[idx] != 1)  # drawn from the non-target classes
    assert np.all(poisoned.data.y.numpy()[idx] == 1) and np.all(poisoned.poisoned_labels == 1)
    assert torch.all(poisoned.data.x[idx][:, :, 29:31, 29:31] == 1.0)  # trigger present
    untouched = np.setdiff1d(np.arange(len(digits.train)), idx)
    assert torch.equal(poisoned.data.x[untouched], digits.train.x[untouched])
    assert torch.equal(poisoned.data.y[untouched], digits.train.y[untouched])
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1


def test_poisoning_is_deterministic(digits):
    a = BadNets(seed=7).poison_training_set(digits.train)
    b = BadNets(seed=7).poison_training_set(digits.train)
    c = BadNets(seed=8).poison_training_set(digits.train)
    assert np.array_equal(a.poisoned_indices, b.poisoned_indices) and torch.equal(a.data.x, b.data.x)
    assert not np.array_equal(a.poisoned_indices, c.poisoned_indices)


def test_poisoned_test_set_keeps_true_labels_of_non_target_images(digits):
    test = BadNets(target=1).poisoned_test_set(digits.test)
    assert len(test) == int((digits.test.y != 1).sum())
    assert 1 not in test.classes
    assert torch.equal(test.y, digits.test.y[digits.test.y != 1])
    assert torch.all(test.x[:, :, 29:31, 29:31] == 1.0)


def test_gallery_pairs(digits):
    benign, poisoned = BadNets().examples(digits.test, n=3)
    assert benign.shape == poisoned.shape == (3, 3, 32, 32)
    assert torch.equal(poisoned, BadNets().apply_trigger(benign))


@pytest.mark.parametrize(
    "settings, message",
    [({"rate": 0.0}, "rate: expected a poisoning rate in"), ({"rate": 1.0}, "rate"), ({"target": -1}, "target"),
     ({"size": 0}, "size"), ({"value": 2.0}, "value")],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        BadNets(**settings)


def test_bad_data(digits):
    with pytest.raises(ValueError, match=r"target: class 12 is not among the data's classes"):
        BadNets(target=12).poison_training_set(digits.train)
    with pytest.raises(ValueError, match="does not fit 8x8 images"):
        BadNets(size=2, position=(7, 7)).apply_trigger(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        BadNets().apply_trigger(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="attack: expected one of"):
        build_attack("trojan")
