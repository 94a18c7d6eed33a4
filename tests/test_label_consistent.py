"""Label-Consistent: target-class images, PGD-perturbed against a benign model, stamped, labels kept."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from analysis.attacks import AttackContext, BadNets, LabelConsistent, build_attack
from analysis.attacks.label_consistent import adversarial_training_loss, pgd_away_from_label
from analysis.training import TrainConfig

EPS = 16 / 255


@pytest.fixture(scope="module")
def small(digits):
    return digits.train.subset(np.arange(0, len(digits.train), 4))  # 270 images, 28 of class 2


def _context(cache_dir=None, epochs=1):
    return AttackContext(config=TrainConfig(epochs=epochs, seed=0), arch="resnet18", width=4, device="cpu",
                         progress=False, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def prepared(small, tmp_path_factory):
    """LC prepared on ``small`` with a 1-epoch benign model and 3 PGD steps, cached in a temporary folder."""
    cache = tmp_path_factory.mktemp("lc-cache")
    attack = LabelConsistent(pgd_steps=3)
    attack.prepare(small, 10, _context(cache))
    return attack, cache


def test_paper_defaults():
    attack = build_attack("lc")
    assert isinstance(attack, LabelConsistent) and attack.clean_label and not attack.controls_training
    assert (attack.target, attack.rate, attack.eps) == (2, 0.05, 16 / 255)
    assert (attack.trigger.size, attack.trigger.value) == (2, 1.0)
    assert attack.surrogate == "standard"  # the paper's "benign model"; "adversarial" is an option


def test_poisons_only_target_images_and_keeps_every_label(small, prepared):
    attack, _ = prepared
    poisoned = attack.poison_training_set(small)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.05 * len(small)) == 14  # a share of the whole set, drawn from the target class
    assert np.all(small.y.numpy()[idx] == 2) and np.all(poisoned.poisoned_labels == 2)
    assert torch.equal(poisoned.data.y, small.y)  # clean label: no label changes
    rest = np.setdiff1d(np.arange(len(small)), idx)
    assert torch.equal(poisoned.data.x[rest], small.x[rest])
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1


def test_perturbation_within_eps_then_trigger_stamped(small, prepared):
    attack, _ = prepared
    poisoned = attack.poison_training_set(small)
    idx = poisoned.poisoned_indices
    delta = attack.perturbed - small.x[idx]  # before stamping
    assert 0 < float(delta.abs().max()) <= min(EPS, 3 * 2 / 255) + 1e-6  # 3 steps of 2/255, within ε
    mask = BadNets().trigger_mask(32, 32)
    assert torch.all(poisoned.data.x[idx][:, :, mask] == 1.0)  # stamp present
    torch.testing.assert_close(poisoned.data.x[idx][:, :, ~mask], attack.perturbed[:, :, ~mask])


def test_pgd_raises_the_true_label_loss_within_eps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x = torch.rand(6, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    adv = pgd_away_from_label(model, x, y, eps=0.1, step=0.05, steps=4)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    assert model.training  # mode restored


def test_second_prepare_loads_the_cache_instead_of_training(small, prepared, monkeypatch):
    first, cache = prepared
    names = sorted(p.name.split("-")[1] + p.suffix for p in cache.iterdir())
    assert names == ["benign.json", "benign.safetensors", "perturbed.json", "perturbed.safetensors"]
    import analysis.training as training

    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    second = LabelConsistent(pgd_steps=3)
    second.prepare(small, 10, _context(cache))
    assert second.loaded_from_cache and torch.equal(first.perturbed, second.perturbed)


def test_other_pgd_settings_reuse_the_cached_benign_model(small, prepared, monkeypatch):
    _, cache = prepared
    import analysis.training as training

    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    other = LabelConsistent(pgd_steps=1, pgd_step=1 / 255)
    other.prepare(small, 10, _context(cache))
    assert not other.loaded_from_cache
    assert float((other.perturbed - small.x[other.perturbed_indices]).abs().max()) <= 1 / 255 + 1e-6


def test_adversarial_training_loss_is_the_loss_on_pgd_examples():
    """Madry's objective: the hook ignores the clean logits and returns the cross-entropy of the PGD
    examples (budget eps, steps of 2.5 eps / steps), which is at least the clean loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x = torch.rand(6, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = adversarial_training_loss(eps=0.1, steps=4)(model, x, y, model(x))
    adv = pgd_away_from_label(model, x, y, eps=0.1, step=2.5 * 0.1 / 4, steps=4)
    torch.testing.assert_close(loss, F.cross_entropy(model(adv), y))
    assert loss > F.cross_entropy(model(x), y)
    loss.backward()  # differentiable in the weights
    assert model[1].weight.grad is not None


def test_adversarial_surrogate_trains_with_the_hook_and_caches_apart(small, tmp_path, monkeypatch):
    cache = tmp_path
    LabelConsistent(pgd_steps=1).prepare(small, 10, _context(cache))  # the standard surrogate, cached
    import analysis.training as training

    real_train, hooks = training.train, []

    def spy(*args, **kwargs):
        hooks.append(kwargs.get("loss_hook"))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    robust = LabelConsistent(pgd_steps=3, surrogate="adversarial", surrogate_steps=1)
    robust.prepare(small, 10, _context(cache))
    assert len(hooks) == 1 and hooks[0] is not None  # not the cached standard model
    assert not robust.loaded_from_cache
    assert len(list(cache.glob("lc-benign-*.json"))) == 2
    assert robust.settings()["surrogate"] == "adversarial"


def test_test_time_trigger_is_the_badnets_square_without_perturbation(small):
    x = small.x[:3]
    assert torch.equal(LabelConsistent().apply_trigger(x), BadNets().apply_trigger(x))
    test = LabelConsistent().poisoned_test_set(small)
    assert len(test) == int((small.y != 2).sum())


def test_poisoning_needs_prepare_on_the_same_set(small, prepared):
    with pytest.raises(RuntimeError, match="call prepare"):
        LabelConsistent().poison_training_set(small)
    attack, _ = prepared
    shifted = small.subset(np.arange(len(small)))
    shifted.x[attack.perturbed_indices] *= 0.5  # same labels, other images
    with pytest.raises(RuntimeError, match="call prepare"):
        attack.poison_training_set(shifted)


@pytest.mark.parametrize("settings, message", [
    ({"eps": 0}, "eps: expected"), ({"eps": 1.5}, "eps"), ({"pgd_step": 0.5}, "pgd_step"),
    ({"pgd_steps": 0}, "pgd_steps"), ({"rate": 0.0}, "rate"), ({"target": -1}, "target"),
    ({"trigger_size": 0}, "size"), ({"surrogate": "robust"}, "surrogate: expected one of"),
    ({"surrogate_eps": 0}, "surrogate_eps"), ({"surrogate_steps": 0}, "surrogate_steps"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        LabelConsistent(**settings)


def test_bad_data(small):
    with pytest.raises(ValueError, match=r"rate: 81 images to poison but only 28 target-class images exist"):
        LabelConsistent(rate=0.3).select_indices(small.y.numpy())
    with pytest.raises(ValueError, match="does not fit 2x2 images"):
        LabelConsistent().apply_trigger(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="target: class 12"):
        LabelConsistent(target=12).prepare(small, 10, _context())
