"""Why does ``score="trajectory"`` lose to the paper's rule on some cells? Variants of the trajectory score, one run.

For one zoo model on digits (default: MobileNetV2 + BadNets, the cell where the trajectory score is
worse than the paper's LOI rule in ``docs/results/recent_detectors.md``), every evaluation input is
scored against its predicted class, and the AUROC (benign vs poisoned evaluation inputs) is
reported for:

* ``paper rule``: the paper's summed cosine similarity at LOI-2..LOI, standardised per class;
* ``trajectory``: the shipped option, the squared Mahalanobis distance of the per-layer z-scores
  (Ledoit-Wolf precision pooled over classes); it is *two-sided*: a benign input unusually close
  to its class's centroids is as far from the mean as a poisoned one unusually far;
* ``one-sided trajectory``: the same distance with positive z-scores set to 0 (only layers at
  which the input is *less* similar than benign ones count);
* ``diagonal``, ``one-sided diagonal``: the sum of squared (clipped) z-scores, no covariance;
* ``mean z``: minus the mean z-score over layers (one-sided by construction, no covariance);

and the AUROC of minus the z-score at each single layer (where the signal is).

    python benchmarks/trajectory_diagnosis.py [--arch mobilenetv2] [--attack badnets] [--out FILE.md]

A diagnosis, not a new option: nothing here changes the detector.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import publish  # noqa: E402  (benchmarks/_report.py: a script's own folder is on sys.path)

from analysis.detection import LayerwiseDetector  # noqa: E402
from analysis.explore import LayerwiseExplorer  # noqa: E402
from analysis.metrics import auroc  # noqa: E402
from analysis.workbench import Workbench  # noqa: E402


def z_scores(detector: LayerwiseDetector, similarity: np.ndarray, predicted: np.ndarray,
             classes: list[int]) -> np.ndarray:
    """``[N, K]`` z-scores of each input's similarity to its predicted class at the trajectory's K layers."""
    out = np.full((len(predicted), len(next(iter(detector.trajectory_mean_.values())))), np.nan)
    for t in np.unique(predicted).tolist():
        rows = np.flatnonzero(predicted == t)
        layers = np.asarray(detector.score_layers_[t]) - 1
        values = similarity[rows][:, layers, classes.index(t)]
        out[rows] = (values - detector.trajectory_mean_[t]) / detector.trajectory_std_[t]
    return out


def variants(z: np.ndarray, precision: np.ndarray) -> dict[str, np.ndarray]:
    """Suspicion scores (higher = more suspicious) of each variant, from ``[N, K]`` z-scores."""
    clipped = np.minimum(z, 0.0)
    return {
        "trajectory (two-sided Mahalanobis, shipped)": np.einsum("ij,jk,ik->i", z, precision, z),
        "one-sided trajectory (z > 0 set to 0)": np.einsum("ij,jk,ik->i", clipped, precision, clipped),
        "diagonal (sum of z^2)": (z ** 2).sum(1),
        "one-sided diagonal (sum of min(z, 0)^2)": (clipped ** 2).sum(1),
        "mean z (minus the mean z-score)": -z.mean(1),
    }


def one_run(run, reference, benign, poisoned) -> tuple[dict[str, float], list[float], dict]:
    """AUROC of every score and of each single layer's z-score on one (reference, evaluation) split."""
    paper = LayerwiseDetector().fit(run.model, reference)
    trajectory = LayerwiseDetector(score="trajectory").fit(run.model, reference)
    explorer = LayerwiseExplorer(run.model, paper, benign, poisoned, target=run.attack.target)
    classes = explorer.classes
    z_benign = z_scores(trajectory, explorer.benign_similarity, explorer.benign_predicted, classes)
    z_poisoned = z_scores(trajectory, explorer.poisoned_similarity, explorer.poisoned_predicted, classes)
    scores = {"paper rule (sum at LOI-2..LOI, standardised)":
              auroc(paper.suspicion(explorer.benign_scores, explorer.benign_predicted),
                    paper.suspicion(explorer.poisoned_scores, explorer.poisoned_predicted))}
    benign_v = variants(z_benign, trajectory.trajectory_precision_)
    poisoned_v = variants(z_poisoned, trajectory.trajectory_precision_)
    scores.update({name: auroc(benign_v[name], poisoned_v[name]) for name in benign_v})
    per_layer = [auroc(-z_benign[:, k], -z_poisoned[:, k]) for k in range(z_benign.shape[1])]
    facts = {"loi": paper.loi_[run.attack.target], "n_layers": paper.n_layers_,
             "layers": list(trajectory.score_layers_[run.attack.target]), "n_reference": len(reference),
             "n_benign": len(benign), "n_poisoned": len(poisoned)}
    return scores, per_layer, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--runs", type=int, default=3, help="reference redraws (run 0 = the dataset's own split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    workbench = Workbench("digits", progress=False)
    run = workbench.model(args.arch, args.attack)
    results = []
    for r in range(args.runs):
        reference, benign = workbench.study.redraw(r)
        results.append(one_run(run, reference, benign, run.attack.poisoned_test_set(benign)))
    names = list(results[0][0])
    per_layer = np.array([layers for _, layers, _ in results])
    facts = results[0][2]
    lois = [f["loi"] for _, _, f in results]
    command = (f"python benchmarks/trajectory_diagnosis.py --arch {args.arch} --attack {args.attack} --runs {args.runs}"
               f"{' --out ' + args.out if args.out else ''}")
    lines = [
        f"# Trajectory score variants: digits, {args.arch} + {args.attack}",
        "",
        f"Command: `{command}`; the zoo's model; {args.runs} reference redraws (run 0 = the dataset's own split; "
        f"{facts['n_reference']} reference, {facts['n_benign']} benign + {facts['n_poisoned']} poisoned evaluation "
        f"inputs per run, every input scored against its predicted class); {args.threads} torch threads, "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        f"LOI of the target class {run.attack.target} per run: {lois} of {facts['n_layers']}; the trajectory scores "
        f"layers {facts['layers'][0]}..{facts['layers'][-1]} of every class.",
        "",
        "| score | AUROC % per run | mean |",
        "|---|---|---|",
        *[f"| {name} | {' / '.join(f'{100 * s[name]:.1f}' for s, _, _ in results)} | "
          f"{100 * np.mean([s[name] for s, _, _ in results]):.1f} |" for name in names],
        "",
        "AUROC % of minus the z-score at each single layer (mean over runs; all classes pooled, each input against "
        "its predicted class):",
        "",
        "| layer | " + " | ".join(str(layer) for layer in facts["layers"]) + " |",
        "|---|" + "---|" * len(facts["layers"]),
        "| AUROC % | " + " | ".join(f"{100 * v:.0f}" for v in per_layer.mean(0)) + " |",
    ]
    text = "\n".join(lines) + "\n"
    publish(text.rstrip("\n"), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
