"""The input contract: float images, channels first, values in [0, 1], the size the detector was fitted on.

Images outside it used to run through and give wrong answers without a word (uint8 images: every benign
input flagged; a channels-last batch: a BadNets patch stamped on the wrong axes). Every entry point now
checks them with one function, :func:`analysis.validation.check_images`, and says what it expected and got.
"""
import numpy as np
import pytest
import torch

from analysis.attacks import BadNets
from analysis.data import LabeledImages
from analysis.defenses import build_defense
from analysis.detection import LayerwiseDetector
from analysis.features import predict_classes
from analysis.models import build_model
from analysis.validation import check_images

pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")

GOOD = torch.rand(4, 3, 32, 32)
BAD_IMAGES = {  # what a new user passes, and the words the error must contain
    "uint8 0-255": ((GOOD * 255).to(torch.uint8), r"expected floating-point images .*dtype torch.uint8 .*divide 8-bit images by 255"),
    "float 0-255": (GOOD * 255, r"expected values in \[0, 1\], got values from .* look like 0-255 pixel values"),
    "normalised [-1, 1]": (GOOD * 2 - 1, r"expected values in \[0, 1\], got values from -.*look normalised"),
    "channels last": (GOOD.permute(0, 2, 3, 1), r"expected channels first \[N, C, H, W\].*looks like channels last"),
    "NaN": (torch.full((2, 3, 32, 32), float("nan")), "contains NaN or inf"),
    "3-D": (GOOD[0], r"expected images of shape \[N, C, H, W\]"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_check_images_names_the_problem(case):
    images, message = BAD_IMAGES[case]
    with pytest.raises(ValueError, match="x: " + message):
        check_images(images, "x")


def test_good_images_pass_unchanged_and_arrays_are_converted():
    assert check_images(GOOD) is GOOD
    converted = check_images(GOOD.numpy().astype(np.float64))
    assert isinstance(converted, torch.Tensor) and converted.dtype == torch.float64
    edge = torch.tensor([0.0, 1.0 + 1e-7]).view(1, 1, 1, 2).repeat(1, 3, 1, 1)  # a rounding hair above 1 is fine
    check_images(edge)


def test_labeled_images_hold_the_contract_from_construction():
    with pytest.raises(ValueError, match="x: expected floating-point images"):
        LabeledImages((GOOD * 255).to(torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
        LabeledImages(GOOD * 2 - 1, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="y: expected integer class labels"):
        LabeledImages(GOOD, torch.zeros(4))
    with pytest.raises(ValueError, match="y: expected class labels >= 0, got -1"):
        LabeledImages(GOOD, torch.tensor([0, 1, -1, 2]))
    assert len(LabeledImages(GOOD[:0], torch.zeros(0, dtype=torch.long))) == 0  # an empty selection is fine


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(12, 3, 32, 32), torch.arange(12) % 3)
    detector = LayerwiseDetector(unknown_class="flag").fit(model, reference)
    return model, reference, detector


@pytest.mark.parametrize("case", ["uint8 0-255", "float 0-255", "normalised [-1, 1]", "channels last"])
def test_every_entry_point_refuses_images_outside_the_contract(fitted, case):
    model, reference, detector = fitted
    images, message = BAD_IMAGES[case]
    for call in (lambda: detector.detect(model, images), lambda: detector.layerwise_similarity(model, images, 0),
                 lambda: predict_classes(model, images), lambda: BadNets().apply_trigger(images),
                 lambda: build_defense("shrinkpad").fit(model, reference).predict(model, images)):
        with pytest.raises(ValueError, match="x: " + message):
            call()


def test_inputs_must_have_the_size_the_detector_was_fitted_on(fitted):
    model, _, detector = fitted
    assert detector.input_shape_ == (3, 32, 32)
    with pytest.raises(ValueError, match=r"x: expected images of shape \[N, 3, 32, 32\] \(the shape the detector "
                                         r"was fitted on\), got \[N, 3, 64, 64\]"):
        detector.detect(model, torch.rand(2, 3, 64, 64))


def test_a_float64_or_float16_model_is_fed_inputs_of_its_own_dtype(fitted):
    """Features follow the model's dtype; the detector's sums are float64 whatever it is."""
    model, reference, detector = fitted
    x = torch.rand(5, 3, 32, 32)
    expected = detector.detect(model, x)
    double = build_model("resnet18", 3, 2).eval()
    double.load_state_dict(model.state_dict())
    double.double()
    found = LayerwiseDetector(unknown_class="flag").fit(double, reference).detect(double, x)
    np.testing.assert_array_equal(found.predicted, expected.predicted)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5)
    assert next(double.parameters()).dtype == torch.float64  # the model is left as it was
    half = build_model("resnet18", 3, 2).eval()
    half.load_state_dict(model.state_dict())
    half.half()
    assert predict_classes(half, x).shape == (5,)


def test_the_baseline_defenses_refuse_a_model_that_is_not_float32(fitted):
    model, reference, _ = fitted
    defense = build_defense("shrinkpad").fit(model, reference)
    double = build_model("resnet18", 3, 2).eval().double()
    with pytest.raises(ValueError, match="model: the baseline defenses run float32 models, got ResNet18 with "
                                         "torch.float64 parameters"):
        defense.predict(double, torch.rand(2, 3, 32, 32))


def test_a_trigger_is_stamped_on_the_image_plane_never_across_channels():
    """What the layout check protects: BadNets' patch lies in a corner of H x W (on NHWC input it was not)."""
    x = torch.zeros(1, 3, 32, 32)
    stamped = BadNets(size=3).apply_trigger(x)
    changed = (stamped != x).any(1)[0]
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert rows.min() >= 29 - 3 and cols.min() >= 29 - 3  # the corner, not a channel axis


def test_a_class_index_that_is_not_a_whole_number_is_refused_not_truncated(fitted):
    model, reference, detector = fitted
    with pytest.raises(ValueError, match=r"classes: expected an integer >= 0, got 1.7 \(not a whole number"):
        detector.layerwise_similarity(model, reference.x[:2], 1.7)


def test_a_reference_missing_a_million_classes_gets_a_short_message_fast():
    from analysis.reference_checks import check_reference_counts

    with pytest.raises(ValueError, match=r"classes \[2, 3, 4, .*\.\.\. \(999998 in all\)\] have no reference") as info:
        check_reference_counts(np.repeat([0, 1], 5), num_classes=1_000_000)
    assert len(str(info.value)) < 300
