"""Detectors at 1 % FPR (issue 31's protocol): the paper's rule, its options, the Gaussian option, TED, IBD-PSC, SCALE-UP.

The protocol is :mod:`analysis.protocol`: ``--runs`` reference redraws; detectors that cost about one forward
pass see every evaluation input, the others ``--max-expensive`` benign + ``--max-expensive`` triggered ones;
triggered inputs are reported as ``all`` and ``reached`` (sent to the target) side by side; TPR at FPR <= 1 %
with its 95 % Clopper-Pearson interval; TPR / FPR at each detector's own threshold (reference data only).
An attack whose ASR is below ``--implanted`` % implants no backdoor: it is listed and left out of the means.

Goal (issue 31), checked for ``--ours`` on the ``reached`` population: mean AUROC >= 99 and TPR >= 95 % at
FPR <= 1 %, own-threshold FPR within ±1 point of 1 %, ahead of TED, IBD-PSC and SCALE-UP.

    PYTHONPATH=. python benchmarks/low_fpr.py [digits | npz PATH] [--archs resnet18 mobilenetv2]
        [--attacks badnets blended adaptive@0.5 ...] [--runs 3] [--max-expensive 1000] [--threads 2]
        [--models-dir DIR] [--train-subset N] [--epochs E] [--out docs/results/low_fpr_digits.md]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _report import load_average, publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.comparison import build_detector
from analysis.metrics import attack_metrics
from analysis.protocol import CHEAP, run_protocol, summarize
from analysis.reproduce import load_for_reproduce, markdown_table
from analysis.study import Study

DETECTORS = ("layerwise", "layerwise-trajectory", "layerwise-gaussian", "ted", "ibd-psc", "scale-up")
BASELINES = ("ted", "ibd-psc", "scale-up")
GOAL_AUROC, GOAL_TPR, TARGET_FPR = 99.0, 95.0, 1.0


def model_for(study: Study, arch: str, attack: str):
    """The attacked model of ``attack``; ``adaptive@BETA`` is the adaptive attack at penalty BETA (Table 7's models)."""
    if attack.startswith("adaptive@"):
        text = attack.split("@", 1)[1]
        try:
            beta = float(text)
        except ValueError:
            raise SystemExit(f"--attacks: expected adaptive@BETA with BETA a number in [0, 1), got {attack!r}") from None
        return study.adaptive_model(arch, beta)
    return study.model(arch, attack)


def cell(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}" if np.isfinite(mean) else "–"


def attack_table(summary: pd.DataFrame, population: str) -> pd.DataFrame:
    part = summary[summary.population == population]
    return pd.DataFrame({
        "detector": part.detector,
        "AUROC": [cell(m, s) for m, s in zip(part.AUROC, part.AUROC_std)],
        "TPR@FPR<=1%": [cell(m, s) for m, s in zip(part["TPR@1%"], part["TPR@1%_std"])],
        "95% CI (mean of runs)": [f"[{lo:.1f}, {hi:.1f}]" for lo, hi in zip(part["TPR@1%_low"], part["TPR@1%_high"])],
        "own TPR": [cell(m, s) for m, s in zip(part.TPR, part.TPR_std)],
        "own FPR": [cell(m, s) for m, s in zip(part.FPR, part.FPR_std)],
        "benign / triggered": [f"{b:.0f} / {t:.0f}" for b, t in zip(part.n_benign, part.n_triggered)],
        "s": part.seconds.round(1),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", choices=("digits", "npz"))
    parser.add_argument("path", nargs="?", help="npz: the archive")
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenetv2"], choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--attacks", nargs="+", default=["badnets", "blended", "wanet", "issba", "iad"])
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS))
    parser.add_argument("--ours", default="layerwise-gaussian")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-expensive", type=int, default=1000)
    parser.add_argument("--max-cheap", type=int, default=None,
                        help="cap on the cheap detectors' benign and triggered inputs too (default: all)")
    parser.add_argument("--implanted", type=float, default=50.0, help="ASR (%%) below which an attack is left out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", default="results/models")
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--out", default="docs/results/low_fpr_digits.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # ReferenceWarning on small GTSRB classes: reported in the text

    data = load_for_reproduce(args.dataset, args.path)
    started = time.perf_counter()
    sections, means = [], []
    for arch in args.archs:
        study = Study(data, archs=(arch,), models_dir=Path(args.models_dir), train_subset=args.train_subset,
                      epochs=args.epochs, progress=False)
        for attack in args.attacks:
            run = model_for(study, arch, attack)
            info = attack_metrics(run.model, data.test, run.poisoned_test, run.attack.target)
            head = f"### {arch} + {attack}: MA {100 * info['ma']:.1f} %, ASR {100 * info['asr']:.1f} %"
            if 100 * info["asr"] < args.implanted:
                sections += [head, "", f"ASR below {args.implanted:.0f} %: no backdoor implanted; left out of the means.", ""]
                continue
            factories = {name: (lambda seed, name=name: build_detector(name, seed=seed)) for name in args.detectors}
            table = run_protocol(run.model, run.attack, data, factories, runs=args.runs,
                                 max_expensive=args.max_expensive, train=run.data.train, progress=False,
                                 max_cheap=args.max_cheap)
            summary = summarize(table)
            means.append(table.assign(arch=arch, attack=attack))
            sections += [head, "", "Triggered inputs that reach the target:", "",
                         markdown_table(attack_table(summary, "reached")), "",
                         "All triggered inputs:", "", markdown_table(attack_table(summary, "all")), ""]
    overview = []
    if means:
        everything = pd.concat(means)
        for arch, part in everything.groupby("arch", sort=False):
            per_run = part.groupby(["detector", "population", "run"], sort=False)[["AUROC", "TPR@1%", "FPR"]].mean()
            agg = per_run.groupby(["detector", "population"], sort=False).agg(["mean", "std"])
            rows = []
            for (detector, population), values in agg.iterrows():
                rows.append({"detector": detector, "population": population,
                             "AUROC": cell(values[("AUROC", "mean")], values[("AUROC", "std")]),
                             "TPR@FPR<=1%": cell(values[("TPR@1%", "mean")], values[("TPR@1%", "std")]),
                             "own FPR": cell(values[("FPR", "mean")], values[("FPR", "std")])})
            frame = pd.DataFrame(rows).sort_values(["population", "detector"], kind="stable")
            reached = agg.xs("reached", level="population")
            ours = reached.loc[args.ours] if args.ours in reached.index else None
            verdict = ""
            if ours is not None:
                others = [b for b in BASELINES if b in reached.index]
                ahead = all(ours[("AUROC", "mean")] > reached.loc[b, ("AUROC", "mean")] and
                            ours[("TPR@1%", "mean")] >= reached.loc[b, ("TPR@1%", "mean")] for b in others)
                met = (ours[("AUROC", "mean")] >= GOAL_AUROC and ours[("TPR@1%", "mean")] >= GOAL_TPR
                       and abs(ours[("FPR", "mean")] - TARGET_FPR) <= 1.0)
                verdict = (f"Goal for `{args.ours}` (reached, mean over implanted attacks): AUROC "
                           f"{ours[('AUROC', 'mean')]:.1f} (goal >= {GOAL_AUROC:.0f}), TPR@FPR<=1% "
                           f"{ours[('TPR@1%', 'mean')]:.1f} (goal >= {GOAL_TPR:.0f}), own FPR {ours[('FPR', 'mean')]:.1f} "
                           f"(goal {TARGET_FPR:.0f} ± 1): **{'met' if met else 'missed'}**; ahead of "
                           f"{', '.join(others)} in both AUROC and TPR@FPR<=1%: **{'yes' if ahead else 'no'}**.")
            overview += [f"## {arch}: mean over implanted attacks (mean ± std over runs)", "", markdown_table(frame), "",
                         verdict, ""]
    total = time.perf_counter() - started
    subset = f" --train-subset {args.train_subset}" if args.train_subset else ""
    epochs = f" --epochs {args.epochs}" if args.epochs else ""
    command = (f"PYTHONPATH=. python benchmarks/low_fpr.py {args.dataset}{' ' + args.path if args.path else ''} "
               f"--archs {' '.join(args.archs)} --attacks {' '.join(args.attacks)} --detectors {' '.join(args.detectors)} "
               f"--runs {args.runs} --max-expensive {args.max_expensive}"
               f"{f' --max-cheap {args.max_cheap}' if args.max_cheap else ''} --threads {args.threads} "
               f"--models-dir {args.models_dir}{subset}{epochs} --out {args.out}")
    cheap = sorted(set(args.detectors) & CHEAP)
    text = "\n".join([
        f"# Detectors at 1 % FPR on {data.name} (`analysis.protocol`)", "",
        f"{data.name}: {len(data.reference)} reference and {len(data.test)} evaluation images, {data.num_classes} classes. "
        f"{args.runs} runs (run 0 the dataset's split, run r a stratified redraw of reference + evaluation). "
        f"{', '.join(cheap)} see "
        f"{f'a seeded sample of at most {args.max_cheap} benign + {args.max_cheap} triggered' if args.max_cheap else 'every evaluation input'}; "
        f"the others a seeded sample of at most {args.max_expensive} benign + {args.max_expensive} triggered. AUROC and TPR@FPR<=1% read the suspicion score, with the threshold "
        f"set on the benign evaluation scores (oracle operating point; its 95 % Clopper-Pearson interval is averaged "
        f"over runs); own TPR / FPR: at each detector's own threshold, set from the reference images only "
        f"(`layerwise`: the paper's tau = 2.5; `layerwise-gaussian`: a 1 % target FPR). All in %. "
        f"CPU, {torch.get_num_threads()} threads, 1-min load average {load_average():.1f} at the end, "
        f"{total / 60:.1f} min in all.", "",
        *overview, "## Per attack", "", *sections, f"Command: `{command}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
