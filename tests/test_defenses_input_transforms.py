"""RS, ShrinkPad, STRIP and Fine-Pruning on hand-built models whose backdoor is known exactly.

The toy classifier reads colour: class c = the channel with the largest mean (3 classes),
so shrinking, zero-padding and blending two images of one colour keep its answer. Its
backdoor: when the 2×2 corner patch (rows/cols 29-30, the BadNets position) is bright
(mean >= 0.45), class 1 gets +100.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.defenses import STRIP, FinePruning, RandomizedSmoothing, ShrinkPad
from analysis.training import TrainConfig

TARGET = 1


class ColourWithCornerTrigger(nn.Module):
    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.scale * x.mean((2, 3))
        trigger = x[:, :, 29:31, 29:31].mean((1, 2, 3)) >= 0.45
        logits[:, TARGET] += 100.0 * trigger.float()
        return logits


def coloured(n: int, colour: int, seed: int) -> torch.Tensor:
    """Dark noisy images with one dominant channel and a black corner."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    x[:, colour] += 0.2 + 0.1 * torch.rand(n, 1, 1, generator=g)
    x[:, :, 27:, 27:] = 0.0
    return x


def stamp(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, :, 29:31, 29:31] = 1.0
    return out


def reference_set(per_class: int = 20, seed: int = 0) -> LabeledImages:
    xs = [coloured(per_class, c, seed + c) for c in range(3)]
    return LabeledImages(torch.cat(xs), torch.arange(3).repeat_interleave(per_class))


# ---------------------------------------------------------------- ShrinkPad
def test_shrinkpad_destroys_a_corner_trigger_and_keeps_colour():
    model = ColourWithCornerTrigger()
    benign = torch.cat([coloured(10, c, 100 + c) for c in (0, 2)])
    poisoned = stamp(benign)
    assert (model(poisoned).argmax(1) == TARGET).all()
    defense = ShrinkPad().fit(model, reference_set())
    assert not defense.predict(model, benign).any()  # colour survives shrink + pad
    flagged = defense.predict(model, poisoned)
    # The blurred 29 px copy keeps the patch bright only for the rare largest offsets.
    assert flagged.mean() >= 0.75
    # score = 1 - p(original class | transformed): the same offsets as predict (same seed, same inputs)
    assert defense.suspicion(model, benign).max() < 0.5 < defense.suspicion(model, poisoned)[flagged].min()


def test_shrinkpad_shrinks_32_to_29_pixels():
    from analysis.defenses.shrinkpad import shrink_pad

    ones = torch.ones(4, 3, 32, 32)
    out = shrink_pad(ones, 0.1, torch.Generator().manual_seed(0))
    assert out.shape == ones.shape
    nonzero = (out[:, 0] > 0).flatten(1).sum(1)
    assert nonzero.tolist() == [29 * 29] * 4  # a 29×29 copy, zeros around it


# ---------------------------------------------------------------- STRIP
def test_strip_flags_a_trigger_that_survives_blending():
    model = ColourWithCornerTrigger()
    reference = reference_set()
    defense = STRIP(n_blends=30).fit(model, reference)
    assert defense.threshold_ == pytest.approx(np.percentile(defense.reference_entropy_, 10))
    benign = torch.cat([coloured(10, c, 200 + c) for c in range(3)])
    poisoned = stamp(benign[benign.mean((2, 3)).argmax(1) != TARGET])
    # Blending halves the patch (>= 0.5 stays above 0.45): every blend says class 1, entropy ~ 0.
    assert defense.predict(model, poisoned).all()
    assert defense.predict(model, benign).mean() <= 0.2  # ~10% by construction of the threshold
    scores = defense.suspicion(model, poisoned)
    assert np.all(scores > -defense.threshold_)  # score = -entropy


