"""Every detector on one benchmark: the paper's layer-wise rule, its options, SCALE-UP, IBD-PSC, TED and the six baselines.

One table per architecture of the benchmark, one block of rows per attack that implants a backdoor (ASR >= 50 %
on the evaluation inputs; the others are listed and left out), mean ± std over ``--runs`` reference redraws
of every metric of the detection protocol (:func:`analysis.experiments.tables12_detection`: the protocol of
Tables 1/2 with every detector of :func:`analysis.comparison.available_defenses` ``(include_recent=True)``,
all numbers from :func:`analysis.metrics.detection_metrics`). Then:

* the goal for the best layer-wise option (``--ours``, default ``layerwise-trajectory``): AUROC >= 99 % and
  TPR >= 95 % at FPR <= 5 % in every cell, met or missed per cell, and its mean AUROC against SCALE-UP,
  IBD-PSC and TED per architecture;
* the cost per input of every detector is measured by ``benchmarks/detector_cost.py``.

Models: digits uses the committed zoo; ``npz`` trains (or reuses) models in ``--models-dir`` with
``--train-subset`` / ``--epochs``, as ``python -m analysis reproduce npz ...`` does with the same settings.

    PYTHONPATH=. python benchmarks/recent_detectors.py [digits | npz PATH] [--archs resnet18 mobilenetv2]
        [--attacks badnets blended ...] [--runs 3] [--max-eval 200] [--defense-samples 20] [--threads 2]
        [--models-dir results/models] [--train-subset N] [--epochs E] [--ours layerwise-trajectory]
        [--out docs/results/recent_detectors.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _report import load_average, publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.comparison import DETECTION_COLUMNS, available_defenses
from analysis.experiments import tables12_detection
from analysis.study import Study, default_attacks
from analysis.metrics import attack_metrics
from analysis.reproduce import load_for_reproduce, markdown_table

RECENT = ("scale-up", "ibd-psc", "ted")
GOAL_AUROC, GOAL_TPR_AT_5 = 99.0, 95.0
IMPLANTED_ASR = 50.0


def with_std(table: pd.DataFrame) -> pd.DataFrame:
    """``mean ± std`` strings for the protocol's columns, one row per (attack, detector)."""
    out = table[["attack", "defense"]].rename(columns={"defense": "detector"}).copy()
    for column in DETECTION_COLUMNS.values():
        out[column] = [f"{m:.1f} ± {s:.1f}" if np.isfinite(m) else "–"
                       for m, s in zip(table[column], table[f"{column}_std"])]
    return out


