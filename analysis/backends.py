"""Where ``reproduce`` runs its experiments: in this process (``local``) or as tasks on a Ray cluster (``ray``).

The Ray backend (``python -m analysis reproduce --backend ray [--address ADDR]``, :func:`run_on_ray`) works in
three steps:

1. **Plan** (:func:`analysis.model_plan.plan_models`, before anything runs): the models (architecture, attack,
   checkpoint name, attack settings) that the selected experiments load, each experiment's ``models`` in the
   registry (:data:`analysis.experiment_registry.EXPERIMENTS`); :func:`models_to_train` keeps those
   that are neither in the zoo nor already cached in the results folder's ``models/``.
2. **Train**: one Ray task per missing model. Each task writes its checkpoint into its own staging folder
   ``models/.ray-staging/NAME/``, and the driver moves it into ``models/`` (file and ``manifest.json``
   entry), so that tasks finishing together never write one manifest at once. Models of an attack with a
   preparation step (ISSBA's encoder, IAD's mask generator, LC's benign model) wait for the first model of
   that attack, which writes the preparation to ``models/cache``, as the local backend does.
3. **Experiments**: one Ray task per experiment (not per table cell), started as soon as the models it needs
   are in ``models/``; it returns ``(table, figures)`` and the driver writes ``NAME.csv``, ``NAME.md``, the
   figures and ``progress.json`` exactly as the local backend does, so resuming works the same.

Every task sets torch's thread count to the driver's (CPU training is bit-reproducible only with the same
thread count), so both backends write the same tables; a task reserves that many CPUs (at most a node's).
The results folder must be on a filesystem that every node and the driver share. Ray is an optional
dependency (``pip install -e ".[cluster]"``): importing this module does not import it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .attacks import Attack, build_attack, dataset_attack_settings
from .checkpoints import MANIFEST, check_entry, checkpoint_name, has_checkpoint, read_manifest
from .experiment_registry import EXPERIMENTS
from .model_plan import ModelSpec, experiment_models, plan_models
from .study import Study

__all__ = ["BACKENDS", "STAGING", "models_to_train", "require_ray", "run_on_ray"]

#: The backends of :func:`analysis.reproduce.reproduce`: this process, or tasks on a Ray cluster.
BACKENDS = ("local", "ray")
#: Folder under ``models_dir`` where each Ray training task writes its checkpoint before the driver adopts it.
STAGING = ".ray-staging"


def _build_attack(spec: ModelSpec, dataset: str) -> Attack:
    """The attack as :meth:`Study.model` builds it: the dataset's settings, overridden by the spec's."""
    return build_attack(spec.attack, **{**dataset_attack_settings(dataset, spec.attack), **spec.settings})


def models_to_train(study: Study, specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Those of ``specs`` that ``study`` has neither in the zoo nor cached in ``study.models_dir``.

    A cached checkpoint is checked as the local backend checks it before use (same model definition,
    file present and unmodified), so a folder of other settings fails here, before any task starts.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`analysis.pipeline.reusable_checkpoint`: a cached checkpoint of another model, or a
        manifest entry whose file is missing.
    """
    from .pipeline import definition_and_checkpoint

    training = study.training_data()
    missing = []
    for spec in specs:
        if study.in_zoo(spec.name):
            continue
        attack = None if spec.clean else _build_attack(spec, study.data.name)
        *_, found = definition_and_checkpoint(study.data.name, spec.arch, None, study.config(spec.arch), training,
                                              attack, spec.name, study.models_dir, False, "cpu")
        if found is None:
            missing.append(spec)
    return missing


