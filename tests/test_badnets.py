"""BadNets and the attack interface every attack shares."""
import numpy as np
import pytest
import torch

from analysis.attacks import BadNets


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


@pytest.mark.parametrize(
    "settings, message",
    [({"rate": 0.0}, "rate: expected a poisoning rate in"), ({"rate": 1.0}, "rate"), ({"target": -1}, "target"),
     ({"size": 0}, "size"), ({"value": 2.0}, "value")],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        BadNets(**settings)


def test_bad_data(digits):
    with pytest.raises(ValueError, match="does not fit 8x8 images"):
        BadNets(size=2, position=(7, 7)).apply_trigger(torch.zeros(1, 3, 8, 8))