def goal_rows(table: pd.DataFrame, ours: str) -> pd.DataFrame:
    mine = table[table.defense == ours]
    return pd.DataFrame({"attack": mine.attack, "AUROC": mine.AUROC.round(1), "TPR@FPR<=5%": mine["TPR@FPR<=5%"].round(1),
                         "goal": np.where((mine.AUROC >= GOAL_AUROC) & (mine["TPR@FPR<=5%"] >= GOAL_TPR_AT_5),
                                          "met", "missed")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", choices=("digits", "npz"))
    parser.add_argument("path", nargs="?", help="npz: the archive")
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenetv2"], choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--attacks", nargs="+", default=[a for a in default_attacks() if a != "lc"],
                        help="LC is left out by default: it implants no backdoor on digits")
    parser.add_argument("--runs", type=int, default=3, help="reference redraws per cell")
    parser.add_argument("--max-eval", type=int, default=200, help="benign and poisoned inputs per run")
    parser.add_argument("--defense-samples", type=int, default=20, help="RS neighbours and STRIP blends (paper: 100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", default="results/models")
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--ours", default="layerwise-trajectory", help="the layer-wise option the goal is checked for")
    parser.add_argument("--out", default="docs/results/recent_detectors.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_for_reproduce(args.dataset, args.path)
    defenses = available_defenses(include_recent=True)
    started = time.perf_counter()
    sections, implanted_cells = [], []
    for arch in args.archs:
        probe = Study(data, archs=(arch,), runs=args.runs, models_dir=Path(args.models_dir),
                      attacks=tuple(args.attacks), train_subset=args.train_subset, epochs=args.epochs,
                      max_eval=args.max_eval, defense_samples=args.defense_samples)
        info = []
        for attack in args.attacks:
            run = probe.model(arch, attack)
            metrics = attack_metrics(run.model, data.test, run.poisoned_test, run.attack.target)
            info.append({"attack": attack, "MA": 100 * metrics["ma"], "ASR": 100 * metrics["asr"]})
        info = pd.DataFrame(info)
        implanted = tuple(info.attack[info.ASR >= IMPLANTED_ASR])
        implanted_cells += [(arch, a) for a in implanted]
        study = dataclasses.replace(probe, attacks=implanted)  # the same models (the cache is shared)
        table, _ = tables12_detection(study, defenses) if implanted else (pd.DataFrame(), [])
        if table.empty:
            sections += [f"## {arch}", "", markdown_table(info, digits=1), "", "No attack implants a backdoor.", ""]
            continue
        means = table.groupby("defense", sort=False)[list(DETECTION_COLUMNS.values()) + ["seconds"]].mean()
        goal = goal_rows(table, args.ours)
        recent_auroc = means.loc[list(RECENT), "AUROC"]
        ahead = all(means.loc[args.ours, "AUROC"] > recent_auroc)
        sections += [
            f"## {arch}", "",
            f"Models (MA, ASR on all evaluation images, %); attacks with ASR < {IMPLANTED_ASR:.0f} % implant no "
            f"backdoor and are left out:", "", markdown_table(info, digits=1), "",
            f"### Every detector, mean ± std over {args.runs} reference redraws ({table.n_benign.iloc[0]} benign + "
            f"{table.n_poisoned.iloc[0]} poisoned inputs a run)", "", markdown_table(with_std(table)), "",
            "### Mean over attacks", "", markdown_table(means.reset_index().rename(columns={"defense": "detector"}),
                                                        digits=1), "",
            f"### Goal for `{args.ours}`: AUROC >= {GOAL_AUROC:.0f} % and TPR >= {GOAL_TPR_AT_5:.0f} % at FPR <= 5 %",
            "", markdown_table(goal, digits=1), "",
            f"Met in {int((goal.goal == 'met').sum())} of {len(goal)} cells. Mean AUROC {means.loc[args.ours, 'AUROC']:.1f} "
            f"against SCALE-UP {recent_auroc['scale-up']:.1f}, IBD-PSC {recent_auroc['ibd-psc']:.1f}, TED "
            f"{recent_auroc['ted']:.1f}: {'ahead of all three' if ahead else 'NOT ahead of all three'}.", "",
        ]
    total = time.perf_counter() - started
    load = load_average()
    subset = f" --train-subset {args.train_subset}" if args.train_subset else ""
    epochs = f" --epochs {args.epochs}" if args.epochs else ""
    command = (f"PYTHONPATH=. python benchmarks/recent_detectors.py {args.dataset}{' ' + args.path if args.path else ''} "
               f"--archs {' '.join(args.archs)} --attacks {' '.join(args.attacks)} --runs {args.runs} "
               f"--max-eval {args.max_eval} --defense-samples {args.defense_samples} --threads {args.threads}"
               f"{subset}{epochs} --ours {args.ours} --out {args.out}")
    text = "\n".join([
        f"# Every detector on {data.name}: the paper's rule, its options, SCALE-UP, IBD-PSC, TED and the six baselines",
        "",
        f"{data.name}: {len(data.train)} training, {len(data.reference)} reference and {len(data.test)} evaluation "
        f"images, {data.num_classes} classes. Protocol of Tables 1/2 (`analysis.experiments.tables12_detection`): "
        f"run r redraws the reference set (run 0: the dataset's own split); every detector is fitted on it and run "
        f"once on a seeded sample of at most {args.max_eval} benign evaluation images (disjoint from the reference) "
        f"and {args.max_eval} triggered non-target ones together, with its default settings (RS and STRIP: "
        f"{args.defense_samples} neighbours / blends, paper 100). Rows: `layerwise` is the paper's rule (tau = 2.5); "
        f"`layerwise-trajectory` the option `score=\"trajectory\"` (tau = 2.5) and `layerwise-trajectory-fpr5` the "
        f"same score with `target_fpr=0.05` (a threshold calibrated on the reference samples, each left out); "
        f"`ac-ref`: AC flagging the cluster with fewer reference samples.",
        "",
        "TPR / FPR / F1: at the detector's own threshold. AUROC and TPR@FPR<=x: of its suspicion score; TPR@FPR<=x "
        "sets its threshold on the benign evaluation scores themselves (an oracle operating point, to compare "
        f"detectors; with {args.max_eval} benign inputs, 1 % allows {int(args.max_eval * 0.01)} false positive(s)). "
        f"All in %. seconds: fit + detection. CPU, {torch.get_num_threads()} threads, 1-min load average {load:.1f} "
        f"at the end, {total / 60:.1f} min in all.",
        "",
        *sections,
        f"Command: `{command}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
