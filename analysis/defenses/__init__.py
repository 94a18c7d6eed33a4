"""The six baseline defenses of the paper (Sec. 5.1, App. D.4), as input detectors with one interface.

Each is built with settings only, fitted with ``fit(model, reference, train=None)``
and used with ``predict(model, x)`` (``[N]`` bool, True = poisoned) and
``suspicion(model, x)`` (``[N]`` float, higher = more suspicious; ``score_samples`` is its negative,
higher = more normal, as in scikit-learn); see
:mod:`analysis.defenses.base`. Paper settings are the defaults.

=============  ==========================================  =========================================
name           class                                        flags an input when
=============  ==========================================  =========================================
``rs``         :class:`RandomizedSmoothing`                 the majority vote of 100 noisy copies differs
``shrinkpad``  :class:`ShrinkPad`                           the prediction changes after shrink + pad
``fp``         :class:`FinePruning`                         the pruned, fine-tuned copy disagrees
``ac``         :class:`ActivationClustering`                it is in a small 2-means cluster of its class
``strip``      :class:`STRIP`                               its entropy under blending is below the 10th pct
``scan``       :class:`SCAn`                                its class splits anomalously well in two
=============  ==========================================  =========================================

``RECENT_DEFENSES`` holds three later (2023-2024) input-level detectors, baselines beyond
the paper's, behind the same interface (each module's docstring lists its deviations):

=============  ==========================================  =========================================
name           class                                        flags an input when
=============  ==========================================  =========================================
``scale-up``   :class:`ScaleUp`                             its prediction survives pixel scaling ×3..×11
``ibd-psc``    :class:`IBDPSC`                              it stays confident with BN layers amplified
``ted``        :class:`TED`                                 its layer-wise neighbour-rank path is an outlier
=============  ==========================================  =========================================

``DETECTORS`` holds the six, the three recent ones and ``"layerwise"``:
:class:`~analysis.detection.LayerwiseDetector`, the paper's detector, itself a :class:`Defense`, and ``"layerwise-gaussian"``:
:class:`LayerwiseGaussianDetector` (not in the paper: per-layer class Gaussians, a threshold for a target FPR).

All three are live views of the one registry of detectors, :data:`analysis.defenses.registry.REGISTRY`, which
also holds each detector's variants (``ac-ref``, the layer-wise options), display label, paper row and budget.
"""
from __future__ import annotations

from ..detection import LayerwiseDetector
from .activation_clustering import ActivationClustering
from .base import Defense
from .fine_pruning import FinePruning
from .gaussian import LayerwiseGaussianDetector
from .ibd_psc import IBDPSC
from .randomized_smoothing import RandomizedSmoothing
from .registry import REGISTRY, DetectorSpec, view
from .scale_up import ScaleUp
from .scan import SCAn
from .shrinkpad import ShrinkPad
from .strip import STRIP
from .ted import TED

#: the paper's six baselines: name -> class (the registry's ``"baseline"`` entries without settings)
DEFENSES = view(lambda name, spec: spec.cls, lambda name, spec: spec.group == "baseline" and not spec.settings)

#: input-level detectors published after the paper (SCALE-UP 2023, IBD-PSC 2024, TED 2024): name -> class
RECENT_DEFENSES = view(lambda name, spec: spec.cls, lambda name, spec: spec.group == "recent" and not spec.settings)

#: every class registered under its own name (the registry's entries without settings): the six baselines, the
#: recent detectors, the paper's layer-wise detector and the layer-wise Gaussian detector calibrated for
#: a low false-positive rate (not in the paper), for comparison loops
DETECTORS = view(lambda name, spec: spec.cls, lambda name, spec: not spec.settings)


def build_defense(name: str, **settings) -> Defense:
    """The defense registered as ``name`` (:data:`DETECTORS`), built with ``settings``.

    Parameters
    ----------
    name : a key of :data:`DETECTORS` (a variant such as ``ac-ref``: :func:`analysis.comparison.build_detector`).
    **settings : constructor settings.

    Returns
    -------
    The unfitted defense.
    """
    if name not in DETECTORS:
        raise ValueError(f"name: unknown defense {name!r}; expected one of {sorted(DETECTORS)}")
    try:
        return DETECTORS[name](**settings)
    except TypeError as error:
        raise TypeError(f"settings of defense {name!r}: {error}") from None


__all__ = ["DEFENSES", "DETECTORS", "RECENT_DEFENSES", "REGISTRY", "TED", "ActivationClustering", "Defense", "DetectorSpec",
           "FinePruning", "IBDPSC", "LayerwiseDetector", "LayerwiseGaussianDetector", "RandomizedSmoothing", "SCAn", "STRIP",
           "ScaleUp", "ShrinkPad", "build_defense"]
