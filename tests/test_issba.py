"""ISSBA: a steganographic encoder trained in the toolkit hides a fixed secret as each image's trigger."""
import numpy as np
import pytest
import torch

from analysis.attacks import ISSBA, AttackContext, build_attack

TINY = {"steps": 40, "warmup_steps": 20, "ramp_steps": 10, "width": 4, "batch_size": 32}


@pytest.fixture(scope="module")
def trained(digits):
    """An ISSBA whose encoder saw 40 steps (seconds on a CPU): enough to test the plumbing, not the hiding."""
    attack = ISSBA(seed=3, **TINY)
    attack.prepare(digits.train.subset(np.arange(200)), 10, AttackContext(progress=False))
    return attack


def test_paper_defaults():
    attack = build_attack("issba")
    assert isinstance(attack, ISSBA) and (attack.target, attack.rate, attack.clean_label) == (1, 0.05, False)
    assert attack.secret.shape == (32,) and set(attack.secret.tolist()) <= {0.0, 1.0}


def test_secret_is_seeded():
    assert torch.equal(ISSBA(seed=1).secret, ISSBA(seed=1).secret)
    assert not torch.equal(ISSBA(seed=1).secret, ISSBA(seed=2).secret)


def test_untrained_use_is_refused(digits):
    with pytest.raises(RuntimeError, match="encoder is not trained yet"):
        ISSBA().apply_trigger(digits.test.x[:2])
    with pytest.raises(RuntimeError, match="not trained"):
        ISSBA().poison_training_set(digits.train)
    with pytest.raises(RuntimeError, match="not trained"):
        ISSBA().state_tensors()


def test_poisoned_training_set(trained, digits):
    poisoned = trained.poison_training_set(digits.train)
    idx = poisoned.poisoned_indices
    assert len(idx) == round(0.05 * len(digits.train)) == 54
    assert np.all(digits.train.y.numpy()[idx] != 1) and np.all(poisoned.data.y.numpy()[idx] == 1)
    assert np.all(poisoned.poisoned_labels == 1)
    changed = (poisoned.data.x[idx] != digits.train.x[idx]).flatten(1).any(1)
    assert bool(changed.all())  # every poisoned image carries a residual
    untouched = np.setdiff1d(np.arange(len(digits.train)), idx)
    assert torch.equal(poisoned.data.x[untouched], digits.train.x[untouched])
    assert torch.equal(poisoned.data.y[untouched], digits.train.y[untouched])
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1


def test_trigger_is_sample_specific_and_equals_the_encoder_output(trained, digits):
    x = digits.test.x[:4]
    out = trained.apply_trigger(x)
    residual = out - x
    assert not torch.allclose(residual[0], residual[1])  # each image its own residual
    with torch.no_grad():
        expected = (x + trained.encoder(x, trained.secret.expand(4, -1))).clamp(0, 1)
    assert torch.equal(out, expected)
    assert torch.equal(x, digits.test.x[:4])  # input untouched


def test_encoder_training_is_deterministic(digits):
    settings = {**TINY, "steps": 8, "warmup_steps": 4, "ramp_steps": 2}
    first, again = ISSBA(seed=3, **settings), ISSBA(seed=3, **settings)
    for attack in (first, again):
        attack.prepare(digits.train.subset(np.arange(64)), 10, AttackContext(progress=False))
    x = digits.test.x[:8]
    assert torch.equal(again.apply_trigger(x), first.apply_trigger(x))


def test_state_tensors_round_trip_gives_identical_triggers(trained, digits):
    tensors = trained.state_tensors()
    assert {"secret", "image_size"} <= set(tensors) and any(k.startswith("decoder.") for k in tensors)
    fresh = ISSBA(seed=3, **TINY)
    fresh.load_state_tensors(tensors)
    x = digits.test.x[:8]
    assert torch.equal(fresh.apply_trigger(x), trained.apply_trigger(x))
    assert torch.equal(fresh.decode(x), trained.decode(x))
    with pytest.raises(ValueError, match="shape"):
        ISSBA(width=8, **{k: v for k, v in TINY.items() if k != "width"}).load_state_tensors(tensors)


def test_cache_dir_reuses_the_trained_encoder(digits, tmp_path, monkeypatch):
    small = digits.train.subset(np.arange(64))
    settings = {**TINY, "steps": 5, "warmup_steps": 2, "ramp_steps": 2}
    first = ISSBA(**settings)
    first.prepare(small, 10, AttackContext(progress=False, cache_dir=tmp_path))
    (cached,) = tmp_path.glob("issba-*.safetensors")
    second = ISSBA(**settings)
    monkeypatch.setattr(second, "_residual_weight_at", lambda step: pytest.fail("retrained instead of cached"))
    second.prepare(small, 10, AttackContext(progress=False, cache_dir=tmp_path))
    assert torch.equal(second.apply_trigger(digits.test.x[:4]), first.apply_trigger(digits.test.x[:4]))
    assert cached.read_bytes()[:8] != b"\x80\x04\x95"  # safetensors, not a pickle


def test_quality_reports_bit_accuracy_and_psnr(trained, digits):
    q = trained.quality(digits.test.subset(np.arange(40)))
    assert set(q) == {"bit_accuracy", "psnr"}
    encoded = trained.apply_trigger(digits.test.x[:40])
    read_back = (trained.decode(encoded) == trained.secret).float().mean()
    assert q["bit_accuracy"] == pytest.approx(float(read_back), abs=1e-6)
    x = digits.test.x[:5]
    mse = (trained.apply_trigger(x) - x).pow(2).flatten(1).mean(1)
    assert trained.quality(x)["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)


@pytest.mark.parametrize(
    "settings, message",
    [({"rate": 0.0}, "rate"), ({"rate": 1.5}, "rate"), ({"target": -1}, "target"), ({"secret_bits": 0}, "secret_bits"),
     ({"steps": 0}, "steps"), ({"residual_weight": -1.0}, "residual_weight"), ({"lr": 0}, "lr")],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        ISSBA(**settings)


def test_bad_data(trained, digits):
    with pytest.raises(ValueError, match=r"target: class 12 is not among"):
        ISSBA(target=12).prepare(digits.train, 10, AttackContext(progress=False))
    with pytest.raises(ValueError, match="divisible by 4"):
        ISSBA(**TINY).prepare(
            type(digits.train)(torch.zeros(20, 3, 30, 30), torch.arange(20) % 10), 10, AttackContext(progress=False))
    with pytest.raises(ValueError, match="trained on 32x32 images, got 64x64"):
        trained.apply_trigger(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="3-channel images, got 1"):
        trained.apply_trigger(torch.zeros(1, 1, 32, 32))
