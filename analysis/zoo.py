"""The checkpoint zoo: which attacked models ship in ``checkpoints/``, how to rebuild and verify them.

``python -m analysis zoo build [--only NAME ...]`` trains entries deterministically on a CPU and
writes them (float16 safetensors + ``manifest.json``); ``python -m analysis zoo verify`` checks every
file's sha256 and re-measures MA and ASR against the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .attacks import ATTACKS, build_attack, dataset_attack_settings
from .checkpoints import DEFAULT_DIR, check_entry, checkpoint_name, load_checkpoint, read_manifest
from .data import DatasetSplits, load_dataset
from .metrics import attack_metrics
from .models import ARCHITECTURES
from .paper_results import ADAPTIVE_BETAS, TABLE4_RATES
from .paper_results import ATTACKS as PAPER_ATTACKS
from .paper_results import RATES as ATTACK_RATES
from .training import TrainConfig

__all__ = ["VERIFY_STATUSES", "VerifyResult", "ZOO_ATTACKS", "ZooEntry", "adaptive_name", "badnets_rate_name", "build",
           "select", "verify", "zoo_entries"]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: an attack (with settings) on a dataset and architecture."""

    name: str
    arch: str
    attack: str
    settings: dict = field(default_factory=dict)
    dataset: str = "digits"
    config: TrainConfig | None = None  # None: TrainConfig.cpu(arch)

    def build_attack(self):
        return build_attack(self.attack, **self.settings)


#: The attacks the zoo ships: the paper's six, then the adaptive attack (at ``ADAPTIVE_BETAS``). A newly
#: registered attack is not in the zoo (``reproduce`` trains it into its results folder) until it is added
#: here deliberately; then ``python -m analysis zoo build --only digits-ARCH-NAME ...`` and commit ``checkpoints/``.
ZOO_ATTACKS: tuple[str, ...] = (*PAPER_ATTACKS, "adaptive")


def zoo_entries(archs: tuple[str, ...] = ARCHITECTURES) -> list[ZooEntry]:
    """Every registered attack of :data:`ZOO_ATTACKS` with its paper settings (the adaptive attack at ``ADAPTIVE_BETAS``, a subset of Table 7's), per arch.

    Settings that differ on digits come from :data:`analysis.attacks.DATASET_ATTACK_SETTINGS`. The first
    architecture also gets BadNets at Table 4's other poisoning rates, so ``reproduce`` trains nothing.
    """
    entries = []
    for arch in archs:
        entries.append(ZooEntry(checkpoint_name("digits", arch, "clean"), arch, "clean"))
        for attack in [a for a in ZOO_ATTACKS if a in ATTACKS]:
            if attack == "adaptive":
                for beta in ADAPTIVE_BETAS:
                    entries.append(ZooEntry(adaptive_name("digits", arch, beta), arch, attack, {"beta": beta}))
            else:
                entries.append(ZooEntry(checkpoint_name("digits", arch, attack), arch, attack,
                                        dataset_attack_settings("digits", attack)))
        if arch == archs[0]:
            entries += [ZooEntry(badnets_rate_name("digits", arch, rate), arch, "badnets", {"rate": rate})
                        for rate in sorted(TABLE4_RATES) if rate != ATTACK_RATES["badnets"]]
    return entries


def badnets_rate_name(dataset: str, arch: str, rate: float) -> str:
    """Checkpoint name of BadNets at poisoning ``rate`` (Table 4); the paper's 5% is the plain BadNets entry."""
    return checkpoint_name(dataset, arch, "badnets", "" if rate == ATTACK_RATES["badnets"] else f"r{rate:g}")


def adaptive_name(dataset: str, arch: str, beta: float) -> str:
    """Checkpoint name of the adaptive attack at penalty ``beta`` (Table 7)."""
    return checkpoint_name(dataset, arch, "adaptive", f"b{beta:g}")


def select(entries: list[ZooEntry], only: list[str] | None) -> list[ZooEntry]:
    """Entries whose name is in ``only`` (all when None); unknown names raise with the valid ones."""
    if not only:
        return entries
    names = {entry.name for entry in entries}
    unknown = sorted(set(only) - names)
    if unknown:
        raise ValueError(f"only: unknown zoo entries {unknown}; available: {sorted(names)}")
    return [entry for entry in entries if entry.name in only]


