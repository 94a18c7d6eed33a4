"""The one registry of detectors: every detector name the toolkit knows, with all it knows about it.

:data:`REGISTRY` maps a name to a :class:`DetectorSpec`: the class built for it, the settings it adds (a variant
such as ``ac-ref``, the layer-wise options), its display label, the paper's Tables 1/2 row it is shown beside,
its group (which rows of the comparison tables it is) and its budget under the evaluation protocol. Everything
else reads it: :mod:`analysis.defenses` (``DEFENSES``, ``RECENT_DEFENSES``, ``DETECTORS``, ``build_defense``),
:mod:`analysis.comparison` (``available_defenses``, ``build_detector``, ``paper_key``, the ``VARIANTS`` and
``LAYERWISE_OPTIONS`` views), :mod:`analysis.protocol` (``CHEAP``), :class:`analysis.study.Study`
(``detector_settings``) and the apps (``LABELS``). Those names are live views (:func:`view`, :func:`names`): a
name added to :data:`REGISTRY`, even at run time, shows in every one of them.

Adding a detector takes its class module and one line here (see ``docs/extending.md``, "A defense").
"""
from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator

from ..detection import LayerwiseDetector
from .activation_clustering import ActivationClustering
from .base import Defense
from .fine_pruning import FinePruning
from .gaussian import LayerwiseGaussianDetector
from .ibd_psc import IBDPSC
from .randomized_smoothing import RandomizedSmoothing
from .scale_up import ScaleUp
from .scan import SCAn
from .shrinkpad import ShrinkPad
from .strip import STRIP
from .ted import TED

__all__ = ["BUDGETS", "DetectorSpec", "GROUPS", "REGISTRY", "base_name", "entry", "names", "view"]

#: What each group means: where the detector comes from, and which rows of Tables 1/2 it is.
GROUPS = {
    "baseline": "a baseline of the paper (or a variant of one): a default row of Tables 1/2",
    "paper": "the paper's layer-wise detector: a default row of Tables 1/2",
    "recent": "a detector published after the paper: a row of the extended Tables 1/2 (include_recent=True)",
    "option": "a layer-wise option beyond the paper: a row of the extended Tables 1/2 (include_recent=True)",
    "standalone": "registered and built by name, no row of Tables 1/2",
}

#: What each budget means under the evaluation protocol (:mod:`analysis.protocol`).
BUDGETS = {
    "cheap": "about one forward pass per input (plus work on features): it sees every evaluation input",
    "expensive": "many forward passes or a fine-tuning: it sees a seeded sample (protocol: 1,000 benign + 1,000 "
                 "triggered inputs; Tables 1/2: Study.max_eval each, see comparison.cap)",
}


