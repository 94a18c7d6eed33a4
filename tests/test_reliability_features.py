"""Captured features are the module's own output, even when a later module rewrites it in place (issue 33, class 3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet18

from analysis.features import capture, iter_features


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that the BN outputs have many negative values
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def _reference(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The BatchNorm outputs computed by running each BN module directly on its own input."""
    inputs: dict[str, torch.Tensor] = {}
    handles = [model.bn1.register_forward_pre_hook(lambda m, i: inputs.__setitem__("bn1", i[0].clone())),
               model.layer1[0].bn2.register_forward_pre_hook(lambda m, i: inputs.__setitem__("bn2", i[0].clone()))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        return {"bn1": model.bn1(inputs["bn1"]).flatten(1), "layer1.0.bn2": model.layer1[0].bn2(inputs["bn2"]).flatten(1)}


def test_captured_batchnorm_outputs_survive_inplace_relu_and_residual_add():
    model = _model()
    assert model.relu.inplace  # bn1 is followed by ReLU(inplace=True); layer1.0.bn2 by `out += identity`
    x = torch.rand(3, 3, 32, 32)
    expected = _reference(model, x)
    with torch.no_grad(), capture(model, ["bn1", "layer1.0.bn2"]) as outputs:
        model(x)
    for name, want in expected.items():
        assert (want < 0).any(), name  # the reference has negative values, which an in-place ReLU would clip
        torch.testing.assert_close(outputs[name], want, rtol=0, atol=0, msg=name)


def test_iter_features_gets_the_true_batchnorm_output():
    model = _model()
    x = torch.rand(4, 3, 32, 32)
    expected = _reference(model, x)
    (features, _), = list(iter_features(model, x, ["bn1", "layer1.0.bn2"]))
    torch.testing.assert_close(features[0], expected["bn1"], rtol=0, atol=0)
    torch.testing.assert_close(features[1], expected["layer1.0.bn2"], rtol=0, atol=0)


def test_pool_still_averages_the_true_output():
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    expected = _reference(model, x)["bn1"].view(2, 64, 16, 16).mean((2, 3))
    with torch.no_grad(), capture(model, ["bn1"], pool=True) as outputs:
        model(x)
    assert outputs["bn1"].shape == (2, 64)
    torch.testing.assert_close(outputs["bn1"], expected)


def test_detach_false_keeps_the_autograd_graph():
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    with capture(model, ["bn1", "layer1.0.bn2"], detach=False) as outputs:
        model(x)
    captured = outputs["layer1.0.bn2"]
    assert captured.requires_grad and captured.grad_fn is not None
    captured.sum().backward()  # the in-place ops after the hook must not break the graph
    assert model.layer1[0].bn2.weight.grad is not None and model.layer1[0].bn2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_captured_tensor_does_not_share_storage_with_the_module_output(detach):
    block = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True))
    with capture(block, ["0"], detach=detach) as outputs:
        out = block(torch.randn(8, 4) * 10)
    assert outputs["0"].data_ptr() != out.data_ptr()
    assert (outputs["0"] < 0).any()
