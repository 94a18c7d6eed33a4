"""The ``Examples`` sections of the public docstrings run as written (doctest), so they cannot go stale."""
import doctest
import importlib

import pytest

MODULES = ("analysis.attacks.badnets", "analysis.checkpoints", "analysis.data", "analysis.defenses.base",
           "analysis.defenses.scale_up", "analysis.devices", "analysis.operating_point",
           "analysis.defenses.gaussian", "analysis.detection", "analysis.detection_options", "analysis.detector_inputs",
           "analysis.diagnostics", "analysis.estimator", "analysis.features", "analysis.metrics", "analysis.model_plan",
           "analysis.protocol", "analysis.similarity", "analysis.validation")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no examples found"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see the output above)"
