"""``python -m analysis reproduce``: run the paper's experiments, write CSV, Markdown and HTML.

Every experiment of :data:`analysis.experiment_registry.EXPERIMENTS` writes ``NAME.csv`` and ``NAME.md`` (its
title as heading; figures as ``*.html``) under the output folder; ``progress.json`` records finished experiments, so an interrupted
run resumes where it stopped (trained models are cached under ``models/`` too). ``REPORT.md`` gathers
every table, our numbers beside the paper's.

Experiments run in this process (``backend="local"``) or as Ray tasks on a cluster (``backend="ray"``,
:mod:`analysis.backends`, ``pip install -e ".[cluster]"``); both write the same files.
"""
from __future__ import annotations

import json
import math
import platform
import re
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .backends import BACKENDS, require_ray, run_on_ray
from .data import DatasetSplits, load_dataset
from .reference_checks import check_reference_counts
from .experiment_registry import EXPERIMENTS
from .study import Study
from .plotting import write_figure_html

# EXPERIMENTS (the one registry, analysis.experiment_registry) is importable from here too, as before
__all__ = ["EXPERIMENTS", "PROFILE_BUDGETS", "PROGRESS", "load_for_reproduce", "markdown_table", "reproduce"]

PROGRESS = "progress.json"
# Tables 1/2 budgets per profile: inputs per set and run (None = all) and RS neighbours / STRIP blends per
# input (None = the paper's 100). RS and STRIP cost one forward pass per neighbour or blend, and STRIP's
# threshold blends every reference image too (digits: 180 x 100 = 18,000 passes per model and run at the
# paper's 100), and MobileNetV2 infers at a few hundred images per second on 2 cores, so the cpu profile
# uses 20 to keep the digits run under 30 minutes.
PROFILE_BUDGETS: dict[str, dict[str, int | None]] = {
    "cpu": {"max_eval": 50, "defense_samples": 20},
    "paper": {"max_eval": None, "defense_samples": None},
}


