"""Models and precomputed explorers for the notebooks, each built once per session.

A :class:`Workbench` holds one dataset. It hands out attacked models (from the checkpoint zoo on
digits, else trained once into ``models_dir`` with a progress bar, through
:class:`analysis.study.Study`) and :class:`~analysis.explore.LayerwiseExplorer` objects,
which run the model once over the reference, benign and poisoned images. Both are cached per
(architecture, model, metric), so moving a widget never reruns a model and switching back to an
attack seen before costs nothing.

Model variants are named as in the zoo: BadNets at another poisoning ``rate`` (Table 4) and the
adaptive attack at penalty ``beta`` (Table 7).
"""
from __future__ import annotations

from pathlib import Path

from .checkpoints import DEFAULT_DIR
from .data import DatasetSplits, load_dataset
from .detection import LayerwiseDetector
from .study import Study
from .explore import LayerwiseExplorer
from .pipeline import AttackedModel
from .zoo import badnets_rate_name


class Workbench:
    """Attacked models and their explorers for one dataset, built on first use and cached.

    Parameters
    ----------
    dataset : ``"digits"`` (embedded, models from the zoo), ``"cifar10"``, ``"gtsrb"`` or ``"npz"``.
    root : the download folder (cifar10, gtsrb) or the ``.npz`` file; None for digits.
    models_dir : where models that are not in the zoo are trained and kept (resumable).
    zoo_dir : the checkpoint zoo (None: train every model).
    progress : show progress bars while training.
    tau : the detector's threshold for the explorers (paper: 2.5).
    """

    def __init__(self, dataset: str = "digits", root: str | Path | None = None, *,
                 models_dir: str | Path = "results/models", zoo_dir: str | Path | None = DEFAULT_DIR,
                 progress: bool = True, tau: float = 2.5, data: DatasetSplits | None = None) -> None:
        self.data = data if data is not None else load_dataset(dataset, root)
        self.tau = tau
        self.study = Study(self.data, models_dir=Path(models_dir), zoo_dir=None if zoo_dir is None else Path(zoo_dir),
                           progress=progress)
        self._explorers: dict[tuple, LayerwiseExplorer] = {}

    @property
    def attacks(self) -> tuple[str, ...]:
        """The study's attacks: every registered one but the adaptive attack (reached through ``beta``), the paper's six first."""
        return self.study.attacks

    def model(self, arch: str, attack: str, *, rate: float | None = None, beta: float | None = None) -> AttackedModel:
        """The model of ``arch`` attacked by ``attack``; ``rate`` (BadNets) or ``beta`` (adaptive) pick a variant."""
        if rate is not None and beta is not None:
            raise ValueError(f"rate, beta: give at most one, got rate={rate!r} and beta={beta!r}")
        if rate is not None:
            if attack != "badnets":
                raise ValueError(f"rate: only BadNets has poisoning-rate variants, got attack {attack!r}")
            return self.study.model(arch, attack, name=badnets_rate_name(self.data.name, arch, rate), rate=rate)
        if beta is not None or attack == "adaptive":
            beta = 0.0 if beta is None else beta
            return self.study.adaptive_model(arch, beta)
        return self.study.model(arch, attack)

    def explorer(self, arch: str, attack: str, *, rate: float | None = None, beta: float | None = None,
                 metric: str = "cosine") -> LayerwiseExplorer:
        """The :class:`LayerwiseExplorer` of that model, with a detector fitted on the reference split (cached)."""
        key = (arch, attack, rate, beta, metric)
        if key not in self._explorers:
            run = self.model(arch, attack, rate=rate, beta=beta)
            detector = LayerwiseDetector(tau=self.tau, metric=metric).fit(run.model, run.data.reference)
            self._explorers[key] = LayerwiseExplorer(run.model, detector, run.data.test, run.poisoned_test,
                                                     target=run.attack.target)
        return self._explorers[key]


__all__ = ["Workbench"]
