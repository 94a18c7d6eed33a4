"""PCA projections (Fig. 1) on hand-made features, and the PCA app driven without a browser."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import norm
from traitlets import TraitError

import analysis.projection as projection
from analysis.data import DatasetSplits, LabeledImages, stratified_fraction
from analysis.projection import Projector, separability


# ---------------------------------------------------------------------- separability
def test_separability_far_blobs_is_one(rng):
    benign = rng.normal(0, 1, (200, 2))
    poisoned = rng.normal(0, 1, (200, 2)) + [20, 0]
    assert separability(benign, poisoned) == pytest.approx(1.0)


def test_separability_of_one_std_shift_is_phi_of_d_over_sqrt2(rng):
    # 1-D Gaussians one standard deviation apart: AUROC = Phi(1 / sqrt(2)) = 0.760
    benign, poisoned = rng.normal(0, 1, 20000), rng.normal(1, 1, 20000)
    assert separability(benign, poisoned) == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.01)


def test_separability_finds_the_oblique_direction(rng):
    # groups differ along x - y only, hidden by a large shared spread along x + y: each axis alone is
    # near chance, the Fisher direction separates them
    shared = rng.normal(0, 10, 1000)
    benign = np.stack([shared[:500], shared[:500]], 1) + rng.normal(0, 0.1, (500, 2))
    poisoned = np.stack([shared[500:], shared[500:]], 1) + rng.normal(0, 0.1, (500, 2)) + [1, -1]
    assert separability(benign[:, :1], poisoned[:, :1]) < 0.6
    assert separability(benign, poisoned) > 0.99


def test_separability_of_identical_groups_is_chance(rng):
    assert separability(rng.normal(0, 1, (3000, 2)), rng.normal(0, 1, (3000, 2))) == pytest.approx(0.5, abs=0.03)


def test_separability_needs_two_points_per_group_and_checks_shapes(rng):
    assert np.isnan(separability(rng.normal(0, 1, (1, 2)), rng.normal(0, 1, (5, 2))))
    with pytest.raises(ValueError, match="differ in dimension"):
        separability(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"benign: expected points of shape \[N, d\]"):
        separability(np.zeros((3, 2, 1)), np.zeros((3, 2)))


# ---------------------------------------------------------------------- Projector on a hand-made model
class Tiny(nn.Module):
    """Layer 1 = the raw pixels (3 channels x 2 x 2 = 12 features), latent = channel means, layer 2 = logits."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(3, 2)
        self.paper_layers = ["flat", "fc"]
        self.latent_layer = "pool"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.flat(x)
        return self.fc(self.pool(x))


def _images(channel_means: np.ndarray, rng) -> LabeledImages:
    """Images [N, 3, 2, 2] whose channel c is constant at channel_means[:, c] plus a little noise.

    Stored as pixels ``0.5 + value / 40`` so they stay in [0, 1] (the images' contract); the same affine
    map on every pixel changes no PCA direction, variance share or separability below.
    """
    x = np.repeat(np.repeat(channel_means[:, :, None, None], 2, 2), 2, 3) + rng.normal(0, 0.01, (len(channel_means), 3, 2, 2))
    return LabeledImages(torch.tensor(0.5 + x / 40, dtype=torch.float32), torch.zeros(len(x), dtype=torch.long))


@pytest.fixture
def tiny_case(rng):
    """Reference spread along channels 0 and 1; benign and poisoned alike there, poisoned +5 on channel 2 (the trigger)."""
    reference = _images(np.column_stack([rng.normal(0, 3, 100), rng.normal(0, 2, 100), np.zeros(100)]), rng)
    benign = _images(np.column_stack([rng.normal(0, 3, 60), rng.normal(0, 2, 60), np.zeros(60)]), rng)
    poisoned = _images(np.column_stack([rng.normal(0, 3, 50), rng.normal(0, 2, 50), np.full(50, 5.0)]), rng)
    benign_predicted = np.r_[np.ones(40), np.zeros(20)].astype(int)  # 40 benign classified as the target 1
    poisoned_predicted = np.r_[np.ones(45), np.zeros(5)].astype(int)  # 45 captured
    torch.manual_seed(0)
    projector = Projector(Tiny(), reference, benign, poisoned, 1, benign_predicted=benign_predicted,
                          poisoned_predicted=poisoned_predicted)
    return projector


def test_projection_selects_inputs_classified_as_the_target(tiny_case):
    p = tiny_case.project(1)
    assert (p.n_benign, p.n_poisoned) == (40, 45)
    assert p.benign.shape == (40, 2) and p.poisoned.shape == (45, 2)
    assert (p.layer, p.module, p.n_features, p.fit) == (1, "flat", 12, "reference")
    assert tiny_case.n_poisoned_test == 50


def test_reference_pca_misses_the_trigger_and_inputs_pca_finds_it(tiny_case):
    # the reference varies along channels 0 and 1 only: its two PCs ignore channel 2, the trigger
    on_reference = tiny_case.project("latent", "reference")
    assert on_reference.layer is None and on_reference.module == "pool" and on_reference.n_features == 3
    assert on_reference.explained_variance.sum() == pytest.approx(1.0, abs=1e-3)
    assert on_reference.explained_variance[0] > on_reference.explained_variance[1]
    assert on_reference.separability < 0.7
    # fitted on the inputs, PC1 is the trigger's direction: the groups separate
    on_inputs = tiny_case.project("latent", "inputs")
    assert on_inputs.separability == pytest.approx(1.0)
    assert on_inputs.explained_variance[0] > 0.5
    assert on_inputs.axis_title(1) == f"PC1 ({100 * on_inputs.explained_variance[0]:.0f} % of variance)"


