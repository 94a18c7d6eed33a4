"""IAD: generated, input-aware masks and patterns, learned together with the classifier."""
import warnings

import numpy as np
import pytest
import torch

import torch.nn as nn

from analysis.attacks import IAD, AttackContext, build_attack, dataset_attack_settings
from analysis.attacks.iad import EMPTY_MASK_SHARE, EPSILON, diversity_loss, sharpen
from analysis.data import DatasetSplits
from analysis.models import build_model
from analysis.training import TrainConfig

TINY = {"mask_epochs": 1, "width": 4}


def tiny_context() -> AttackContext:
    return AttackContext(config=TrainConfig(epochs=1, batch_size=64, seed=0), progress=False)


@pytest.fixture(scope="module")
def small(digits):
    return DatasetSplits("digits", digits.train.subset(np.arange(200)), digits.reference, digits.test, 10)


@pytest.fixture(scope="module")
def trained(small):
    """IAD after one epoch on 200 images with a ResNet-18 of width 4 (seconds on a CPU)."""
    attack = IAD(seed=3, **TINY)
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4)
    history = attack.train_model(model, small.train, tiny_context())  # runs prepare() itself
    return attack, model, history


def test_paper_defaults():
    attack = build_attack("iad")
    assert isinstance(attack, IAD) and IAD.controls_training
    assert (attack.target, attack.rate, attack.cross_rate, attack.mask_density) == (1, 0.10, 0.10, 0.032)


def test_mask_losses_are_on_sharpened_masks_except_on_digits():
    """IAD's code computes the mask generator's norm and diversity losses after the threshold; on raw outputs
    they are met by values below 0.5 everywhere, which the threshold turns into empty masks."""
    assert IAD().mask_loss_on == "sharpened" and IAD().settings()["mask_loss_on"] == "sharpened"
    assert IAD().mask_lr == 0.001 and IAD().settings()["mask_lr"] == 0.001
    assert dataset_attack_settings("digits", "iad") == {"mask_loss_on": "raw", "mask_lr": 0.01}
    # the settings from before the two options are not written: checkpoints trained with them still match
    assert not {"mask_loss_on", "mask_lr"} & set(IAD(**dataset_attack_settings("digits", "iad")).settings())
    assert IAD(mask_loss_on="raw").settings()["mask_lr"] == 0.001  # any other combination is written
    # a raw mask of 0.4 everywhere: within the density budget before the threshold, empty after it
    raw = torch.full((1, 1, 4, 4), 0.4)
    assert float(torch.relu(raw - 0.032).mean()) > 0.3 and float(sharpen(raw).max()) < 0.02


class _Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 1, *x.shape[2:]), self.value)


def test_empty_masks_are_warned_about(digits):
    attack = IAD()
    attack.mask_net = _Constant(0.3)  # sharpened: below 0.5 everywhere, no pixel triggered
    with pytest.warns(RuntimeWarning, match=r"masks cover 0\.00% of the pixels .* cannot implant"):
        assert attack.check_masks(digits.test.x[:8]) == 0.0
    attack.mask_net = _Constant(0.7)  # every pixel: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert attack.check_masks(digits.test.x[:8]) == 1.0 > EMPTY_MASK_SHARE
    with pytest.raises(RuntimeError, match="mask generator is not trained"):
        IAD().check_masks(digits.test.x[:8])


def test_sharpen_is_a_soft_threshold_at_one_half():
    values = sharpen(torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0]))
    assert values[0] < 1e-3 and values[-1] > 1 - 1e-3
    assert values[2] == pytest.approx(0.5, abs=1e-6)
    assert values[1] < 0.02 and values[3] > 0.98


def test_diversity_loss_is_input_distance_over_output_distance():
    x1, x2 = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.4)  # RMS distance 0.4
    o1, o2 = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.2)  # RMS distance 0.2
    assert float(diversity_loss(x1, x2, o1, o2)) == pytest.approx(2.0, rel=1e-4)
    same = diversity_loss(x1, x2, o1, o1.clone())  # identical outputs: large but finite
    assert float(same) == pytest.approx(0.4 / EPSILON ** 0.5, rel=1e-4)  # EPSILON keeps it finite: 0.4 / sqrt(EPSILON)


def test_untrained_use_is_refused(digits):
    with pytest.raises(RuntimeError, match="generators are not trained yet"):
        IAD().apply_trigger(digits.test.x[:2])
    with pytest.raises(RuntimeError, match="not trained"):
        IAD().poisoned_test_set(digits.test)
    with pytest.raises(RuntimeError, match="not trained"):
        IAD().poison_training_set(digits.train)
    attack = IAD(**TINY)
    attack.prepare(digits.train.subset(np.arange(64)), 10, tiny_context())
    with pytest.raises(RuntimeError, match="not trained"):  # the mask alone is not a trigger
        attack.apply_trigger(digits.test.x[:2])


