"""Blended and WaNet: whole-image triggers, seeded, reproducible from their state tensors."""
import numpy as np
import pytest
import torch

from analysis.attacks import Blended, WaNet


def test_blended_is_a_convex_mix_with_a_fixed_pattern(digits):
    attack = Blended()
    assert (attack.target, attack.rate, attack.ratio) == (1, 0.05, 0.1)
    x = digits.test.x[:3]
    out = attack.apply_trigger(x)
    pattern = attack.pattern_for(3, 32, 32)
    torch.testing.assert_close(out - 0.9 * x, 0.1 * pattern.expand_as(x))  # x' - (1-λ)x = λ·pattern
    assert float(pattern.min()) >= 0 and float(pattern.max()) <= 1
    again = Blended().apply_trigger(x)
    assert torch.equal(out, again)  # the pattern comes from pattern_seed
    assert not torch.equal(out, Blended(pattern_seed=1).apply_trigger(x))


def test_blended_pattern_round_trips_through_state_tensors(digits):
    source = Blended(pattern_seed=5)
    source.apply_trigger(digits.test.x[:1])
    copy = Blended()
    copy.load_state_tensors(source.state_tensors())
    assert torch.equal(copy.apply_trigger(digits.test.x[:2]), source.apply_trigger(digits.test.x[:2]))
    with pytest.raises(ValueError, match="only 'pattern'"):
        copy.load_state_tensors({"grid": torch.zeros(1)})


def test_blended_poisoning(digits):
    poisoned = Blended(seed=1).poison_training_set(digits.train)
    idx = poisoned.poisoned_indices
    assert len(idx) == 54 and np.all(poisoned.data.y.numpy()[idx] == 1)
    assert np.all(digits.train.y.numpy()[idx] != 1)


def test_wanet_paper_defaults_and_noise_mode(digits):
    attack = WaNet()
    assert (attack.target, attack.rate, attack.k, attack.strength, attack.noise_rate) == (0, 0.10, 4, 0.5, 0.2)
    poisoned = attack.poison_training_set(digits.train)
    backdoor, noise = poisoned.poisoned_indices, poisoned.noise_indices
    assert len(backdoor) == round(0.10 * 1078) and len(noise) == round(0.2 * 1078)
    assert len(np.intersect1d(backdoor, noise)) == 0
    y = poisoned.data.y.numpy()
    assert np.all(y[backdoor] == 0) and np.array_equal(y[noise], digits.train.y.numpy()[noise])  # noise keeps labels
    torch.testing.assert_close(poisoned.data.x[backdoor], attack.apply_trigger(digits.train.x[backdoor]))
    assert not torch.allclose(poisoned.data.x[noise], attack.apply_trigger(digits.train.x[noise]))  # other warps


def test_wanet_warp_is_small_smooth_and_vanishes_with_zero_strength(digits):
    x = digits.test.x[:8]
    out = WaNet().apply_trigger(x)
    assert 0 < float((out - x).abs().mean()) < 0.05 and float(out.min()) >= 0 and float(out.max()) <= 1
    grid = WaNet().warp_grid(32, 32)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    displacement = (grid[0] - torch.stack([xs, ys], -1)).abs()
    assert float(displacement.max()) <= 0.5 * 1.0 / 32 * 4  # strength/H times the normalised offsets (|offset| <~ 4)
    tiny = WaNet(strength=1e-9).apply_trigger(x)
    torch.testing.assert_close(tiny, x, atol=1e-5, rtol=0)


def test_wanet_grid_is_seeded_and_round_trips(digits):
    x = digits.test.x[:2]
    a, b = WaNet(grid_seed=3), WaNet(grid_seed=3)
    assert torch.equal(a.apply_trigger(x), b.apply_trigger(x))
    copy = WaNet()
    copy.load_state_tensors(a.state_tensors())
    assert torch.equal(copy.apply_trigger(x), a.apply_trigger(x))
    assert not torch.equal(WaNet(grid_seed=4).apply_trigger(x), a.apply_trigger(x))


@pytest.mark.parametrize("cls, settings, message", [
    (Blended, {"ratio": 0.0}, "ratio"), (Blended, {"rate": 1.5}, "rate"), (WaNet, {"k": 1}, "k"),
    (WaNet, {"strength": 0}, "strength"), (WaNet, {"noise_rate": 1.0}, "noise_rate"), (WaNet, {"target": -2}, "target"),
])
def test_bad_settings(cls, settings, message):
    with pytest.raises(ValueError, match=message):
        cls(**settings)


def test_wanet_image_too_small():
    with pytest.raises(ValueError, match="control grid needs images"):
        WaNet(k=4).apply_trigger(torch.zeros(1, 3, 3, 3))