@dataclass(frozen=True)
class DetectorSpec:
    """Everything the toolkit knows about one detector name.

    Parameters
    ----------
    cls : the :class:`~analysis.defenses.base.Defense` subclass built for the name.
    label : the short display label (apps, figures; the paper's abbreviations).
    group : one of :data:`GROUPS`.
    budget : one of :data:`BUDGETS`.
    paper : the key of the paper's Tables 1/2 row (:data:`analysis.paper_results.DEFENSES`) the detector's numbers
        are shown beside, None when the paper has no such row (its paper columns are NaN).
    settings : constructor settings on top of ``cls``'s defaults; non-empty for a variant of a registered
        class (``ac-ref``, the layer-wise options), whose base is :func:`base_name`.
    samples : the setting that ``Study.defense_samples`` (``reproduce --defense-samples``) sets, for a detector
        that runs that many forward passes per input (RS: ``n_samples``, STRIP: ``n_blends``); None otherwise.
    """

    cls: type[Defense]
    label: str
    group: str
    budget: str
    paper: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    samples: str | None = None

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group: expected one of {sorted(GROUPS)}, got {self.group!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {sorted(BUDGETS)}, got {self.budget!r}")


def entry(cls: type[Defense], label: str, group: str, budget: str, *, paper: str | None = None,
          samples: str | None = None, **settings) -> DetectorSpec:
    """One line of :data:`REGISTRY`: a :class:`DetectorSpec` whose keyword arguments beyond ``paper`` and
    ``samples`` are its ``settings`` (read-only).

    Examples
    --------
    >>> entry(ActivationClustering, "AC-ref", "baseline", "cheap", paper="ac", criterion="reference").settings
    mappingproxy({'criterion': 'reference'})
    """
    return DetectorSpec(cls, label, group, budget, paper, MappingProxyType(dict(settings)), samples)


#: name -> :class:`DetectorSpec`, in the order of the comparison tables' rows (the paper's first, in its order).
REGISTRY: dict[str, DetectorSpec] = {
    "rs": entry(RandomizedSmoothing, "RS", "baseline", "expensive", paper="rs", samples="n_samples"),
    "shrinkpad": entry(ShrinkPad, "ShPd", "baseline", "expensive", paper="shrinkpad"),
    "fp": entry(FinePruning, "FP", "baseline", "expensive", paper="fp"),
    "ac": entry(ActivationClustering, "AC", "baseline", "cheap", paper="ac"),
    "strip": entry(STRIP, "STRIP", "baseline", "expensive", paper="strip", samples="n_blends"),
    "scan": entry(SCAn, "SCAn", "baseline", "cheap", paper="scan"),
    "layerwise": entry(LayerwiseDetector, "Ours", "paper", "cheap", paper="layerwise"),
    # AC's default criterion (relative cluster size, as in Chen et al.) flags the *smaller* cluster, which on a
    # test set where triggered inputs outnumber benign ones is the benign one; "reference" flags the cluster
    # holding fewer reference samples. Shown beside the paper's AC.
    "ac-ref": entry(ActivationClustering, "AC-ref", "baseline", "cheap", paper="ac", criterion="reference"),
    # SCALE-UP 2023, IBD-PSC 2024, TED 2024
    "scale-up": entry(ScaleUp, "SCALE-UP", "recent", "expensive"),
    "ibd-psc": entry(IBDPSC, "IBD-PSC", "recent", "expensive"),
    "ted": entry(TED, "TED", "recent", "cheap"),
    "layerwise-trajectory": entry(LayerwiseDetector, "Ours, trajectory", "option", "cheap", score="trajectory"),
    "layerwise-trajectory-fpr5": entry(LayerwiseDetector, "Ours, trajectory @5%", "option", "cheap",
                                       score="trajectory", target_fpr=0.05),
    # per-layer class Gaussians, a threshold for a target FPR (not in the paper; benchmarks/low_fpr.py)
    "layerwise-gaussian": entry(LayerwiseGaussianDetector, "layerwise-gaussian", "standalone", "cheap"),
}


def base_name(name: str) -> str:
    """The registered class's own name behind detector ``name``: itself, or for a variant the entry of its class.

    Parameters
    ----------
    name : a name of :data:`REGISTRY`.

    Returns
    -------
    ``name`` when its entry has no settings; else the name of the settings-free entry of the same class
    (``"ac-ref"`` -> ``"ac"``, ``"layerwise-trajectory"`` -> ``"layerwise"``).
    """
    spec = REGISTRY[name]
    if not spec.settings:
        return name
    return next(other for other, s in REGISTRY.items() if s.cls is spec.cls and not s.settings)


class _View(Mapping):
    """A read-only mapping ``name -> value(name, spec)`` over the entries of :data:`REGISTRY` where ``keep``."""

    def __init__(self, value: Callable[[str, DetectorSpec], Any], keep: Callable[[str, DetectorSpec], bool]):
        self._value, self._keep = value, keep

    def __getitem__(self, name: str):
        if name not in REGISTRY or not self._keep(name, REGISTRY[name]):
            raise KeyError(name)
        return self._value(name, REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return (name for name, spec in list(REGISTRY.items()) if self._keep(name, spec))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Names(Set):
    """A read-only set of the names of :data:`REGISTRY` where ``keep``."""

    def __init__(self, keep: Callable[[str, DetectorSpec], bool]):
        self._keep = keep

    @classmethod
    def _from_iterable(cls, iterable):
        return frozenset(iterable)

    def __contains__(self, name) -> bool:
        return name in REGISTRY and self._keep(name, REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return (name for name, spec in list(REGISTRY.items()) if self._keep(name, spec))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self))}}}"


def view(value: Callable[[str, DetectorSpec], Any], keep: Callable[[str, DetectorSpec], bool] = lambda n, s: True
         ) -> Mapping:
    """A live, read-only mapping ``name -> value(name, spec)`` of the :data:`REGISTRY` entries where ``keep``.

    Parameters
    ----------
    value : what the view gives for an entry.
    keep : which entries it holds (default: all).

    Returns
    -------
    A :class:`collections.abc.Mapping` that reads :data:`REGISTRY` on every access, in its order.
    """
    return _View(value, keep)


def names(keep: Callable[[str, DetectorSpec], bool]) -> Set:
    """A live, read-only set of the :data:`REGISTRY` names where ``keep(name, spec)`` (``&``, ``|``, ``in`` work).

    Parameters
    ----------
    keep : which entries it holds.

    Returns
    -------
    A :class:`collections.abc.Set` that reads :data:`REGISTRY` on every access.
    """
    return _Names(keep)