def test_training_runs_and_records_history(trained):
    attack, model, history = trained
    record = history.last()
    assert record["epoch"] == 1 and np.isfinite(record["loss"])
    assert not model.training and attack.is_trained


def test_trigger_is_the_masked_blend_of_generated_pattern(trained, digits):
    attack = trained[0]
    x = digits.test.x[:4]
    out = attack.apply_trigger(x)
    with torch.no_grad():
        mask, pattern = sharpen(attack.mask_net(x)), attack.pattern_net(x)
    assert torch.allclose(out, x + mask * (pattern - x), atol=1e-6)
    assert mask.shape == (4, 1, 32, 32) and float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert not torch.allclose(out[0] - x[0], out[1] - x[1])  # input-aware: each image its own trigger
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(x, digits.test.x[:4])


def test_batch_split_backdoors_non_target_samples_then_crosses_others():
    attack = IAD(target=1, rate=0.25, cross_rate=0.25)
    y = torch.tensor([1, 0, 2, 1, 3, 4, 1, 5])
    bd, cross = attack._split_batch(y)
    assert bd.tolist() == [1, 2]  # round(0.25 * 8) = 2 non-target positions
    assert cross.tolist() == [0, 3]  # the next two of the remaining positions (labels kept)


def test_training_is_deterministic(trained, small, digits):
    attack = IAD(seed=3, **TINY)
    torch.manual_seed(0)  # the model's initial weights come from the global generator
    model = build_model("resnet18", 10, 4)
    attack.train_model(model, small.train, tiny_context())
    x = digits.test.x[:8]
    assert torch.equal(attack.apply_trigger(x), trained[0].apply_trigger(x))
    for a, b in zip(model.state_dict().values(), trained[1].state_dict().values()):
        assert torch.equal(a, b)


def test_state_tensors_round_trip_gives_identical_triggers(trained, digits):
    tensors = trained[0].state_tensors()
    assert any(k.startswith("mask.") for k in tensors) and any(k.startswith("pattern.") for k in tensors)
    fresh = IAD(seed=3, **TINY)
    fresh.load_state_tensors(tensors)
    x = digits.test.x[:8]
    assert torch.equal(fresh.apply_trigger(x), trained[0].apply_trigger(x))
    with pytest.raises(ValueError, match="shape"):
        IAD(width=8).load_state_tensors(tensors)
    with pytest.raises(ValueError, match="generators' weights"):
        IAD().load_state_tensors({})


def test_static_poisoned_view_and_test_set(trained, digits):
    attack = trained[0]
    poisoned = attack.poison_training_set(digits.train)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.10 * len(digits.train)) and np.all(poisoned.poisoned_labels == 1)
    assert np.all(digits.train.y.numpy()[idx] != 1)
    test = attack.poisoned_test_set(digits.test)
    assert len(test) == int((digits.test.y != 1).sum()) and torch.equal(test.y, digits.test.y[digits.test.y != 1])


def test_mask_cache(digits, tmp_path):
    data = digits.train.subset(np.arange(64))
    context = AttackContext(config=TrainConfig(epochs=1, batch_size=64), progress=False, cache_dir=tmp_path)
    first, second = IAD(**TINY), IAD(**TINY)
    first.prepare(data, 10, context)
    assert len(list(tmp_path.glob("iad-mask-*.safetensors"))) == 1
    second.prepare(data, 10, context)
    for a, b in zip(first.mask_net.state_dict().values(), second.mask_net.state_dict().values()):
        assert torch.equal(a, b)
    # the mask generator trains on the training config's batches, so another batch size is another entry
    other = AttackContext(config=TrainConfig(epochs=1, batch_size=32), progress=False, cache_dir=tmp_path)
    IAD(**TINY).prepare(data, 10, other)
    assert len(list(tmp_path.glob("iad-mask-*.safetensors"))) == 2


@pytest.mark.parametrize(
    "settings, message",
    [({"rate": 0.0}, "rate"), ({"rate": 1.0}, "rate"), ({"target": 1.5}, "target"), ({"cross_rate": 0.95}, "cross_rate"),
     ({"mask_density": 0.0}, "mask_density"), ({"lambda_div": -1}, "lambda_div"), ({"mask_epochs": 0}, "mask_epochs"),
     ({"generator_lr": 0}, "generator_lr"), ({"mask_loss_on": "logits"}, "mask_loss_on"),
     ({"mask_lr": 0}, "mask_lr")],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        IAD(**settings)


def test_bad_data(trained, digits):
    with pytest.raises(ValueError, match=r"target: class 12 is not among"):
        IAD(target=12).prepare(digits.train, 10, tiny_context())
    with pytest.raises(ValueError, match="divisible by 4"):
        trained[0].apply_trigger(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="3-channel images, got 1"):
        trained[0].apply_trigger(torch.zeros(1, 1, 32, 32))