def require_ray(option: str = "backend") -> Any:
    """Import and return Ray, or raise a ValueError naming ``option`` and the install command."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"{option}: 'ray' needs Ray, which is not installed; install it with "
                         f"pip install -e \".[cluster]\" (or pip install \"ray>=2.9\")") from None
    return ray


# ---------------------------------------------------------------------- what runs inside a Ray task
@dataclass
class _TaskStudy(Study):
    """A :class:`Study` inside an experiment task: it loads models and never trains one.

    Training belongs to the plan's training tasks; a model missing here means the plan
    (the experiment's ``models`` in :data:`analysis.experiment_registry.EXPERIMENTS`) missed it, or the zoo is
    not where the driver saw it.
    """

    experiment: str = ""

    def _require(self, key: tuple[str, str], name: str) -> None:
        if key in self._cache or self.in_zoo(name) or has_checkpoint(name, self.models_dir):
            return
        raise RuntimeError(
            f"experiment {self.experiment!r} on Ray needs model {name!r}, which is neither in the zoo "
            f"({self.zoo_dir}) nor in {self.models_dir} on node {socket.gethostname()}: "
            f"analysis.experiment_registry.EXPERIMENTS[{self.experiment!r}].models does not list it, or this node "
            f"does not see "
            f"the driver's files (the ray backend needs a shared filesystem)")

    def model(self, arch: str, attack: str, name: str | None = None, **settings):
        name = name or checkpoint_name(self.data.name, arch, attack)
        self._require((arch, name), name)
        return super().model(arch, attack, name=name, **settings)

    def clean(self, arch: str) -> tuple:
        self._require((arch, "clean"), checkpoint_name(self.data.name, arch, "clean"))
        return super().clean(arch)


def _study_settings(study: Study) -> dict:
    """Every field of ``study`` but its data and cache, with absolute paths (a task's working folder differs)."""
    settings = {f.name: getattr(study, f.name) for f in dataclasses.fields(study) if f.name not in ("data", "_cache")}
    settings["models_dir"] = Path(study.models_dir).resolve()
    if settings.get("zoo_dir") is not None:
        settings["zoo_dir"] = Path(settings["zoo_dir"]).resolve()
    settings["progress"] = False  # a task's bars would interleave in the driver's log
    return settings


def _train_task(data, settings: dict, spec: ModelSpec, staging: str, threads: int, *after) -> dict:
    """Ray task: train ``spec``'s model into ``staging`` (``after``: tasks whose preparation cache it reuses)."""
    from .pipeline import attacked_model, clean_model

    torch.set_num_threads(threads)
    study = Study(data=data, **settings)
    config, training = study.config(spec.arch), study.training_data()
    started = time.perf_counter()
    if spec.clean:
        clean_model(data.name, spec.arch, config=config, checkpoints=staging, save=True, progress=False,
                    data=training)
    else:
        attacked_model(data.name, spec.arch, _build_attack(spec, data.name), config=config, checkpoints=staging,
                       save=True, progress=False, data=training, cache_dir=Path(study.models_dir) / "cache",
                       name=spec.name)
    return {"name": spec.name, "seconds": time.perf_counter() - started, "node": socket.gethostname()}


def _experiment_task(data, settings: dict, name: str, function: Callable, threads: int) -> tuple:
    """Ray task: run one experiment; returns ``(table, [(figure name, figure dict)], seconds)``."""
    torch.set_num_threads(threads)
    study = _TaskStudy(data=data, **settings, experiment=name)
    started = time.perf_counter()
    table, figures = function(study)
    seconds = time.perf_counter() - started
    return table, [(figure_name, figure.to_dict()) for figure_name, figure in figures], seconds


# ---------------------------------------------------------------------- the driver
def _adopt(staging: Path, models_dir: Path, name: str, node: str) -> None:
    """Move checkpoint ``name`` from a task's staging folder into ``models_dir`` and its manifest (atomically)."""
    entries = read_manifest(staging)["entries"]
    if name not in entries or not (staging / check_entry(name, entries[name], staging)["file"]).is_file():
        raise FileNotFoundError(
            f"models_dir: the task on node {node} trained {name!r} into {staging}, which the driver on "
            f"{socket.gethostname()} cannot see; the ray backend needs --out on a filesystem shared by every node")
    entry = entries[name]
    os.replace(staging / entry["file"], models_dir / entry["file"])
    manifest = read_manifest(models_dir)
    manifest["entries"][name] = entry
    temporary = models_dir / f".{MANIFEST}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:  # as save_checkpoint writes it
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, models_dir / MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray; returns whether this call did (then shut it down).

    A Ray already initialised in this process (e.g. by a notebook's ``ray.init``) is used as it is.
    """
    if ray.is_initialized():
        if address is not None:
            raise ValueError(f"address: Ray is already initialised in this process, so {address!r} cannot be "
                             f"connected to; call ray.shutdown() first, or pass no address to use that Ray")
        return False
    if address is not None:
        try:
            ray.init(address=address)
        except ConnectionError as error:
            raise ValueError(f"address: no Ray cluster could be reached at {address!r} ({error}); start one with "
                             f"ray start --head, or pass no address for a local Ray") from error
    else:  # a single-machine Ray for this run only; workers import the installed package (no runtime_env)
        ray.init(include_dashboard=False)
    return True


def _largest_node_cpus(ray) -> float:
    cpus = [node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive", True)]
    return max(cpus, default=0)


def _original(error: BaseException) -> BaseException:
    """The exception raised inside a task (Ray wraps it in a RayTaskError)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def run_on_ray(
    study: Study,
    names: Sequence[str],
    record: Callable[[str, Any, list, float], None],
    functions: dict[str, Callable] | None = None,
    address: str | None = None,
    gpus_per_task: float = 0,
    progress: bool = True,
) -> None:
    """Run experiments ``names`` of ``study`` as Ray tasks after training the models they need as Ray tasks.

    One task per missing model (:func:`analysis.model_plan.plan_models`, :func:`models_to_train`), one task per experiment (not
    per table cell): an experiment starts once every model it needs is in ``study.models_dir``. Each
    finished experiment is handed to ``record`` at once, so an interrupted run keeps what finished.

    Parameters
    ----------
    study : Study
        The driver's study: data, settings, zoo and ``models_dir`` (on a filesystem every node shares).
    names : sequence of str
        Experiments to run (those not finished yet), keys of ``functions``.
    record : callable
        ``record(name, table, figures, seconds)``, called in the driver per finished experiment with its
        table (DataFrame), figures (``[(name, plotly Figure)]``) and the task's run time in seconds.
    functions : dict, optional
        Experiment name -> function of a Study (default: the functions of
        :data:`analysis.experiment_registry.EXPERIMENTS`).
    address : str, optional
        A Ray cluster's address (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None starts a local
        Ray for this call. A Ray already initialised in this process is used as it is. Ray is shut down at
        the end only if this call started it.
    gpus_per_task : float
        GPUs each task reserves (0: CPU tasks); with a GPU, tasks train and detect on it.
    progress : bool
        Show a progress bar over the tasks.

    Raises
    ------
    ValueError
        Ray is not installed, an experiment is not in the registry, or a cached checkpoint is of another model.
    Exception
        The first task's error once every other task has ended (the others are warned about).
    """
    ray = require_ray()
    if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or not gpus_per_task >= 0:
        raise ValueError(f"gpus_per_task: expected a number >= 0, got {gpus_per_task!r}")
    names = list(names)
    if not names:
        return
    dataset = study.data.name
    needs = {name: experiment_models(name, dataset, study.archs, study.attacks, study.adaptive_betas)
             for name in names}
    functions = {name: EXPERIMENTS[name].resolve() for name in names} if functions is None else functions
    to_train = models_to_train(study, plan_models(names, dataset, study.archs, study.attacks, study.adaptive_betas))
    models_dir = Path(study.models_dir).resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    settings = _study_settings(study)
    started_ray = _connect(ray, address)
    pending: dict[Any, tuple[str, Any]] = {}  # object ref -> ("train", spec) or ("experiment", name)
    try:
        cpus = min(threads, _largest_node_cpus(ray) or threads)
        options = {"num_cpus": cpus, "num_gpus": gpus_per_task}
        train_remote = ray.remote(**options)(_train_task)
        experiment_remote = ray.remote(**options)(_experiment_task)
        data = ray.put(study.data)
        waiting = {name: {spec.name for spec in needs[name]} & {spec.name for spec in to_train} for name in names}
        first_of_attack: dict[str, Any] = {}
        for spec in to_train:
            staging = models_dir / STAGING / spec.name
            shutil.rmtree(staging, ignore_errors=True)  # a leftover of an interrupted run
            after = ()
            if not spec.clean and type(_build_attack(spec, dataset)).prepare is not Attack.prepare:
                after = (first_of_attack[spec.attack],) if spec.attack in first_of_attack else ()
            ref = train_remote.remote(data, settings, spec, str(staging), threads, *after)
            first_of_attack.setdefault(spec.attack, ref)
            pending[ref] = ("train", spec)

        def submit_ready() -> None:
            for name in [n for n, missing in waiting.items() if not missing]:
                del waiting[name]
                pending[experiment_remote.remote(data, settings, name, functions[name], threads)] = ("experiment", name)

        submit_ready()
        failures: list[tuple[str, BaseException]] = []
        with tqdm(total=len(pending) + len(waiting), desc="ray tasks", disable=not progress) as bar:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                kind, what = pending.pop(ref)
                try:
                    result = ray.get(ref)
                    if kind == "train":
                        _adopt(models_dir / STAGING / what.name, models_dir, what.name, result["node"])
                    else:
                        import plotly.graph_objects as go

                        table, figures, seconds = result
                        record(what, table, [(n, go.Figure(d)) for n, d in figures], seconds)
                except Exception as error:  # noqa: BLE001 - every task's error is reported below
                    failures.append((f"training {what.name}" if kind == "train" else f"experiment {what}", error))
                    if kind == "train":  # the experiments that need this model cannot run
                        for name in [n for n, missing in waiting.items() if what.name in missing]:
                            del waiting[name]
                            failures.append((f"experiment {name}", RuntimeError(f"needs {what.name}, whose "
                                                                                f"training failed")))
                            bar.update(1)
                if kind == "train":
                    for missing in waiting.values():
                        missing.discard(what.name)
                    submit_ready()
                bar.update(1)
                bar.set_postfix_str(f"{kind} {what.name if kind == 'train' else what}")
        if failures:
            for what, error in failures[1:]:
                warnings.warn(f"backend 'ray': {what} failed: {type(_original(error)).__name__}: "
                              f"{' '.join(str(_original(error)).split())[:300]}", stacklevel=2)
            raise _original(failures[0][1])
    finally:
        for ref in pending:  # interrupted: nothing of this run keeps running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - the error that got us here matters more
                pass
        if started_ray:
            ray.shutdown()
        try:
            (models_dir / STAGING).rmdir()  # only when empty: every trained model was adopted
        except OSError:
            pass