def test_reference_pca_coordinates_are_sklearns(tiny_case):
    from sklearn.decomposition import PCA

    from analysis.features import extract_features

    (ref,), _ = extract_features(tiny_case.model, tiny_case.reference, ["pool"])
    (benign,), _ = extract_features(tiny_case.model, tiny_case.benign, ["pool"])
    pca = PCA(2, svd_solver="full").fit(ref.astype(np.float64))
    np.testing.assert_allclose(tiny_case.project("latent").benign, pca.transform(benign.astype(np.float64)), atol=1e-4)


def test_projector_extracts_each_layer_once_for_both_fits(tiny_case, monkeypatch):
    calls = []
    original = projection.extract_features

    def counting(model, data, layers, batch_size=256):
        calls.append(tuple(layers))
        return original(model, data, layers, batch_size)

    monkeypatch.setattr(projection, "extract_features", counting)
    first = tiny_case.project(2, "reference")
    assert tiny_case.project(2, "inputs").fit == "inputs"
    assert tiny_case.project(2, "reference") is first
    assert calls == [("fc",)]
    tiny_case.project(1)
    assert calls == [("fc",), ("flat",)]


def test_projector_rejects_bad_arguments(tiny_case, rng):
    with pytest.raises(ValueError, match=r"layer: expected an integer in 1\.\.2 or 'latent', got 3"):
        tiny_case.project(3)
    with pytest.raises(ValueError, match="fit: expected one of"):
        tiny_case.project(1, "test")
    with pytest.raises(ValueError, match=r"benign_predicted: expected one predicted class per image"):
        Projector(Tiny(), tiny_case.reference, tiny_case.benign, tiny_case.poisoned, 1, benign_predicted=np.ones(3))
    with pytest.raises(TypeError, match="reference: expected LabeledImages"):
        Projector(Tiny(), np.zeros((4, 3, 2, 2)), tiny_case.benign, tiny_case.poisoned, 1)


def test_projector_predicts_when_not_told(rng):
    torch.manual_seed(0)
    model = Tiny()
    reference = _images(rng.normal(0, 1, (20, 3)), rng)
    inputs = _images(rng.normal(0, 1, (30, 3)), rng)
    predicted = model(inputs.x).argmax(1).numpy()
    projector = Projector(model, reference, inputs, inputs, 1)
    assert len(projector.benign) == len(projector.poisoned) == int(np.sum(predicted == 1))


# ---------------------------------------------------------------------- the app on zoo models
@pytest.fixture(scope="module")
def workbench():
    from analysis.data import load_digits
    from analysis.workbench import Workbench

    digits = load_digits(seed=0)
    keep, _ = stratified_fraction(digits.test.y.numpy(), 0.2, seed=0)  # ~110 evaluation images: fast explorers
    small = DatasetSplits("digits", digits.train, digits.reference, digits.test.subset(keep), 10)
    return Workbench(data=small, progress=False)


@pytest.fixture(scope="module")
def app(workbench):
    from analysis.apps.pca import PCAApp

    return PCAApp(workbench)


def _xy(trace) -> np.ndarray:
    return np.column_stack([np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)])


def test_app_defaults_to_the_loi_and_draws_two_panels(app, workbench):
    explorer = workbench.explorer("resnet18", "badnets")
    loi = explorer.detector.loi_[explorer.target]
    assert app.controls["layer"].value == loi and app.controls["layer"].max == explorer.n_layers == 10
    assert len(app.figure.data) == 4  # benign and poisoned, left and right
    assert [t.marker.color for t in app.figure.data[:2]] == [projection.BENIGN_COLOR, projection.POISONED_COLOR]
    assert "% of variance" in app.figure.layout.xaxis.title.text
    lines = app.text().splitlines()
    assert len(lines) == 3 and lines[1].startswith("latent layer (pool") and f"selected layer {loi} (" in lines[2]
    assert "separability" in lines[1] and "separability" in lines[2]


def test_layer_changes_the_right_panel_and_the_readout_only(app):
    app.set(arch="resnet18", attack="badnets", fit="reference", layer=10)
    left, right, text = _xy(app.figure.data[0]), _xy(app.figure.data[2]), app.text().splitlines()
    app.set(layer=3)
    assert np.array_equal(_xy(app.figure.data[0]), left)
    assert not np.allclose(_xy(app.figure.data[2]), right)
    new = app.text().splitlines()
    assert new[:2] == text[:2] and new[2] != text[2] and "selected layer 3 (layer1.1)" in new[2]
    assert "16384 features" in new[2]


def test_fit_changes_both_panels(app):
    app.set(arch="resnet18", attack="badnets", fit="reference", layer=8)
    left, right = _xy(app.figure.data[0]), _xy(app.figure.data[2])
    app.set(fit="inputs")
    assert not np.allclose(_xy(app.figure.data[0]), left) and not np.allclose(_xy(app.figure.data[2]), right)
    assert "PCA fitted on the " in app.text() and "inputs shown" in app.text()
    app.set(fit="reference")
    assert np.allclose(_xy(app.figure.data[0]), left)


def test_layer_range_follows_the_architecture(app, workbench):
    app.set(arch="mobilenetv2")
    explorer = workbench.explorer("mobilenetv2", "badnets")
    assert app.controls["layer"].max == explorer.n_layers == 19
    assert app.controls["layer"].value == explorer.detector.loi_[explorer.target]
    assert "of 19" in app.text()
    app.set(arch="resnet18")
    resnet = workbench.explorer("resnet18", "badnets")
    assert app.controls["layer"].max == 10 and app.controls["layer"].value == resnet.detector.loi_[resnet.target]
    with pytest.raises(TraitError):
        app.set(arch="vgg")