def build(
    only: list[str] | None = None,
    folder: str | Path = DEFAULT_DIR,
    entries: list[ZooEntry] | None = None,
    data: DatasetSplits | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> list[str]:
    """Train and save the selected entries (replacing existing files); returns the names built.

    ``cache_dir`` keeps costly attack preparations (ISSBA's encoder, IAD's mask generator, LC's
    benign model and perturbed images) so that, e.g., both architectures share one ISSBA encoder.
    """
    from .pipeline import attacked_model, clean_model

    chosen = select(entries if entries is not None else zoo_entries(), only)
    built = []
    for entry in chosen:
        split = data or load_dataset(entry.dataset)
        config = entry.config or TrainConfig.cpu(entry.arch)
        if entry.attack == "clean":
            clean_model(entry.dataset, entry.arch, config=config, checkpoints=folder, retrain=True, save=True,
                        progress=progress, data=split)
            built.append(entry.name)
            continue
        attacked_model(entry.dataset, entry.arch, entry.build_attack(), config=config, checkpoints=folder,
                       retrain=True, save=True, progress=progress, data=split, name=entry.name, cache_dir=cache_dir)
        built.append(entry.name)
    return built


#: The outcomes of ``zoo verify`` for one entry: the re-measured MA and ASR match the manifest; something differs
#: or cannot be loaded or measured; or the entry loads but has nothing to compare (no recorded MA, an ASR that
#: cannot be re-measured), which is not a pass.
VERIFY_STATUSES = ("ok", "failed", "unverified")


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying one manifest entry: ``status`` (one of :data:`VERIFY_STATUSES`) and why.

    ``ok`` is True only when every metric the manifest records was re-measured and matched, and at least the
    model accuracy (MA) was compared: an entry that could not be compared is ``"unverified"``, never ``ok``.
    """

    name: str
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in VERIFY_STATUSES:
            raise ValueError(f"status: expected one of {list(VERIFY_STATUSES)}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify(folder: str | Path = DEFAULT_DIR, tolerance: float = 0.005, data: DatasetSplits | None = None) -> list[VerifyResult]:
    """Check each manifest entry: hash (on load), then MA and ASR re-measured within ``tolerance`` (fraction).

    One bad entry never stops the others: a malformed manifest entry (:func:`analysis.checkpoints.check_entry`),
    a missing file, a file that is not safetensors, a config that cannot rebuild the model or metrics that
    cannot be re-measured each give that entry a ``"failed"`` :class:`VerifyResult` saying why. An entry that
    loads but cannot be compared (no MA recorded, an ASR recorded for a model without an attack, a metric
    that is not a number) is ``"unverified"``, not ``"ok"``.
    """
    from numbers import Real

    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance: expected a finite number >= 0 (a fraction, e.g. 0.005), got {tolerance!r}")

    def one_line(error: BaseException) -> str:
        text = error.args[0] if isinstance(error, KeyError) and error.args else error
        text = " ".join(str(text).split())
        return text if len(text) <= 300 else text[:297] + "..."

    def measure(name: str, model, entry: dict, extra: dict) -> VerifyResult:
        config = entry["config"]
        split = data or load_dataset(config["dataset"])
        poisoned = target = None
        if config.get("attack"):
            attack = build_attack(config["attack"], **_constructor_settings(config.get("attack_settings") or {}))
            attack.load_state_tensors(extra)
            poisoned, target = attack.poisoned_test_set(split.test), attack.target
        measured = attack_metrics(model, split.test, poisoned, target)
        measured = {"ma": measured["ma"], "asr": measured.get("asr", float("nan"))}
        expected = entry.get("metrics")
        expected = expected if isinstance(expected, dict) else {}
        compared, problems, uncompared = [], [], []
        for key, value in measured.items():
            recorded = expected.get(key)
            if recorded is None:
                if not np.isnan(value):
                    uncompared.append(f"the manifest records no {key.upper()}")
                continue
            if isinstance(recorded, bool) or not isinstance(recorded, (int, float)) or not np.isfinite(recorded):
                uncompared.append(f"the manifest's {key.upper()} is {recorded!r}, not a number")
            elif np.isnan(value):
                uncompared.append(f"the manifest records {key.upper()} {recorded:.4f} but it cannot be re-measured "
                                  f"(no attack in the config)")
            elif abs(value - recorded) > tolerance:
                problems.append(f"{key} {value:.4f} vs manifest {recorded:.4f}")
            else:
                compared.append(f"{key.upper()} {value:.2%}")
        if problems:
            return VerifyResult(name, "failed", "; ".join(problems))
        if uncompared:
            return VerifyResult(name, "unverified", "sha256 ok, but " + "; ".join(uncompared) + (
                f" (matched: {', '.join(compared)})" if compared else ""))
        return VerifyResult(name, "ok", "sha256 ok, " + ", ".join(compared))

    results = []
    manifest = read_manifest(folder)
    for name, entry in sorted(manifest["entries"].items()):
        try:
            check_entry(name, entry, folder)
        except ValueError as error:
            results.append(VerifyResult(name, "failed", one_line(error).removeprefix(f"checkpoint {name!r}: ")))
            continue
        try:
            model, entry, extra = load_checkpoint(name, folder)
        except (ValueError, TypeError, RuntimeError, OSError) as error:  # ChecksumError, a missing or corrupt file
            results.append(VerifyResult(name, "failed", one_line(error).removeprefix(f"checkpoint {name!r}: ")))
            continue
        try:
            results.append(measure(name, model, entry, extra))
        except KeyError as error:
            results.append(VerifyResult(name, "failed",
                                        f"metrics cannot be re-measured: config lacks {one_line(error)!r}"))
        except (ValueError, TypeError, RuntimeError, OSError) as error:
            results.append(VerifyResult(name, "failed", f"metrics cannot be re-measured: {type(error).__name__}: "
                                                        f"{one_line(error)}"))
    return results


def _constructor_settings(settings: dict) -> dict:
    """JSON turned tuples into lists; constructors expect tuples for positions."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
