"""The adaptive attack: BadNets trained with (1-β)·L_org + β·L_cd (cosine distance to the target's centroids)."""
import numpy as np
import pytest
import torch

from analysis.attacks import AdaptiveBadNets, AttackContext, BadNets, build_attack
from analysis.features import extract_features
from analysis.models import build_model
from analysis.training import TrainConfig, train


@pytest.fixture(scope="module")
def small(digits):
    return digits.train.subset(np.arange(0, len(digits.train), 4))  # 270 training images


def _context(epochs):
    return AttackContext(config=TrainConfig(epochs=epochs, seed=0), arch="resnet18", width=4, device="cpu",
                         progress=False)


def test_paper_defaults_and_settings():
    attack = build_attack("adaptive")
    assert isinstance(attack, AdaptiveBadNets) and isinstance(attack, BadNets) and attack.controls_training
    assert (attack.target, attack.rate, attack.size, attack.beta) == (1, 0.05, 2, 0.5)
    assert AdaptiveBadNets(beta=0.9).settings()["beta"] == 0.9


def test_analysed_layers_are_the_second_half_from_floor_l_over_2_minus_1():
    resnet = build_model("resnet18", 10, 4)  # L = 10: layers 4..10
    assert AdaptiveBadNets().analysed_layers(resnet) == resnet.paper_layers[3:]
    assert AdaptiveBadNets().analysed_layers(resnet)[0] == "layer2.0"
    mobilenet = build_model("mobilenetv2", 10, 0.25)  # L = 19: layers 8..19
    assert AdaptiveBadNets().analysed_layers(mobilenet) == mobilenet.paper_layers[7:]
    assert AdaptiveBadNets(layers=["layer4.1"]).analysed_layers(resnet) == ["layer4.1"]


def test_poisoning_is_badnets(digits):
    a = AdaptiveBadNets(seed=3).poison_training_set(digits.train)
    b = BadNets(seed=3).poison_training_set(digits.train)
    assert np.array_equal(a.poisoned_indices, b.poisoned_indices) and torch.equal(a.data.x, b.data.x)
    assert torch.equal(AdaptiveBadNets().apply_trigger(digits.test.x[:2]), BadNets().apply_trigger(digits.test.x[:2]))


def test_loss_hooks_with_four_or_five_arguments(small):
    """train() passes the batch's row indices only to hooks that take a fifth argument."""
    import torch.nn.functional as F

    seen = []

    def four(model, x, y, logits):
        return F.cross_entropy(logits, y)

    def five(model, x, y, logits, idx):
        seen.append(idx.clone())
        assert torch.equal(y, small.y[idx])  # the indices point at this batch's rows
        return F.cross_entropy(logits, y)

    data = small.subset(np.arange(40))
    for hook in (four, five):
        train(build_model("resnet18", 10, 4), data, TrainConfig(epochs=1, batch_size=16), device="cpu",
              progress=False, loss_hook=hook)
    assert sorted(torch.cat(seen).tolist()) == list(range(40))  # one epoch visits every row once


def test_beta_zero_is_plain_badnets_training(small):
    models = []
    for attack in (AdaptiveBadNets(beta=0.0), BadNets()):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, 4)
        data = small.subset(np.arange(120))
        if attack.controls_training:
            attack.train_model(model, data, _context(1))
        else:
            train(model, attack.poison_training_set(data).data, TrainConfig(epochs=1, seed=0), device="cpu",
                  progress=False)
        models.append(model)
    assert torch.equal(models[0].fc.weight, models[1].fc.weight)


def test_training_removes_its_hooks(small):
    model = build_model("resnet18", 10, 4)
    AdaptiveBadNets(beta=0.5).train_model(model, small.subset(np.arange(60)), _context(1))
    assert all(not module._forward_hooks for module in model.modules())


def test_penalty_pulls_poisoned_features_towards_the_target(small):
    """With β > 0 the poisoned samples' features end closer (in cosine) to the target's benign centroids."""
    data = small.subset(np.arange(0, len(small), 2))  # 135 images, 2 epochs
    distances = {}
    for beta in (0.0, 0.8):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, 4)
        attack = AdaptiveBadNets(beta=beta)
        assert attack.train_model(model, data, _context(2)).records
        layers = attack.analysed_layers(model)
        benign = extract_features(model, data.of_class(1), layers)[0]
        poisoned = extract_features(model, attack.poisoned_test_set(data), layers)[0]
        per_layer = []
        for b, p in zip(benign, poisoned):
            center = b.mean(0)
            cos = p @ center / (np.linalg.norm(p, axis=1) * np.linalg.norm(center) + 1e-12)
            per_layer.append(1 - cos.mean())
        distances[beta] = float(np.mean(per_layer))
    assert distances[0.8] < 0.5 * distances[0.0]


@pytest.mark.parametrize("settings, message", [
    ({"beta": 1.0}, "beta: expected a penalty weight in"), ({"beta": -0.1}, "beta"), ({"momentum": 1.0}, "momentum"),
    ({"layers": []}, "layers"), ({"layers": "fc"}, "layers"), ({"rate": 0.0}, "rate"), ({"target": -1}, "target"),
    ({"size": 0}, "size"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveBadNets(**settings)


def test_unknown_layer_is_refused(small):
    with pytest.raises(ValueError, match=r"layers: unknown module path\(s\) \['nope'\]"):
        AdaptiveBadNets(layers=["nope"]).train_model(build_model("resnet18", 10, 4), small, _context(1))
