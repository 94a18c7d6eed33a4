import pytest
import torch

from analysis.models import build_model, cpu_width


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_models_classify_32x32_images(arch):
    model = build_model(arch, 7, cpu_width(arch)).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_resnet_stem_keeps_resolution():
    model = build_model("resnet18", 10, 8)
    assert model.stem(torch.rand(1, 3, 32, 32)).shape == (1, 8, 32, 32)  # 3x3 stride 1, no max-pool


def test_bad_architecture_settings():
    with pytest.raises(ValueError, match="arch: expected one of"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", 10, 0)
