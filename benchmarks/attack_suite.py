"""Blended, WaNet, Label-Consistent and the adaptive attack trained end to end on digits, then analysed.

For each (architecture, attack): ``analysis.pipeline.attacked_model`` on digits (width
``cpu_width(arch)`` unless ``--width``; 30 epochs, seed 0; no checkpoints: everything,
LC's benign model included, is trained here), then ``analysis.pipeline.analyse`` at
``--tau``. Reports MA, ASR, TPR, FPR, AUROC, the LOI of the target class and the training
time (attack preparation included). The adaptive attack runs once per ``--betas`` value.
``--clean`` also trains a clean model per architecture with the same settings: its MA is
the reference for "MA within 2 points of a clean model".

    python benchmarks/attack_suite.py [--attacks blended wanet lc adaptive] [--archs resnet18]
                                      [--betas 0 0.5 0.9 0.95] [--clean] [--epochs 30] [--out docs/results/attacks]

Writes ``attack_suite.csv`` and ``attack_suite.md`` to ``--out``; a row is written as soon as
its model is done, and rows of earlier runs with other (arch, attack, β) keys are kept, so
the suite can be run piecewise.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch

from analysis.attacks import build_attack
from analysis.data import load_digits
from analysis.models import cpu_width
from analysis.pipeline import analyse, attacked_model
from analysis.training import TrainConfig, accuracy

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "attacks"
ATTACKS = ("blended", "wanet", "lc", "adaptive")
FIELDS = ["key", "dataset", "arch", "width", "attack", "beta", "epochs", "lr", "seed", "tau", "ma", "clean_ma", "asr",
          "tpr", "fpr", "auroc", "loi", "train_seconds", "load_avg", "settings", "command"]


def train_config(arch: str, epochs: int, seed: int) -> TrainConfig:
    """The CPU training profile of ``arch`` (``TrainConfig.cpu`` where it exists) with ``epochs`` and ``seed``."""
    profile = getattr(TrainConfig, "cpu", None)
    base = profile(arch, seed=seed) if profile else TrainConfig(seed=seed)
    return dataclasses.replace(base, epochs=epochs, seed=seed)


def clean_row(data, arch: str, width: float, config: TrainConfig, command: str) -> dict:
    from analysis.pipeline import clean_model

    model, seconds = clean_model(data=data, arch=arch, width=width, config=config, checkpoints=None, progress=False)
    return {"key": f"{arch}/clean", "dataset": "digits", "arch": arch, "width": width, "attack": "clean", "beta": "",
            "epochs": config.epochs, "lr": config.lr, "seed": config.seed, "tau": "", "ma": accuracy(model, data.test),
            "clean_ma": "", "asr": "", "tpr": "", "fpr": "", "auroc": "", "loi": "", "train_seconds": seconds,
            "settings": "", "command": command}


def attack_row(name: str, beta: float | None, data, arch: str, width: float, config: TrainConfig, tau: float,
               cache_dir: Path | None, command: str) -> dict:
    attack = build_attack(name, beta=beta) if beta is not None else build_attack(name)
    run = attacked_model(data=data, arch=arch, attack=attack, width=width, config=config, checkpoints=None,
                         progress=False, cache_dir=cache_dir)
    ev = analyse(run, tau=tau).evaluation
    key = f"{arch}/{name}" + (f"/beta={beta:g}" if beta is not None else "")
    return {"key": key, "dataset": "digits", "arch": arch, "width": width, "attack": name,
            "beta": "" if beta is None else beta, "epochs": config.epochs, "lr": config.lr, "seed": config.seed,
            "tau": tau, "ma": ev.ma, "clean_ma": "", "asr": ev.asr, "tpr": ev.tpr, "fpr": ev.fpr, "auroc": ev.auroc,
            "loi": ev.loi, "train_seconds": run.train_seconds,
            "settings": ";".join(f"{k}={v}" for k, v in attack.settings().items()), "command": command}


def read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


def _pct(value) -> str:
    return "" if value in ("", None) else f"{100 * float(value):.2f}"


def write(rows: dict[str, dict], out: Path) -> None:
    """All rows to ``attack_suite.csv`` and a Markdown table to ``attack_suite.md``."""
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows.values(), key=lambda r: (r["arch"], r["attack"] != "clean", r["attack"], str(r["beta"])))
    with open(out / "attack_suite.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, restval="")
        writer.writeheader()
        writer.writerows(ordered)
    clean = {r["arch"]: r["ma"] for r in ordered if r["attack"] == "clean"}
    lines = [
        "# Blended, WaNet, LC and the adaptive attack on digits",
        "",
        f"Produced by `benchmarks/attack_suite.py` ({torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}); the command of each row is in `attack_suite.csv`. "
        "Training: one-cycle SGD, no augmentation, no checkpoints; the time includes attack preparation "
        "(LC: its benign model and PGD); `load_avg` in the CSV is the 1-minute load average when the row finished "
        "(times taken on a busy machine are not comparable). Detector: the layer-wise detector fitted on the "
        "reference split, tau as listed.",
        "",
        "| arch | attack | β | MA (%) | MA − clean (pts) | ASR (%) | TPR (%) | FPR (%) | AUROC (%) | LOI | tau | epochs | train (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        gap = ""
        if r["attack"] != "clean" and r["arch"] in clean:
            gap = f"{100 * (float(r['ma']) - float(clean[r['arch']])):+.2f}"
        lines.append(
            f"| {r['arch']} (w {r['width']}) | {r['attack']} | {r['beta']} | {_pct(r['ma'])} | {gap} | {_pct(r['asr'])} | "
            f"{_pct(r['tpr'])} | {_pct(r['fpr'])} | {_pct(r['auroc'])} | {r['loi']} | {r['tau']} | {r['epochs']} | "
            f"{float(r['train_seconds']):.0f} |"
        )
    lines += ["", "Attack settings:", ""]
    lines += [f"- `{r['key']}`: `{r['settings']}`" for r in ordered if r["settings"]]
    lines.append("")
    (out / "attack_suite.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--archs", nargs="+", default=["resnet18"], choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.5, 0.9, 0.95],
                        help="penalty weights of the adaptive attack")
    parser.add_argument("--clean", action="store_true", help="also train a clean model per architecture")
    parser.add_argument("--width", type=float, default=None, help="default: analysis.models.cpu_width(arch)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache for LC's benign model and perturbations")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/attack_suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = load_digits(0)
    rows = read_rows(args.out / "attack_suite.csv")
    for arch in args.archs:
        width = args.width if args.width is not None else cpu_width(arch)
        width = int(width) if float(width).is_integer() else width
        config = train_config(arch, args.epochs, args.seed)
        jobs = [("clean", None)] if args.clean else []
        for name in args.attacks:
            jobs += [(name, beta) for beta in args.betas] if name == "adaptive" else [(name, None)]
        for name, beta in jobs:
            started = time.perf_counter()
            if name == "clean":
                row = clean_row(data, arch, width, config, command)
            else:
                row = attack_row(name, beta, data, arch, width, config, args.tau, args.cache_dir, command)
            row["load_avg"] = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""  # shared machine?
            rows[row["key"]] = row
            clean = rows.get(f"{arch}/clean")
            for r in rows.values():
                if r["arch"] == arch and r["attack"] != "clean":
                    r["clean_ma"] = clean["ma"] if clean else ""
            write(rows, args.out)
            shown = {k: (round(float(v), 4) if k in ("ma", "asr", "tpr", "fpr", "auroc") and v != "" else v)
                     for k, v in row.items() if k not in ("settings", "command")}
            print(f"[{time.perf_counter() - started:.0f} s] {shown}", flush=True)


if __name__ == "__main__":
    main()
