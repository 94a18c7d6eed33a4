"""SCALE-UP, IBD-PSC and TED on hand-built models and hand-made numbers; tpr_at_fpr by hand.

The toy classifier of the SCALE-UP and TED tests reads brightness or colour, and has a
BadNets-like backdoor: a white 2×2 corner patch (rows/cols 29-30) adds +100 to class 2.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.defenses import IBDPSC, TED, ScaleUp, build_defense
from analysis.defenses.ibd_psc import amplified_copy, batchnorm_layers
from analysis.defenses.ted import nearest_same_class_rank
from analysis.metrics import tpr_at_fpr
from analysis.models import build_model

TARGET = 2


def corner_trigger(x: torch.Tensor) -> torch.Tensor:
    """[B] 1.0 where the 2×2 corner patch is white (mean >= 0.9), else 0.0."""
    return (x[:, :, 29:31, 29:31].mean((1, 2, 3)) >= 0.9).float()


def stamp(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, :, 29:31, 29:31] = 1.0
    return out


def grey(*values: float) -> torch.Tensor:
    """Grey images, one per value: every pixel of image i equals values[i], except a black 5×5 corner (where the
    trigger goes; black stays black when scaled, so saturating a bright image never draws the trigger)."""
    x = torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 3, 32, 32).clone()
    x[:, :, 27:, 27:] = 0.0
    return x


# ---------------------------------------------------------------- SCALE-UP
class BrightnessWithCornerTrigger(nn.Module):
    """Class 1 if the mean pixel m > 0.5 else class 0: logits (0.5 - m, m - 0.5, 100 * trigger)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5, 100.0 * corner_trigger(x)], 1)


def test_scale_up_spc_by_hand():
    model = BrightnessWithCornerTrigger()
    # (the black corner lowers the mean pixel by 2.4 %, which changes none of these answers)
    # grey 0.2 -> class 0; ×3 = 0.6 and every larger factor -> class 1: SPC = 0/5.
    # grey 0.12 -> class 0; ×3 = 0.36 still class 0, ×5 = 0.6 on -> class 1: SPC = 1/5.
    # grey 0.7 -> class 1; every factor clips to 1.0 -> class 1: SPC = 5/5 (a bright benign image).
    # grey 0.2 with the white patch -> class 2; the patch stays 1.0 after clipping: SPC = 5/5.
    x = torch.cat([grey(0.2, 0.12, 0.7), stamp(grey(0.2))])
    assert model(x).argmax(1).tolist() == [0, 0, 1, TARGET]
    defense = ScaleUp().fit(model)  # data-free: no reference needed
    np.testing.assert_allclose(defense.suspicion(model, x), [0.0, 0.2, 1.0, 1.0])
    # flag SPC > 0.5; the bright benign image is a false positive by design of the method
    assert defense.predict(model, x).tolist() == [False, False, True, True]
    # a tie with the threshold is not flagged (strict >)
    assert ScaleUp(threshold=0.2).fit(model).predict(model, x).tolist() == [False, False, True, True]


def test_scale_up_data_limited_standardises_per_predicted_class():
    model = BrightnessWithCornerTrigger()
    # class 0 reference SPCs: grey 0.08 -> 2/5 (×7 = 0.56 flips), 0.12 -> 1/5, 0.2 -> 0: mean 0.2, std 0.2
    # class 1 reference SPCs: 1, 1, 1: mean 1, std 0 floored at one SPC step, 1/5
    reference = LabeledImages(grey(0.08, 0.12, 0.2, 0.7, 0.8, 0.9), torch.tensor([0, 0, 0, 1, 1, 1]))
    defense = ScaleUp(mode="data-limited").fit(model, reference)
    assert defense.class_mean_ == pytest.approx({0: 0.2, 1: 1.0})
    assert defense.class_std_ == pytest.approx({0: 0.2, 1: 0.2})
    spc = np.array([0.4, 0.2, 0.0, 1.0, 1.0, 1.0])
    assert (defense.pooled_mean_, defense.pooled_std_) == pytest.approx((spc.mean(), spc.std(ddof=1)))
    x = torch.cat([grey(0.2, 0.08, 0.75), stamp(grey(0.2))])
    # class 0: (0 - 0.2) / 0.2 and (0.4 - 0.2) / 0.2; class 1: (1 - 1) / 0.2; class 2 has no reference: pooled
    expected = [-1.0, 1.0, 0.0, (1.0 - spc.mean()) / spc.std(ddof=1)]
    np.testing.assert_allclose(defense.suspicion(model, x), expected)
    with pytest.raises(TypeError, match="reference: expected LabeledImages"):
        ScaleUp(mode="data-limited").fit(model)


