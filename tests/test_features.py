"""Hook-based extraction: layers by module path, hooks always removed, paper layer lists."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.features import (LayerNotRunError, capture, extract_features, iter_features, paper_layers, predict_classes,
                               resolve_layers)
from analysis.models import MobileNetV2, ResNet18, build_model


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_paper_layer_lists_match_appendix_d1():
    resnet, mobilenet = ResNet18(10, width=4), MobileNetV2(10, width_mult=0.25)
    assert len(paper_layers(resnet)) == 10  # stem, 8 residual blocks, logits
    assert paper_layers(resnet)[0] == "stem" and paper_layers(resnet)[-1] == "fc"
    assert len(paper_layers(mobilenet)) == 19  # 17 inverted-residual blocks, pooled 1x1 conv, logits
    assert paper_layers(mobilenet)[-2:] == ["pool", "classifier"]
    for model in (resnet, mobilenet):
        resolve_layers(model, paper_layers(model))  # every name exists


def test_features_are_flattened_outputs_and_logits_match_the_model():
    model = ResNet18(10, width=4).eval()
    x = torch.rand(5, 3, 32, 32)
    feats, predicted = extract_features(model, x, ["stem", "layer4.1", "fc"], batch_size=2)
    assert [f.shape for f in feats] == [(5, 4 * 32 * 32), (5, 32 * 4 * 4), (5, 10)]
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_allclose(feats[2], logits.numpy(), rtol=1e-5, atol=1e-6)
    assert predicted.tolist() == logits.argmax(1).tolist()


def test_hooks_are_removed_after_use_and_after_errors():
    model = ResNet18(10, width=4)
    with capture(model, ["stem", "fc"]) as outputs:
        assert _hook_count(model) == 4  # one per layer, and the model's own pre- and post-pass checks
        model(torch.rand(1, 3, 32, 32))
        assert set(outputs) == {"stem", "fc"}
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError):
        with capture(model, ["stem"]):
            model(torch.rand(1, 5, 32, 32))  # wrong channel count: the forward pass raises
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError):
        for _ in iter_features(model, torch.rand(2, 5, 32, 32), ["stem"]):
            pass
    assert _hook_count(model) == 0


def test_unknown_layer_names_list_the_available_ones():
    model = ResNet18(10, width=4)
    with pytest.raises(ValueError, match=r"unknown module path\(s\) \['layer9'\]; available: stem, stem.0"):
        resolve_layers(model, ["stem", "layer9"])
    with pytest.raises(TypeError, match="single string"):
        resolve_layers(model, "stem")


def test_any_module_can_be_analysed_by_path():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    feats, _ = extract_features(model, torch.rand(4, 3, 2, 2), ["1", "2", "3"])
    assert [f.shape[1] for f in feats] == [6, 6, 3]
    with pytest.raises(ValueError, match="has no 'paper_layers'"):
        paper_layers(model)


def test_training_mode_is_restored():
    model = build_model("resnet18", 10, 4).train()
    extract_features(model, torch.rand(2, 3, 32, 32), ["stem"])
    assert model.training
    assert _hook_count(model) == 0


class _Branchy(nn.Module):
    """``skip`` runs only when ``use_skip``; ``act`` runs twice per pass (as ReLU in torchvision's blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.skip, self.act = nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU()
        self.use_skip = True

    def forward(self, x):
        x = self.a(x)
        if self.use_skip:
            x = self.skip(x)
        return self.act(self.act(x) - 0.1)


def test_a_layer_that_does_not_run_raises_instead_of_returning_the_previous_batch():
    model = _Branchy()
    with capture(model, ["a", "skip"]) as outputs:
        model(torch.rand(3, 4))
        assert outputs["skip"].shape == (3, 4)
        model.use_skip = False
        with pytest.raises(LayerNotRunError, match=r"\['skip'\] did not run"):
            model(torch.rand(5, 4))
        assert "skip" not in outputs  # emptied when the pass started: never the 3-row batch from before
    assert _hook_count(model) == 0


def test_a_layer_that_runs_twice_in_one_pass_is_ambiguous():
    model = _Branchy()
    with pytest.raises(LayerNotRunError, match="'act' ran more than once"):
        with capture(model, ["act"]):
            model(torch.rand(2, 4))
    assert _hook_count(model) == 0


def test_every_submodule_gets_its_own_mode_back():
    """A training model whose BatchNorm the user froze keeps it frozen after features, predictions and a fit."""
    from analysis.detection import LayerwiseDetector
    from analysis.devices import evaluation_mode

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 3, 8, 8))  # materialise the lazy layer
    model.train()
    model[1].eval()  # frozen BatchNorm
    modes = [m.training for m in model.modules()]
    images = torch.rand(6, 3, 8, 8)
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules())
    extract_features(model, images, ["0", "4"])
    predict_classes(model, images)
    LayerwiseDetector(layers=["0", "1", "2", "4"]).fit(model, LabeledImages(images, torch.tensor([0, 1] * 3)))
    assert [m.training for m in model.modules()] == modes
