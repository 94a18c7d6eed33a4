"""Where an experiment's models come from: a dataset, architectures, a training profile and a cache (:class:`Study`).

Models come from the committed zoo when it has them (digits, the ``cpu`` profile unchanged), else they are
trained once into ``models_dir`` and reused, so interrupted runs resume. :meth:`Study.redraw` gives run r's
reference / evaluation split, the protocol every detection table shares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import paper_results as paper
from .attacks import ATTACKS, build_attack, dataset_attack_settings
from .checkpoints import DEFAULT_DIR, checkpoint_name, has_checkpoint
from .data import DatasetSplits, LabeledImages, stratified_fraction
from .defenses import REGISTRY
from .pipeline import AttackedModel, attacked_model
from .protocol import redraw
from .training import TrainConfig
from .zoo import adaptive_name

__all__ = ["OWN_TABLE_ATTACKS", "PROFILES", "Study", "default_attacks"]

PROFILES: dict[str, Callable[[str], TrainConfig]] = {
    "cpu": lambda arch: TrainConfig.cpu(arch),
    "paper": lambda arch: TrainConfig.paper(arch),
}

#: Registered attacks that are no column of the per-attack tables: the adaptive attack has its own (Table 7).
OWN_TABLE_ATTACKS = ("adaptive",)


def default_attacks() -> tuple[str, ...]:
    """The attacks the per-attack experiments run by default: every registered attack (the paper's first,
    in its order, then any other, so a newly registered attack needs no edit here) but :data:`OWN_TABLE_ATTACKS`."""
    ordered = [a for a in paper.ATTACKS if a in ATTACKS] + [a for a in ATTACKS if a not in paper.ATTACKS]
    return tuple(a for a in ordered if a not in OWN_TABLE_ATTACKS)


@dataclass
class Study:
    """Where and how models are obtained for one dataset.

    Models come from the zoo (``zoo_dir``) when it has them and the profile is ``cpu`` on digits,
    else from ``models_dir`` (trained there on first use, so interrupted runs resume).
    """

    data: DatasetSplits
    archs: tuple[str, ...] = ("resnet18", "mobilenetv2")
    profile: str = "cpu"
    runs: int = 5
    models_dir: Path = Path("results/models")
    zoo_dir: Path | None = DEFAULT_DIR
    progress: bool = True
    attacks: tuple[str, ...] = field(default_factory=default_attacks)  # read when the Study is made
    train_subset: int | None = None  # train on a seeded, stratified subset of this many images
    epochs: int | None = None  # override the profile's epochs
    batch_size: int | None = None  # override the profile's batch size
    max_eval: int | None = 100  # Tables 1/2: cap on benign and on poisoned inputs per run (None = all)
    defense_samples: int | None = None  # Tables 1/2: RS neighbours and STRIP blends per input (None = paper's 100)
    adaptive_betas: tuple[float, ...] = paper.ADAPTIVE_BETAS  # Table 7: the adaptive attack's betas
    _cache: dict = field(default_factory=dict, repr=False)

    def config(self, arch: str) -> TrainConfig:
        if self.profile not in PROFILES:
            raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {self.profile!r}")
        config = PROFILES[self.profile](arch)
        if self.epochs is not None:
            config.epochs = self.epochs
        if self.batch_size is not None:
            config.batch_size = self.batch_size
        return config

    def in_zoo(self, name: str) -> bool:
        """Whether checkpoint ``name`` comes from the zoo: digits, the cpu profile unchanged, and the zoo has it."""
        return (self.zoo_dir is not None and self.profile == "cpu" and self.data.name == "digits"
                and self.train_subset is None and self.epochs is None and self.batch_size is None
                and has_checkpoint(name, self.zoo_dir))

    def detector_settings(self, name: str) -> dict:
        """Settings a detector of Tables 1/2 gets on top of its defaults.

        Parameters
        ----------
        name : a detector name.

        Returns
        -------
        ``{setting: defense_samples}`` for a registered detector whose entry names a per-input sample count
        (:attr:`analysis.defenses.registry.DetectorSpec.samples`: RS's ``n_samples``, STRIP's ``n_blends``), else
        ``{}`` (also when ``defense_samples`` is None: the paper's 100).
        """
        key = REGISTRY[name].samples if name in REGISTRY else None
        return {key: self.defense_samples} if key and self.defense_samples is not None else {}

    def training_data(self) -> DatasetSplits:
        if self.train_subset is None or self.train_subset >= len(self.data.train):
            return self.data
        keep, _ = stratified_fraction(self.data.train.y.numpy(), self.train_subset / len(self.data.train), seed=0)
        return DatasetSplits(self.data.name, self.data.train.subset(keep), self.data.reference, self.data.test,
                             self.data.num_classes)

    def model(self, arch: str, attack: str, name: str | None = None, **settings) -> AttackedModel:
        """The attacked model for ``(arch, attack, settings)``: zoo, then cache, else trained and cached.

        ``settings`` override the dataset's own (:func:`analysis.attacks.dataset_attack_settings`).
        """
        atk = build_attack(attack, **{**dataset_attack_settings(self.data.name, attack), **settings})
        name = name or checkpoint_name(self.data.name, arch, attack)
        key = (arch, name)
        if key not in self._cache:
            use_zoo = self.in_zoo(name)
            folder = self.zoo_dir if use_zoo else self.models_dir
            self._cache[key] = attacked_model(
                self.data.name, arch, atk, config=self.config(arch), checkpoints=folder, save=not use_zoo,
                progress=self.progress, data=self.training_data(), cache_dir=self.models_dir / "cache", name=name,
            )
            run = self._cache[key]
            if run.data is not self.data:  # evaluate on the full splits even when trained on a subset
                self._cache[key] = AttackedModel(run.model, run.attack, self.data,
                                                 run.attack.poisoned_test_set(self.data.test), run.train_seconds,
                                                 run.loaded_from)
        return self._cache[key]

    def adaptive_model(self, arch: str, beta: float) -> AttackedModel:
        """The model of the adaptive attack at penalty ``beta`` (Table 7), under its own checkpoint name."""
        return self.model(arch, "adaptive", name=adaptive_name(self.data.name, arch, beta), beta=beta)

    def clean(self, arch: str) -> tuple:
        """``(model, train seconds)`` of the clean model of ``arch`` (zoo, cache, else trained and cached)."""
        from .pipeline import clean_model

        key = (arch, "clean")
        if key not in self._cache:
            name = checkpoint_name(self.data.name, arch, "clean")
            use_zoo = self.in_zoo(name)
            self._cache[key] = clean_model(self.data.name, arch, config=self.config(arch),
                                           checkpoints=self.zoo_dir if use_zoo else self.models_dir,
                                           save=not use_zoo, progress=self.progress, data=self.training_data())
        return self._cache[key]

    def redraw(self, run: int) -> tuple[LabeledImages, LabeledImages]:
        """Run ``run``'s (reference, evaluation) split (:func:`analysis.protocol.redraw`; run 0 is the dataset's own)."""
        return redraw(self.data, run)
