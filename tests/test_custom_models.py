"""A model outside the zoo: layers by module path, the detector on it, its quick training, npz round trip."""
import numpy as np
import pytest
import torch

from analysis.apps.gallery import ModelCurvesApp
from analysis.custom_models import SMALLVGG_LAYERS, SmallVGG, describe_modules, quick_config, save_npz, train_badnets
from analysis.data import load_dataset, load_npz
from analysis.detection import LayerwiseDetector
from analysis.explore import LayerwiseExplorer
from analysis.features import resolve_layers


@pytest.fixture(scope="module")
def run(digits):
    """SmallVGG (width 4) after one epoch of BadNets training: seconds on a CPU."""
    return train_badnets(SmallVGG(width=4), digits, config=quick_config(epochs=1))


def test_smallvgg_has_no_paper_layers_and_resolves_by_path():
    model = SmallVGG()
    assert not hasattr(model, "paper_layers")
    modules = resolve_layers(model, list(SMALLVGG_LAYERS))
    assert modules[0] is model.block1 and modules[-1] is model.fc
    assert resolve_layers(model, ["block3.0"])[0] is model.block3[0]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_smallvgg_rejects_bad_sizes():
    with pytest.raises(ValueError, match="width"):
        SmallVGG(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        SmallVGG(num_classes=2.5)


def test_unknown_layer_raises_with_the_valid_names(run):
    with pytest.raises(ValueError, match=r"unknown module path\(s\) \['block7'\]; available: block1, block1.0"):
        LayerwiseDetector(layers=["block1", "block7"]).fit(run.model, run.data.reference)


def test_without_layers_the_detector_asks_for_module_paths(run):
    with pytest.raises(ValueError, match="no 'paper_layers'; pass layers="):
        LayerwiseDetector().fit(run.model, run.data.reference)


def test_detector_fits_on_the_custom_model(run):
    detector = LayerwiseDetector(layers=list(SMALLVGG_LAYERS)).fit(run.model, run.data.reference)
    assert detector.n_layers_ == len(SMALLVGG_LAYERS) and detector.layer_names_ == list(SMALLVGG_LAYERS)
    assert sorted(detector.loi_) == list(range(10))  # every class of the reference split has its LOI
    found = detector.detect(run.model, run.poisoned_test)
    assert found.flagged.shape == (len(run.poisoned_test),)


def test_training_is_deterministic(digits):
    threads = torch.get_num_threads()
    first = train_badnets(SmallVGG(width=4), digits, config=quick_config(epochs=1))
    second = train_badnets(SmallVGG(width=4), digits, config=quick_config(epochs=1))
    assert torch.get_num_threads() == threads  # restored
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(first.poisoned_test.x, second.poisoned_test.x)
    assert first.attack.target == 1 and len(first.poisoned_test) == int((digits.test.y != 1).sum())


def test_training_rejects_bad_arguments(digits):
    with pytest.raises(TypeError, match="model"):
        train_badnets("vgg", digits)
    with pytest.raises(TypeError, match="data"):
        train_badnets(SmallVGG(), digits.train)


def test_describe_modules_lists_paths_types_and_shapes():
    model = SmallVGG(width=4)
    model.train()
    table = describe_modules(model)
    assert model.training  # mode restored
    assert table.loc["block1", "output shape"] == "4×16×16" and table.loc["block1.0", "type"] == "Conv2d"
    assert table.loc["fc", "output shape"] == "10" and table.loc["fc", "parameters"] == 16 * 10 + 10
    assert list(table.index) == [name for name, _ in model.named_modules() if name]


def test_curves_app_on_the_custom_model(run):
    detector = LayerwiseDetector(layers=list(SMALLVGG_LAYERS)).fit(run.model, run.data.reference)
    explorer = LayerwiseExplorer(run.model, detector, run.data.test, run.poisoned_test, run.attack.target)
    app = ModelCurvesApp(explorer, "SmallVGG")
    assert app.controls["layer"].value == detector.loi_[1] and app.controls["layer"].max == len(SMALLVGG_LAYERS)
    assert "SmallVGG" in app.figure.layout.title.text
    before_y, before_text = np.asarray(app.figure.data[0].y).copy(), app.text()
    app.set(class_=3)
    assert app.controls["layer"].value == detector.loi_[3]
    assert not np.allclose(np.asarray(app.figure.data[0].y), before_y)
    app.set(tau=1.0)
    assert "τ = 1.0" in app.text() and app.text() != before_text
    with pytest.raises(TypeError, match="explorer"):
        ModelCurvesApp(detector)


def test_npz_round_trip(digits, tmp_path):
    path = save_npz(digits, tmp_path / "digits")
    assert path.name == "digits.npz"
    with np.load(path) as archive:
        assert archive["x_train"].dtype == np.uint8 and archive["x_train"].shape == (len(digits.train), 32, 32, 3)
    loaded = load_dataset("npz", path)
    assert loaded.sizes()["train"] == len(digits.train)
    assert loaded.sizes()["reference"] + loaded.sizes()["test"] == len(digits.reference) + len(digits.test)
    assert torch.max(torch.abs(loaded.train.x - digits.train.x)) <= 0.5 / 255 + 1e-6
    assert torch.equal(loaded.train.y, digits.train.y)
    assert load_npz(path).num_classes == 10
