"""Label-Consistent (clean-label, PGD then trigger) and the adaptive attack (cosine-distance penalty)."""
import numpy as np
import pytest
import torch

from analysis.attacks import AdaptiveBadNets, AttackContext, BadNets, LabelConsistent
from analysis.data import DatasetSplits
from analysis.models import build_model
from analysis.training import TrainConfig


@pytest.fixture(scope="module")
def small(digits):
    keep = np.arange(0, len(digits.train), 4)  # 270 training images, 27 of class 2
    return digits.train.subset(keep)


def _context(tmp_path=None):
    return AttackContext(config=TrainConfig(epochs=1, seed=0), arch="resnet18", width=4, device="cpu",
                         progress=False, cache_dir=tmp_path)


def test_lc_poisons_only_target_images_and_keeps_labels(small, tmp_path):
    attack = LabelConsistent(rate=0.05, pgd_steps=3)
    assert (attack.target, attack.eps) == (2, 16 / 255) and attack.clean_label
    attack.prepare(small, 10, _context(tmp_path))
    poisoned = attack.poison_training_set(small)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.05 * len(small)) and np.all(small.y.numpy()[idx] == 2)
    assert torch.equal(poisoned.data.y, small.y)  # clean label: no label changes
    mask = BadNets().trigger_mask(32, 32)
    assert torch.all(poisoned.data.x[idx][:, :, mask] == 1.0)  # trigger stamped after the perturbation
    delta = (poisoned.data.x[idx] - small.x[idx])[:, :, ~mask]
    assert float(delta.abs().max()) <= 16 / 255 + 1e-6 and float(delta.abs().max()) > 0  # within eps, not zero
    rest = np.setdiff1d(np.arange(len(small)), idx)
    assert torch.equal(poisoned.data.x[rest], small.x[rest])


def test_lc_caches_the_benign_model_and_perturbations(small, tmp_path, monkeypatch):
    first = LabelConsistent(pgd_steps=2)
    first.prepare(small, 10, _context(tmp_path))
    assert len(list(tmp_path.glob("lc-*.safetensors"))) == 1
    import analysis.training as training

    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    second = LabelConsistent(pgd_steps=2)
    second.prepare(small, 10, _context(tmp_path))
    assert torch.equal(first.perturbed, second.perturbed)


def test_lc_test_trigger_is_the_badnets_square_and_needs_prepare(small):
    x = small.x[:2]
    assert torch.equal(LabelConsistent().apply_trigger(x), BadNets().apply_trigger(x))
    with pytest.raises(RuntimeError, match="call prepare"):
        LabelConsistent().poison_training_set(small)
    with pytest.raises(ValueError, match="eps"):
        LabelConsistent(eps=0)
    with pytest.raises(ValueError, match=r"only \d+ target-class images exist"):
        LabelConsistent(rate=0.3).select_indices(small.y.numpy()[:270 // 2])


def test_adaptive_penalty_pulls_poisoned_features_towards_the_target(small):
    """With beta > 0 the poisoned samples' features end closer (in cosine) to the target's benign features."""
    from analysis.features import extract_features

    distances = {}
    for beta in (0.0, 0.8):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, 4)
        attack = AdaptiveBadNets(beta=beta)
        context = AttackContext(config=TrainConfig(epochs=3, seed=0), arch="resnet18", width=4, device="cpu",
                                progress=False)
        assert attack.train_model(model, small, context).records
        layer = attack.analysed_layers(model)[-2]  # the last block before the logits
        benign = extract_features(model, small.of_class(1), [layer])[0][0]
        poisoned = extract_features(model, attack.poisoned_test_set(small), [layer])[0][0]
        center = benign.mean(0)
        cos = poisoned @ center / (np.linalg.norm(poisoned, axis=1) * np.linalg.norm(center) + 1e-12)
        distances[beta] = float(1 - cos.mean())
    assert distances[0.8] < distances[0.0]


def test_adaptive_settings():
    attack = AdaptiveBadNets(beta=0.9)
    assert attack.controls_training and attack.settings()["beta"] == 0.9 and attack.target == 1
    assert attack.analysed_layers(build_model("resnet18", 10, 4))[0] == "layer2.0"  # layer 4 = floor(10/2) - 1
    with pytest.raises(ValueError, match="beta"):
        AdaptiveBadNets(beta=1.0)
