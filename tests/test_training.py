import pytest
import torch

from analysis.data import LabeledImages
from analysis.models import build_model
from analysis.training import TrainConfig, random_shift, train


def _tiny():
    g = torch.Generator().manual_seed(0)
    return LabeledImages(torch.rand(40, 3, 32, 32, generator=g), torch.arange(40) % 4)


def test_training_is_seeded_and_reports_history():
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("resnet18", 4, 4)
        history = train(model, _tiny(), TrainConfig(epochs=2, batch_size=16, seed=5), device="cpu", progress=False,
                        eval_sets={"train": _tiny()})
        weights.append(model.fc.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert [r["epoch"] for r in history.records] == [1, 2]
    assert {"loss", "train_acc", "lr", "seconds", "eval_train"} <= set(history.records[0])
    assert not model.training


def test_random_shift_moves_content_and_zero_fills():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and torch.all(shifted.sum((1, 2, 3)) == 1.0)  # the dot stays inside
    positions = {tuple(img[0].nonzero()[0].tolist()) for img in shifted}
    assert len(positions) > 10  # many different offsets in [-2, 2]^2


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0}, {"schedule": "cosine"}, {"augment": "flip"}])
def test_bad_config(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_paper_profile():
    config = TrainConfig.paper("resnet18")
    assert (config.epochs, config.lr, config.milestones, config.batch_size) == (200, 0.1, (100, 150), 128)
    assert TrainConfig.paper("mobilenetv2").lr == 0.01


def test_cpu_profile():
    # MobileNetV2 gets a higher peak lr (at 0.05 it did not learn BadNets on digits in 30 epochs)
    resnet, mobilenet = TrainConfig.cpu("resnet18"), TrainConfig.cpu("mobilenetv2", seed=3)
    assert (resnet.epochs, resnet.lr, resnet.batch_size, resnet.schedule) == (30, 0.05, 128, "onecycle")
    assert (mobilenet.epochs, mobilenet.lr, mobilenet.batch_size, mobilenet.seed) == (30, 0.1, 128, 3)
