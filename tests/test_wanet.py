"""WaNet: a fixed smooth warp from a seeded k×k control grid, with noise-mode samples that keep their labels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.attacks import WaNet, build_attack
from analysis.attacks.wanet import WaNetTrainingSet, identity_grid


def test_paper_defaults():
    attack = build_attack("wanet")
    assert isinstance(attack, WaNet)
    assert (attack.target, attack.rate, attack.k, attack.strength, attack.noise_rate) == (0, 0.10, 4, 0.5, 0.2)


def test_control_grid_is_normalised_uniform_noise():
    grid = WaNet(grid_seed=1).control_grid
    assert grid.shape == (1, 2, 4, 4)
    torch.testing.assert_close(grid.abs().mean(), torch.tensor(1.0))  # divided by its mean |offset|
    assert torch.equal(grid, WaNet(grid_seed=1).control_grid) and not torch.equal(grid, WaNet(grid_seed=2).control_grid)


def test_zero_strength_is_the_identity_warp(digits):
    x = digits.test.x[:4]
    torch.testing.assert_close(WaNet(strength=0).warp_grid(32, 32), identity_grid(32, 32))
    torch.testing.assert_close(WaNet(strength=0).apply_trigger(x), x, atol=1e-5, rtol=0)


def test_identity_grid_resamples_an_image_unchanged():
    x = torch.rand(2, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    out = F.grid_sample(x, identity_grid(7, 5).expand(2, -1, -1, -1), align_corners=True)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_warp_moves_pixels_by_at_most_strength_times_the_largest_offset_over_h(digits):
    attack = WaNet()
    displacement = (attack.warp_grid(32, 32) - identity_grid(32, 32)).abs()
    bound = attack.strength * float(attack.control_grid.abs().max()) / 32 * 1.3  # bicubic may overshoot the knots
    assert 0 < float(displacement.max()) <= bound
    x = digits.test.x[:8]
    out = attack.apply_trigger(x)
    assert not torch.allclose(out, x, atol=1e-3)  # the trigger is present ...
    assert float((out - x).abs().mean()) < 0.05  # ... and small
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_warp_is_the_grid_sample_of_the_documented_grid(digits):
    attack = WaNet(k=4, strength=0.5)
    flow = F.interpolate(attack.control_grid, size=(32, 32), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    grid = (identity_grid(32, 32) + 0.5 * flow / 32).clamp(-1, 1)
    x = digits.test.x[:2]
    expected = F.grid_sample(x, grid.expand(2, -1, -1, -1), align_corners=True)
    torch.testing.assert_close(attack.apply_trigger(x), expected.clamp(0, 1))


def test_grid_round_trips_through_state_tensors(digits):
    x = digits.test.x[:2]
    source = WaNet(grid_seed=3)
    copy = WaNet()
    copy.load_state_tensors(source.state_tensors())
    assert torch.equal(copy.apply_trigger(x), source.apply_trigger(x))
    with pytest.raises(ValueError, match="only 'control_grid'"):
        copy.load_state_tensors({"pattern": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"expected shape \(1, 2, 4, 4\)"):
        copy.load_state_tensors({"control_grid": torch.zeros(1, 2, 3, 3)})


def test_poisoned_training_set_with_noise_mode(digits):
    attack = WaNet()
    poisoned = attack.poison_training_set(digits.train)
    assert isinstance(poisoned, WaNetTrainingSet)
    backdoor, noise = poisoned.poisoned_indices, poisoned.noise_indices
    assert len(backdoor) == round(0.10 * 1078) == 108 and len(noise) == round(0.2 * 1078) == 216
    assert poisoned.rate == pytest.approx(108 / 1078)  # the rate counts backdoor samples only
    assert len(np.intersect1d(backdoor, noise)) == 0
    assert np.all(digits.train.y.numpy()[backdoor] != 0)
    y = poisoned.data.y.numpy()
    assert np.all(y[backdoor] == 0) and np.all(poisoned.poisoned_labels == 0)
    assert np.array_equal(y[noise], digits.train.y.numpy()[noise])  # noise samples keep their labels
    torch.testing.assert_close(poisoned.data.x[backdoor], attack.apply_trigger(digits.train.x[backdoor]))
    warped_noise = poisoned.data.x[noise]
    assert not torch.allclose(warped_noise, digits.train.x[noise], atol=1e-3)  # warped ...
    assert not torch.allclose(warped_noise, attack.apply_trigger(digits.train.x[noise]), atol=1e-3)  # ... differently
    rest = np.setdiff1d(np.arange(len(digits.train)), np.union1d(backdoor, noise))
    assert torch.equal(poisoned.data.x[rest], digits.train.x[rest]) and torch.equal(poisoned.data.y[rest], digits.train.y[rest])
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1


def test_noise_mode_can_be_switched_off(digits):
    poisoned = WaNet(noise_rate=0.0).poison_training_set(digits.train)
    assert len(poisoned.noise_indices) == 0
    rest = np.setdiff1d(np.arange(len(digits.train)), poisoned.poisoned_indices)
    assert torch.equal(poisoned.data.x[rest], digits.train.x[rest])


def test_poisoning_is_deterministic(digits):
    a, b = WaNet(seed=4).poison_training_set(digits.train), WaNet(seed=4).poison_training_set(digits.train)
    assert np.array_equal(a.poisoned_indices, b.poisoned_indices) and np.array_equal(a.noise_indices, b.noise_indices)
    assert torch.equal(a.data.x, b.data.x)
    c = WaNet(seed=5).poison_training_set(digits.train)
    assert not np.array_equal(a.noise_indices, c.noise_indices)


@pytest.mark.parametrize("settings, message", [
    ({"k": 1}, "k: expected a control-grid size"), ({"k": 2.5}, "k"), ({"strength": -0.1}, "strength"),
    ({"noise_rate": 1.0}, "noise_rate"), ({"noise_rate": -0.1}, "noise_rate"), ({"target": -2}, "target"),
    ({"rate": 1.0}, "rate"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        WaNet(**settings)


def test_bad_data(digits):
    with pytest.raises(ValueError, match="a 4x4 control grid needs images of at least that size, got 3x3"):
        WaNet(k=4).apply_trigger(torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="noise_rate: 97 noise samples but only 90"):
        WaNet(rate=0.1, noise_rate=0.97).poison_training_set(digits.train.subset(np.arange(100)))


def test_digits_runs_wanet_without_noise_mode_and_other_datasets_keep_the_paper_settings():
    from analysis.attacks import dataset_attack_settings

    assert dataset_attack_settings("digits", "wanet") == {"noise_rate": 0.0}
    assert dataset_attack_settings("npz", "wanet") == {}
    assert dataset_attack_settings("digits", "badnets") == {}
    dataset_attack_settings("digits", "wanet")["noise_rate"] = 0.5  # a copy: the table is not changed
    assert dataset_attack_settings("digits", "wanet") == {"noise_rate": 0.0}