# ---------------------------------------------------------------- IBD-PSC
class ChannelMeansWithBN(nn.Module):
    """logits = BN(mean of channels 0 and 1) + (0, 0.5); the BN starts as the identity (eps = 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2, eps=0.0)
        self.register_buffer("offset", torch.tensor([0.0, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.mean((2, 3))[:, :2]) + self.offset


def test_ibd_psc_is_the_amplified_probability_of_the_plain_prediction():
    model = ChannelMeansWithBN().eval()
    x = torch.zeros(2, 3, 32, 32)
    x[0, 0], x[1, 0] = 1.0, 0.2  # channel means (1, 0) and (0.2, 0)
    # plain logits (1, 0.5) -> class 0; amplified ×1.5: (1.5, 0.5) -> p0 = sigmoid(1)
    # plain logits (0.2, 0.5) -> class 1; amplified: (0.3, 0.5) -> p1 = sigmoid(0.2)
    reference = LabeledImages(x, torch.tensor([0, 1]))
    defense = IBDPSC().fit(model, reference)
    assert defense.bn_layers_ == ["bn"] and defense.amplified_counts_ == (1,) * 5  # one layer: every copy amplifies it
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    psc = np.array([sigmoid(1.0), sigmoid(0.2)])
    np.testing.assert_allclose(defense.suspicion(model, x), -np.log(1 - psc))  # PSC's order, without its ties
    assert not defense.predict(model, x).any()  # both below T = 0.9


def test_ibd_psc_amplifies_the_last_k_batchnorm_layers_of_a_copy():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2)
    names = batchnorm_layers(model)
    assert names[0] == "stem.1" and len(names) == 1 + 8 * 2 + 3  # stem, two per block, three shortcuts
    amplified = amplified_copy(model, names[-3:], 1.5)
    modules, original = dict(amplified.named_modules()), dict(model.named_modules())
    for i, name in enumerate(names):
        factor = 1.5 if i >= len(names) - 3 else 1.0
        torch.testing.assert_close(modules[name].weight, factor * original[name].weight)
        torch.testing.assert_close(modules[name].bias, factor * original[name].bias)


def test_ibd_psc_needs_batchnorm_and_names_the_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    reference = LabeledImages(torch.rand(6, 3, 32, 32), torch.arange(6) % 3)
    with pytest.raises(ValueError, match="IBD-PSC needs BatchNorm layers.*Sequential"):
        IBDPSC().fit(model, reference)


def test_ibd_psc_leaves_the_model_untouched_and_flags_psc_above_t():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).train()  # training mode: BN would update its running stats if run
    model.layer1.eval()  # a frozen part must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers
    modes = [m.training for m in model.modules()]
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    x = torch.rand(8, 3, 32, 32)
    defense = IBDPSC().fit(model, reference)
    scores, flagged = defense.suspicion(model, x), defense.predict(model, x)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert [m.training for m in model.modules()] == modes and model.training
    assert scores.dtype == np.float64 and scores.shape == (8,) and (scores >= 0).all()  # -log(1 - PSC)
    np.testing.assert_array_equal(flagged, 1 - np.exp(-scores) > 0.9)  # PSC > T
    assert 1 <= defense.start_ < len(defense.bn_layers_)
    assert defense.amplified_counts_ == tuple(min(defense.start_ + i, 20) for i in range(1, 6))


# ---------------------------------------------------------------- TED
def test_ted_rank_by_hand_with_leave_one_out():
    # One layer, features on a line: A at 0 and 3, B at 1 and 2.
    points, labels = np.array([0.0, 1.0, 2.0, 3.0]), np.array(["A", "B", "B", "A"])
    distances = np.abs(points[:, None] - points[None, :])
    # Against itself every point is its own nearest neighbour: rank 0 everywhere. Leave-one-out:
    # 0 (A): B at 1 and 2 come before A at 3 -> 2;  1 (B): A at distance 1 ties with B at distance 1 -> 0;
    # 2 (B): the same, mirrored -> 0;             3 (A): B at 2 and 1 come before A at 0 -> 2.
    assert nearest_same_class_rank(distances, labels, labels).tolist() == [0, 0, 0, 0]
    assert nearest_same_class_rank(distances, labels, labels, leave_one_out=True).tolist() == [2, 0, 0, 2]
    # New inputs at 2.2, ranked for their predicted class: A -> only B at 2 (distance 0.2) is closer than
    # A at 3 (0.8) -> 1; B -> B at 2 is the nearest -> 0; C (no reference image of C) -> all 4.
    new = np.abs(np.array([2.2, 2.2, 2.2])[:, None] - points[None, :])
    assert nearest_same_class_rank(new, labels, np.array(["A", "B", "C"])).tolist() == [1, 0, 4]


def test_ted_trajectory_over_two_layers_by_hand():
    """Layer 1 reads colour, layer 2 is the logits: a triggered red image predicted as the target is
    still red at layer 1 (rank: every red reference image is closer than the nearest blue one) and
    blue at layer 2 (rank 0)."""

    class Colour(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    class Head(nn.Module):
        def forward(self, colour, trigger):
            logits = 10.0 * colour
            logits[:, TARGET] += 100.0 * trigger
            return logits

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.colour, self.head = Colour(), Head()

        def forward(self, x):
            return self.head(self.colour(x), corner_trigger(x))

    g = torch.Generator().manual_seed(0)

    def coloured(n, c):  # dark noise plus one channel; blue (the target) brighter, so green lies nearer to red
        x = 0.2 * torch.rand(n, 3, 32, 32, generator=g)
        x[:, c] += 0.7 if c == TARGET else 0.5
        x[:, :, 27:, 27:] = 0.0
        return x

    model = Toy()
    reference = LabeledImages(torch.cat([coloured(12, c) for c in range(3)]), torch.arange(3).repeat_interleave(12))
    defense = TED(layers=["colour", "head"]).fit(model, reference)
    assert defense.reference_trajectories_.shape == (36, 2)
    benign, poisoned = torch.cat([coloured(5, 0), coloured(5, 1)]), stamp(coloured(5, 0))
    assert (model(poisoned).argmax(1) == TARGET).all()
    trajectory = defense.trajectories(model, poisoned)
    assert (trajectory[:, 0] == 24).all()  # red at layer 1: all 12 red and 12 green images are closer than any blue
    assert (defense.trajectories(model, benign) == 0).all()
    assert defense.suspicion(model, poisoned).min() > defense.threshold_ >= defense.suspicion(model, benign).max()
    assert defense.predict(model, poisoned).all() and not defense.predict(model, benign).any()


def test_ted_defaults_to_paper_layers_and_is_deterministic():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    x = torch.rand(6, 3, 32, 32)
    ted = TED(n_components=2, seed=3).fit(model, reference)
    assert ted.layers_ == model.paper_layers
    assert ted.threshold_ == pytest.approx(np.quantile(ted.reference_scores_, 0.99))
    again = TED(n_components=2, seed=3).fit(model, reference)
    np.testing.assert_array_equal(ted.suspicion(model, x), again.suspicion(model, x))
    with pytest.raises(ValueError, match="n_components: 'mle' needs at least"):
        TED().fit(model, reference)  # this random model classifies at most 5 of them correctly, < 10 layers


def test_recent_detectors_are_deterministic():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    x = torch.rand(6, 3, 32, 32)
    for name, settings in [("scale-up", {"mode": "data-limited"}), ("ibd-psc", {})]:
        a = build_defense(name, **settings).fit(model, reference).suspicion(model, x)
        b = build_defense(name, **settings).fit(model, reference).suspicion(model, x)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("defense, setting", [
    (ScaleUp(scales=(3, 0.5)), "scales"), (ScaleUp(scales=()), "scales"), (ScaleUp(mode="data-rich"), "mode"),
    (ScaleUp(threshold=float("nan")), "threshold"), (IBDPSC(scale=1.0), "scale"), (IBDPSC(n_models=0), "n_models"),
    (IBDPSC(error_bound=1.0), "error_bound"), (IBDPSC(threshold=1.5), "threshold"), (TED(metric="manhattan"), "metric"),
    (TED(contamination=0.7), "contamination"), (TED(n_components=0), "n_components"), (TED(layers="fc"), "layers"),
])
def test_bad_settings_are_named(defense, setting):
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(15, 3, 32, 32), torch.arange(15) % 3)
    with pytest.raises(ValueError, match=setting):
        defense.fit(model, reference)


# ---------------------------------------------------------------- metrics
def test_tpr_at_fpr_by_hand():
    benign = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    poisoned = [0.95, 0.85, 0.5, 0.05]
    # 10 % of 10 benign = 1 may be flagged: threshold = 2nd largest benign, 0.9; poisoned above it: 0.95 -> 1/4
    assert tpr_at_fpr(benign, poisoned, 0.10) == 0.25
    # 30 %: threshold 0.7 (3 benign above) -> 0.95, 0.85 -> 2/4
    assert tpr_at_fpr(benign, poisoned, 0.30) == 0.5
    assert tpr_at_fpr(benign, poisoned, 0.0) == 0.0  # nothing above the largest benign score 1.0
    assert tpr_at_fpr(benign, poisoned, 1.0) == 1.0
    # ties at the threshold stay unflagged, so the FPR bound holds: at 50 % the threshold is the benign 0.5,
    # and the poisoned 0.5 that ties with it is not counted (2/4); at 60 % the threshold is 0.4 (3/4)
    assert tpr_at_fpr(benign, poisoned, 0.5) == 0.5 and tpr_at_fpr(benign, poisoned, 0.6) == 0.75
    with pytest.raises(ValueError, match="max_fpr"):
        tpr_at_fpr(benign, poisoned, 5)