# ---------------------------------------------------------------- Randomized smoothing
class Island(nn.Module):
    """Class 1 only when pixel (0, 0, 0) lies within 0.01 of 0.5: a trigger value noise destroys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = ((x[:, 0, 0, 0] - 0.5).abs() < 0.01).float()
        return torch.stack([1 - on, on], 1) * 5


def test_randomized_smoothing_flags_a_prediction_that_flips_near_the_input():
    model = Island()
    x = torch.zeros(2, 3, 32, 32)
    x[0, 0, 0, 0] = 0.5  # plain prediction 1, but N(0.5, 0.1) leaves the island ~92% of the time
    x[1, 0, 0, 0] = 0.1  # plain prediction 0, stable
    defense = RandomizedSmoothing().fit(model, reference_set(2))
    assert defense.predict(model, x).tolist() == [True, False]
    scores = defense.suspicion(model, x)  # share of neighbours disagreeing with the plain prediction
    assert scores[0] > 0.8 and scores[1] == 0.0
    # decision = (votes for the plain class - votes for the other) / n: with two classes, 1 - 2 * share
    np.testing.assert_allclose(defense.decision_function(model, x), 1.0 - 2.0 * scores)


def test_randomized_smoothing_is_seeded():
    model = Island()
    x = torch.full((3, 3, 32, 32), 0.5)
    a = RandomizedSmoothing(n_samples=50, seed=1).fit(model, None).suspicion(model, x)
    b = RandomizedSmoothing(n_samples=50, seed=1).fit(model, None).suspicion(model, x)
    c = RandomizedSmoothing(n_samples=50, seed=2).fit(model, None).suspicion(model, x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- Fine-Pruning
class BackdooredConv(nn.Module):
    """1×1 conv with 4 channels: 0 reads red, 1 reads green, 2 is dead, 3 fires on the corner trigger."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0], self.conv.weight[1, 1] = 1.0, 1.0
            self.conv.weight[3, 2] = 10.0  # blue channel ...
            self.conv.bias[3] = -5.0  # ... only above 0.5 (the trigger is the only bright blue)
            self.head.weight.copy_(torch.tensor([[10.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 1000.0]]))
        self.last_conv_layer = "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_fine_pruning_prunes_the_dormant_trigger_channel():
    model = BackdooredConv()
    reference = LabeledImages(torch.cat([coloured(10, 0, 1), coloured(10, 1, 2)]), torch.tensor([0] * 10 + [1] * 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    defense = FinePruning(prune_ratio=0.5, finetune=TrainConfig(epochs=1, lr=1e-4, schedule="constant"))
    defense.fit(model, reference, train=reference)
    assert sorted(defense.pruned_channels_.tolist()) == [2, 3]  # the trigger channel is negative on benign data
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k])
    red = coloured(10, 0, 3)
    poisoned = red.clone()
    poisoned[:, 2, 29:31, 29:31] = 1.0
    assert (model(poisoned).argmax(1) == 1).all()
    assert defense.predict(model, poisoned).all()  # the repaired copy answers "red" again
    assert not defense.predict(model, red).any()


def test_fine_pruning_needs_the_training_set():
    with pytest.raises(ValueError, match="train"):
        FinePruning().fit(BackdooredConv(), reference_set(5))


def test_fine_pruning_default_layer_is_the_last_convolutional_feature_map():
    from analysis.defenses.fine_pruning import default_layer
    from analysis.models import build_model

    # ResNet-18's last conv feeds a residual addition: pruning the block output also cuts the shortcut.
    assert default_layer(build_model("resnet18", 10, 2)) == "layer4.1"
    assert default_layer(build_model("mobilenetv2", 10, 0.25)) == "conv_last"
    assert default_layer(BackdooredConv()) == "conv"
    with pytest.raises(ValueError, match="last_conv_layer"):
        default_layer(torch.nn.Linear(2, 2))


def test_doubt_is_one_minus_the_probability_and_keeps_confident_inputs_apart():
    from analysis.defenses.base import doubt, softmax64

    # Logits (0, ln 3): p = (1/4, 3/4), so the doubt in class 1 is 1/4 and in class 0 is 3/4.
    logits = torch.tensor([[0.0, float(np.log(3.0))], [0.0, float(np.log(3.0))]])
    np.testing.assert_allclose(doubt(logits, torch.tensor([1, 0])), [0.25, 0.75])
    # Margins of 30 and 32 nats: float32 rounds both probabilities to exactly 1 (a tie at doubt 0);
    # in float64 the doubts are 1 - 1/(1 + e^-m) = e^-m / (1 + e^-m), ordered by the margin m.
    confident = torch.tensor([[30.0, 0.0], [32.0, 0.0]])
    assert (1 - confident.softmax(1)[:, 0]).tolist() == [0.0, 0.0]
    tail = np.exp([-30.0, -32.0])
    np.testing.assert_allclose(doubt(confident, torch.tensor([0, 0])), tail / (1 + tail), rtol=1e-12)
    assert softmax64(confident).dtype == torch.float64
