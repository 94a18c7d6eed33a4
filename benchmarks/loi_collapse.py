"""Why the paper's rule collapses on some natural-image models: the LOI against the layers that separate.

For one architecture and attack on an npz archive, models trained for each of ``--epochs`` (the same recipe
otherwise; a few epochs gives a weakly trained model), report from one run on the dataset's own split:

* the model's MA and ASR;
* Algorithm 1 on the target class, from benign reference images alone: the LOI, the largest rise of the class's
  mean cosine similarity, the runner-up layer and its rise, and whether :mod:`analysis.diagnostics` calls the
  choice fragile (a near-tie, or the output layer);
* the AUROC of each single layer's cosine similarity to the target class's centroid (benign inputs predicted as the
  target against triggered inputs that reach it): where the signal is;
* the paper's rule (LOI-2..LOI, tau = 2.5) and ``layerwise-gaussian`` on every benign evaluation input (at most
  ``--max-eval``) against the triggered ones that reach the target: AUROC, TPR at FPR <= 1 %, and FPR / TPR at the
  detector's own threshold.

A diagnosis, not a tuning run: nothing here changes a detector, and no triggered input reaches a fit.

    PYTHONPATH=. python benchmarks/loi_collapse.py npz ../shared/data/gtsrb_32x32.npz --arch resnet18
        --attack badnets --epochs 2 15 --train-subset 10000 --models-dir results/models/loi-collapse
        [--threads 1] [--max-eval 2000] [--out docs/results/loi_collapse_gtsrb_resnet18.md]
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
from analysis.detection import LayerwiseDetector
from analysis.diagnostics import loi_diagnosis
from analysis.explore import LayerwiseExplorer
from analysis.metrics import attack_metrics, auroc, tpr_at_fpr
from analysis.protocol import evaluation_inputs
from analysis.reproduce import load_for_reproduce, markdown_table
from analysis.study import Study


def one_model(run, data, max_eval: int, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """The diagnosis of one trained model (see the module docstring)."""
    target = run.attack.target
    info = attack_metrics(run.model, data.test, run.poisoned_test, target)
    inputs = evaluation_inputs(run.model, run.attack, data.test).capped(max_eval or None, seed)
    reached = inputs.triggered.subset(np.flatnonzero(inputs.reached))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small GTSRB classes warn; reported in docs/low_fpr.md
        paper = LayerwiseDetector().fit(run.model, data.reference)
        gaussian = build_detector("layerwise-gaussian", seed=seed).fit(run.model, data.reference)
    diagnosis = loi_diagnosis(paper.mean_similarity_[target])
    if len(reached) < 10:
        return {"MA": 100 * info["ma"], "ASR": 100 * info["asr"], "LOI": diagnosis.loi, "layers": paper.n_layers_,
                "n reached": len(reached)}, None
    explorer = LayerwiseExplorer(run.model, paper, inputs.benign, reached, target=target)
    column = explorer.classes.index(target)
    as_target = explorer.benign_predicted == target
    per_layer = pd.DataFrame({
        "layer": np.arange(1, paper.n_layers_ + 1),
        "module": paper.layer_names_,
        "benign mean cos (reference)": [f"{v:.3f}" for v in paper.mean_similarity_[target]],
        "AUROC of this layer alone": [
            round(100 * auroc(-explorer.benign_similarity[as_target, layer, column],
                              -explorer.poisoned_similarity[:, layer, column]), 1)
            for layer in range(paper.n_layers_)],
        "scored by the paper's rule": ["yes" if layer + 1 in paper.score_layers_[target] else ""
                                       for layer in range(paper.n_layers_)],
    })
    row = {"MA": 100 * info["ma"], "ASR": 100 * info["asr"], "LOI": diagnosis.loi, "layers": paper.n_layers_,
           "rise": diagnosis.rise, "runner-up": diagnosis.runner_up, "runner-up rise": diagnosis.runner_up_rise,
           "near tie": diagnosis.near_tie, "at output": diagnosis.at_output,
           "best single layer": int(per_layer.loc[per_layer["AUROC of this layer alone"].idxmax(), "layer"]),
           "n benign": len(inputs.benign), "n reached": len(reached)}
    for name, detector in (("paper", paper), ("gaussian", gaussian)):
        if name == "paper":
            sb = detector.suspicion_from_scores(explorer.benign_scores, explorer.benign_predicted)
            sp = detector.suspicion_from_scores(explorer.poisoned_scores, explorer.poisoned_predicted)
            fb = detector.flag_scores(explorer.benign_scores, explorer.benign_predicted)
            fp = detector.flag_scores(explorer.poisoned_scores, explorer.poisoned_predicted)
        else:
            found_b, found_p = detector.detect(run.model, inputs.benign.x), detector.detect(run.model, reached.x)
            sb, sp, fb, fp = found_b.scores, found_p.scores, found_b.flagged, found_p.flagged
        row[f"{name} AUROC"] = 100 * auroc(sb, sp)
        row[f"{name} TPR@FPR<=1%"] = 100 * tpr_at_fpr(sb, sp, 0.01)
        row[f"{name} own TPR"] = 100 * float(np.mean(fp))
        row[f"{name} own FPR"] = 100 * float(np.mean(fb))
    return row, per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("npz", "digits"))
    parser.add_argument("path", nargs="?", help="npz: the archive")
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 15])
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--models-dir", default="results/models/loi-collapse")
    parser.add_argument("--max-eval", type=int, default=2000, help="at most this many benign and triggered inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results/loi_collapse.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_for_reproduce(args.dataset, args.path)
    started = time.perf_counter()
    rows, sections = [], []
    for epochs in args.epochs:
        study = Study(data, archs=(args.arch,), models_dir=Path(args.models_dir) / f"e{epochs}",
                      train_subset=args.train_subset, epochs=epochs, progress=False)
        row, per_layer = one_model(study.model(args.arch, args.attack), data, args.max_eval)
        rows.append({"epochs": epochs, **row})
        if per_layer is None:
            sections += [f"### {epochs} epochs: MA {row['MA']:.1f} %, ASR {row['ASR']:.1f} %: fewer than 10 triggered "
                         f"inputs reach the target, no backdoor to detect", ""]
            continue
        sections += [f"### {epochs} epochs: MA {row['MA']:.1f} %, ASR {row['ASR']:.1f} %, target-class LOI "
                     f"{row['LOI']} of {row['layers']}", "", markdown_table(per_layer, digits=1), ""]
    table = pd.DataFrame(rows)
    for column in [c for c in table.columns if "rise" in c]:
        table[column] = [f"{v:.3f}" for v in table[column]]
    subset = f" --train-subset {args.train_subset}" if args.train_subset else ""
    command = (f"PYTHONPATH=. python benchmarks/loi_collapse.py {args.dataset}{' ' + args.path if args.path else ''} "
               f"--arch {args.arch} --attack {args.attack} --epochs {' '.join(map(str, args.epochs))}{subset} "
               f"--models-dir {args.models_dir} --max-eval {args.max_eval} --threads {args.threads} --out {args.out}")
    text = "\n".join([
        f"# The paper's rule against the layers that separate: {data.name}, {args.arch} + {args.attack}", "",
        f"One run on the dataset's own split; at most {args.max_eval} benign evaluation inputs and {args.max_eval} "
        f"triggered ones (a seeded sample), of which the ones the model sends to the target are scored. "
        f"'rise' is Algorithm 1's largest rise of the target class's mean benign cosine similarity; 'runner-up' the "
        f"candidate layer with the second largest (`analysis.diagnostics.loi_diagnosis`). All rates in %. "
        f"CPU, {torch.get_num_threads()} threads, 1-min load average {load_average():.1f} at the end, "
        f"{(time.perf_counter() - started) / 60:.1f} min in all.", "",
        "## Per model", "", markdown_table(table, digits=1), "", "## Per layer (target class)", "", *sections,
        f"Command: `{command}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
