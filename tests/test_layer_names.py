"""Layers are what the user named: module paths, each once, in the order the forward pass runs them.

The LOI rule reads the layers as a sequence (the largest rise from layer l-1 to layer l), so a reversed,
shuffled or repeated list would move the LOI without an error; a single string would be split into
characters. Each is refused with a message that says what to write instead. (A module that does not run,
or runs twice per pass, is tested in tests/test_features.py.)
"""
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.detection import LayerwiseDetector
from analysis.features import LayerNotRunError, capture, iter_features

pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")


class Chain(nn.Module):
    """Four linear layers a -> b -> c -> d on flattened 3 x 4 x 4 images."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(48, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.d(self.c(self.b(self.a(x.flatten(1)))))


REFERENCE = LabeledImages(torch.rand(8, 3, 4, 4), torch.arange(8) % 2)


def test_layers_in_forward_order_fit():
    torch.manual_seed(0)
    detector = LayerwiseDetector(layers=["a", "b", "c", "d"]).fit(Chain(), REFERENCE)
    assert detector.layer_names_ == ["a", "b", "c", "d"]


def test_a_reversed_list_is_refused_with_the_order_the_model_runs():
    with pytest.raises(LayerNotRunError, match=r"listed as \['d', 'c', 'b', 'a'\], but the forward pass of Chain runs "
                                               r"them in the order \['a', 'b', 'c', 'd'\]"):
        LayerwiseDetector(layers=["d", "c", "b", "a"]).fit(Chain(), REFERENCE)


def test_a_repeated_layer_is_refused():
    with pytest.raises(ValueError, match=r"\['b'\] listed more than once"):
        LayerwiseDetector(layers=["a", "b", "b", "c"]).fit(Chain(), REFERENCE)


def test_a_single_string_is_not_split_into_characters():
    with pytest.raises(TypeError, match="layers: expected a list of module paths .* got the single string 'abcd'"):
        LayerwiseDetector(layers="abcd").fit(Chain(), REFERENCE)


def test_order_is_only_required_where_it_matters():
    """Defenses that concatenate several layers' features may list them in any order."""
    x = torch.rand(2, 3, 4, 4)
    model = Chain()
    with capture(model, ["c", "a"]) as outputs:
        model(x)
    assert list(outputs) == ["a", "c"]  # recorded in the order they ran
    features, _ = next(iter_features(model, x, ["c", "a"]))
    assert [f.shape[1] for f in features] == [8, 8]
    with pytest.raises(LayerNotRunError, match="runs them in the order"):
        next(iter_features(model, x, ["c", "a"], in_forward_order=True))


def test_a_torch_fx_node_name_is_not_a_module_path():
    """torchvision's feature_extraction names graph nodes ('layer1.0.add'); hooks need modules."""
    from analysis.models import build_model

    model = build_model("resnet18", 10, 4)
    with pytest.raises(ValueError, match=r"unknown module path\(s\) \['layer1.0.add'\]"):
        LayerwiseDetector(layers=["layer1.0.add", "layer2", "layer3", "layer4"]).fit(model, REFERENCE)