def markdown_table(frame: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    if frame.empty:
        return "_(no rows: the experiment needs parts of the toolkit that are not available)_"

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _read_progress(out: Path) -> dict:
    """``out``'s progress.json (``{"done": {}}`` when absent).

    Folders written before experiments recorded their command: the REPORT.md of that time names the one
    command of the folder, which each finished experiment then gets.
    """
    path = out / PROGRESS
    state = json.loads(path.read_text()) if path.is_file() else {"done": {}}
    report = out / "REPORT.md"
    if any("command" not in entry for entry in state["done"].values()) and report.is_file():
        found = re.search(r"^Command: `(.+)`$", report.read_text(), flags=re.MULTILINE)
        for entry in state["done"].values():
            if found and "command" not in entry:
                entry["command"] = found.group(1)
    return state


def _done_entry(seconds: float, figures: list[str], command: str) -> dict:
    """progress.json's record of a finished experiment: run time, figure files and, when known, the command."""
    return {"seconds": round(seconds, 1), "figures": figures, **({"command": command} if command else {})}


def reproduce(
    data: DatasetSplits,
    out: str | Path,
    profile: str = "cpu",
    only: Sequence[str] | None = None,
    archs: Sequence[str] = ("resnet18", "mobilenetv2"),
    runs: int = 5,
    progress: bool = True,
    train_subset: int | None = None,
    epochs: int | None = None,
    command: str = "",
    attacks: Sequence[str] | None = None,
    max_eval: int | None | str = "profile",
    defense_samples: int | None | str = "profile",
    batch_size: int | None = None,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0,
    betas: Sequence[float] | None = None,
    redo: Sequence[str] = (),
) -> Path:
    """Run the selected experiments (all by default) and write results under ``out``; returns REPORT.md.

    ``max_eval`` and ``defense_samples`` (Tables 1/2 budgets, see :data:`PROFILE_BUDGETS`) default to
    the profile's; ``None`` means all inputs / the paper's 100 samples. ``epochs`` and ``batch_size``
    override the profile's training settings (``None``: the profile's). ``betas``: Table 7's betas of the
    adaptive attack (``None``: :data:`analysis.paper_results.ADAPTIVE_BETAS`, the zoo's). ``redo``: selected
    experiments to run again although ``out`` has them done (e.g. after a fix in their code); the others resume.
    Each experiment records the ``command`` that ran it, and REPORT.md names it under its table when it is
    not the report's latest command.

    ``backend`` is where experiments run: ``"local"`` (this process, one after the other) or ``"ray"``
    (:func:`analysis.backends.run_on_ray`: the models the selected experiments need are planned first and
    each missing one is trained as one Ray task, then each experiment runs as one Ray task, not one per
    table cell; the files written and ``progress.json`` are the same as the local backend's, so either
    backend resumes the other's folder). ``address`` is the Ray cluster's (``"auto"``, ``"ray://HOST:10001"``;
    None: a local Ray for this call) and ``gpus_per_task`` the GPUs each Ray task reserves (0: CPU only);
    both are for ``backend="ray"`` only. On a cluster ``out`` must be on a filesystem every node shares.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "ray":
        require_ray()
    else:
        for value, label in ((address, "address"), (gpus_per_task or None, "gpus_per_task")):
            if value is not None:
                raise ValueError(f"{label}: only used with backend='ray', got {label}={value!r} with "
                                 f"backend={backend!r}")
    if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or not gpus_per_task >= 0:
        raise ValueError(f"gpus_per_task: expected a number >= 0, got {gpus_per_task!r}")
    unknown = sorted(set(only or ()) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"only: unknown experiments {unknown}; available: {list(EXPERIMENTS)}")
    redo = list(redo)
    not_selected = sorted(set(redo) - set(only or EXPERIMENTS))
    if not_selected:
        raise ValueError(f"redo: {not_selected} are not among the experiments selected by only ({list(only or [])}); "
                         f"available: {list(EXPERIMENTS)}")
    if runs < 1:
        raise ValueError(f"runs: expected at least 1, got {runs}")
    if profile not in PROFILE_BUDGETS:
        raise ValueError(f"profile: expected one of {sorted(PROFILE_BUDGETS)}, got {profile!r}")
    if max_eval == "profile":
        max_eval = PROFILE_BUDGETS[profile]["max_eval"]
    if defense_samples == "profile":
        defense_samples = PROFILE_BUDGETS[profile]["defense_samples"]
    for value, label in ((max_eval, "max_eval"), (defense_samples, "defense_samples"), (batch_size, "batch_size")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label}: expected a positive integer or None, got {value!r}")
    if betas is not None:
        betas = tuple(betas)
        bad = [b for b in betas if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0]
        if not betas or bad or len(set(betas)) != len(betas):
            raise ValueError(f"betas: expected distinct numbers in [0, 1), got {list(betas)!r}")
    # before any model is trained: a class without enough reference samples would fail (or warn) only
    # after minutes of training, at the first detection cell
    check_reference_counts(data.reference.y, "reference", num_classes=data.num_classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = Study(data, archs=tuple(archs), profile=profile, runs=runs, models_dir=out / "models",
                  progress=progress, train_subset=train_subset, epochs=epochs, max_eval=max_eval,
                  defense_samples=defense_samples, batch_size=batch_size,
                  **({} if betas is None else {"adaptive_betas": tuple(float(b) for b in betas)}))
    if attacks is not None:
        missing = sorted(set(attacks) - set(study.attacks))
        if missing:
            raise ValueError(f"attacks: {missing} not available; available: {list(study.attacks)}")
        study.attacks = tuple(attacks)
    state = _read_progress(out)
    settings = {"dataset": data.name, "sizes": data.sizes(), "profile": profile, "archs": list(archs), "runs": runs,
                "train_subset": train_subset, "epochs": epochs, "attacks": list(study.attacks), "max_eval": max_eval,
                "defense_samples": defense_samples}
    if batch_size is not None:  # only when set, so folders written before the option still resume
        settings["batch_size"] = batch_size
    if betas is not None:  # likewise
        settings["betas"] = [float(b) for b in betas]
    if state.get("settings", settings) != settings:
        raise ValueError(f"out: {out} holds results of other settings {state['settings']}; "
                         f"use another folder (or delete {out / PROGRESS}) for {settings}")
    state["settings"] = settings
    for name in redo:
        state["done"].pop(name, None)
    names = [name for name in EXPERIMENTS if not only or name in only]
    if backend == "ray":
        order = list(EXPERIMENTS)

        def record(name: str, table: pd.DataFrame, figures: list, seconds: float) -> None:
            figure_files = _write_results(out, name, table, figures)
            state["done"][name] = _done_entry(seconds, figure_files, command)
            # tasks finish in any order; progress.json lists experiments in the order the local backend does
            state["done"] = dict(sorted(state["done"].items(),
                                        key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
            (out / PROGRESS).write_text(json.dumps(state, indent=2))

        to_run = [name for name in names if name not in state["done"]]
        run_on_ray(study, to_run, record, functions={name: EXPERIMENTS[name].resolve() for name in to_run},
                   address=address, gpus_per_task=gpus_per_task, progress=progress)
    else:
        for name in tqdm(names, desc="experiments", disable=not progress):
            if name in state["done"]:
                continue
            started = time.perf_counter()
            table, figures = EXPERIMENTS[name].run(study)
            figure_files = _write_results(out, name, table, figures)
            state["done"][name] = _done_entry(time.perf_counter() - started, figure_files, command)
            (out / PROGRESS).write_text(json.dumps(state, indent=2))
    return _write_report(out, data, profile, archs, runs, train_subset, epochs, command, state, max_eval,
                         defense_samples, batch_size)


def _write_results(out: Path, name: str, table: pd.DataFrame, figures: list) -> list[str]:
    """Write experiment ``name``'s ``NAME.csv``, ``NAME.md`` and figures (HTML) under ``out``; returns the figures' file names."""
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(f"## {EXPERIMENTS[name].title}\n\n{markdown_table(table)}\n")
    for figure_name, figure in figures:
        write_figure_html(figure, out / f"{figure_name}.html")
    return [f"{n}.html" for n, _ in figures]


def _write_report(out: Path, data, profile, archs, runs, train_subset, epochs, command, state, max_eval=None,
                  defense_samples=None, batch_size=None) -> Path:
    lines = [
        f"# Reproduction on {data.name}",
        "",
        f"Command: `{command}`" if command else "",
        f"Profile `{profile}`, architectures {', '.join(archs)}, {runs} run(s) per detection cell; "
        f"splits: {data.sizes()}" + (f"; trained on a {train_subset}-image subset" if train_subset else "")
        + (f"; {epochs} epochs" if epochs else "")
        + (f"; batch size {batch_size}" if batch_size else "")
        + (f"; Tables 1/2 on at most {max_eval} benign + {max_eval} poisoned inputs per run" if max_eval else "")
        + (f"; RS and STRIP with {defense_samples} neighbours/blends per input (paper: 100)" if defense_samples
           else "")
        + f". Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads.",
        "Paper columns (percentages): Tables 1/2 and 3, CIFAR-10 for ResNet-18 rows and GTSRB for MobileNetV2 rows; "
        "Tables 4–8, where the paper reports CIFAR-10 ResNet-18 only, its numbers beside every architecture's rows, "
        "except Table 6's single layers, which stand beside ResNet-18's only (they are ResNet-18's layers).",
        "",
    ]
    for name in EXPERIMENTS:
        if name in state["done"] and (out / f"{name}.md").is_file():
            lines.append((out / f"{name}.md").read_text())
            figs = state["done"][name].get("figures", [])
            if figs:
                lines.append("Figures: " + ", ".join(f"[{f}]({f})" for f in figs) + "\n")
            own = state["done"][name].get("command")
            lines.append(f"_{state['done'][name]['seconds']:.0f} s_" + (f" (`{own}`)" if own and own != command else "")
                         + "\n")
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def load_for_reproduce(dataset: str, path: str | None) -> DatasetSplits:
    if dataset == "digits":
        return load_dataset("digits")
    if dataset == "npz":
        if not path:
            raise ValueError("path: the npz dataset needs the archive's path")
        return load_dataset("npz", path)
    return load_dataset(dataset, path or f"data/{dataset}")
