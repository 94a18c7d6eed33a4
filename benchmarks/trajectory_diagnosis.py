"""Why does ``score="trajectory"`` lose to the paper's rule on some cells? Variants of the trajectory score over reference redraws.

For one model (default: digits' zoo MobileNetV2 + BadNets, the cell where the trajectory score is
worse than the paper's LOI rule in ``docs/results/recent_detectors.md``; ``npz PATH`` with
``--models-dir``, ``--train-subset`` and ``--epochs`` takes a model trained by ``reproduce`` or
``benchmarks/recent_detectors.py`` on that archive), every evaluation input (at most ``--max-eval``
benign ones, a seeded sample) is scored against its predicted class, and the AUROC (benign vs
poisoned evaluation inputs) is reported for:

* ``paper rule``: the paper's summed cosine similarity at LOI-2..LOI, standardised per class;
* ``trajectory``: the shipped option, the squared Mahalanobis distance of the per-layer z-scores
  (Ledoit-Wolf precision pooled over classes); it is *two-sided*: a benign input unusually close
  to its class's centroids is as far from the mean as a poisoned one unusually far;
* ``one-sided trajectory``: the same distance with positive z-scores set to 0 (only layers at
  which the input is *less* similar than benign ones count);
* ``diagonal``, ``one-sided diagonal``: the sum of squared (clipped) z-scores, no covariance;
* ``mean z``: minus the mean z-score over layers (one-sided by construction, no covariance);
* ``pooled std``: the one-sided diagonal and the mean z with each layer's std pooled over classes
  (root mean square of the classes' stds) instead of each class's own, which a class with a handful of
  reference samples estimates poorly;

and the AUROC of minus the z-score at each single layer (where the signal is). Last, where the false
positives come from: at the threshold that flags 5 % of the benign inputs, the share of them in
classes with fewer than ``MIN_CLASS_SAMPLES`` (10) reference samples, beside those classes' share of all benign inputs;
and the AUROC over the triggered inputs the model sends to the target apart from those it does not (where the
attack failed: they are scored against their own class and look benign).

    python benchmarks/trajectory_diagnosis.py [digits | npz PATH] [--arch mobilenetv2] [--attack badnets]
        [--models-dir DIR --train-subset N --epochs E] [--max-eval N] [--out FILE.md]

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
from analysis.reference_checks import MIN_CLASS_SAMPLES  # noqa: E402
from analysis.explore import LayerwiseExplorer  # noqa: E402
from analysis.metrics import auroc  # noqa: E402
from analysis.reproduce import load_for_reproduce  # noqa: E402
from analysis.study import Study  # noqa: E402
from analysis.workbench import Workbench  # noqa: E402


def z_scores(detector: LayerwiseDetector, similarity: np.ndarray, predicted: np.ndarray,
             classes: list[int], *, pooled_std: bool = False) -> np.ndarray:
    """``[N, K]`` z-scores of each input's similarity to its predicted class at the trajectory's K layers.

    ``pooled_std``: divide by each layer's std pooled over the classes (root mean square of the classes' stds).
    """
    out = np.full((len(predicted), len(next(iter(detector.trajectory_mean_.values())))), np.nan)
    pooled = np.sqrt(np.mean([std ** 2 for std in detector.trajectory_std_.values()], axis=0))
    for t in np.unique(predicted).tolist():
        rows = np.flatnonzero(predicted == t)
        layers = np.asarray(detector.score_layers_[t]) - 1
        values = similarity[rows][:, layers, classes.index(t)]
        out[rows] = (values - detector.trajectory_mean_[t]) / (pooled if pooled_std else detector.trajectory_std_[t])
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
    paper_b = paper.suspicion_from_scores(explorer.benign_scores, explorer.benign_predicted)
    paper_p = paper.suspicion_from_scores(explorer.poisoned_scores, explorer.poisoned_predicted)
    scores = {"paper rule (sum at LOI-2..LOI, standardised)": auroc(paper_b, paper_p)}
    benign_v = variants(z_benign, trajectory.trajectory_precision_)
    poisoned_v = variants(z_poisoned, trajectory.trajectory_precision_)
    pooled_b = z_scores(trajectory, explorer.benign_similarity, explorer.benign_predicted, classes, pooled_std=True)
    pooled_p = z_scores(trajectory, explorer.poisoned_similarity, explorer.poisoned_predicted, classes, pooled_std=True)
    for name, of in {"one-sided diagonal, pooled std": lambda z: (np.minimum(z, 0.0) ** 2).sum(1),
                     "mean z, pooled std": lambda z: -z.mean(1)}.items():
        benign_v[name], poisoned_v[name] = of(pooled_b), of(pooled_p)
    scores.update({name: auroc(benign_v[name], poisoned_v[name]) for name in benign_v})
    per_layer = [auroc(-z_benign[:, k], -z_poisoned[:, k]) for k in range(z_benign.shape[1])]
    # Where the benign false positives come from: classes with few reference samples, or not.
    counts = np.bincount(reference.y.numpy(), minlength=max(classes) + 1)
    few = counts[explorer.benign_predicted] < MIN_CLASS_SAMPLES
    shipped = benign_v["trajectory (two-sided Mahalanobis, shipped)"]
    flagged = shipped > np.quantile(shipped, 0.95)
    # Triggered inputs the model does not send to the target (the attack failed on them, 100 - ASR %) are scored
    # against their own class, where they look benign: the AUROC over the ones it does send is the detector's own.
    hit = explorer.poisoned_predicted == run.attack.target
    by_outcome = {name: tuple(auroc(b, p[mask]) if mask.any() else float("nan") for mask in (hit, ~hit))
                  for name, b, p in [("paper rule", paper_b, paper_p),
                                     ("trajectory (shipped)", shipped, poisoned_v["trajectory (two-sided Mahalanobis, shipped)"]),
                                     ("one-sided diagonal, pooled std", benign_v["one-sided diagonal, pooled std"],
                                      poisoned_v["one-sided diagonal, pooled std"])]}
    facts = {"loi": paper.loi_[run.attack.target], "n_layers": paper.n_layers_,
             "layers": list(trajectory.score_layers_[run.attack.target]), "n_reference": len(reference),
             "n_benign": len(benign), "n_poisoned": len(poisoned), "few_share": float(few.mean()),
             "few_share_flagged": float(few[flagged].mean()) if flagged.any() else float("nan"),
             "hit_share": float(hit.mean()), "by_outcome": by_outcome}
    return scores, per_layer, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", choices=["digits", "npz"])
    parser.add_argument("path", nargs="?", default=None, help="npz: the archive")
    parser.add_argument("--models-dir", default="results/models", help="npz: where the model was trained")
    parser.add_argument("--train-subset", type=int, default=None, help="npz: as the model was trained")
    parser.add_argument("--epochs", type=int, default=None, help="npz: as the model was trained")
    parser.add_argument("--max-eval", type=int, default=0, help="at most this many benign inputs per run (0 = all)")
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--beta", type=float, default=None,
                        help="--attack adaptive: the model of this beta (reproduce's Table 7 checkpoint)")
    parser.add_argument("--runs", type=int, default=3, help="reference redraws (run 0 = the dataset's own split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    if args.dataset == "digits":
        study = Workbench("digits", progress=False).study
    else:
        study = Study(load_for_reproduce("npz", args.path), archs=(args.arch,), models_dir=Path(args.models_dir),
                      attacks=(args.attack,), train_subset=args.train_subset, epochs=args.epochs, progress=False)
    if (args.beta is None) != (args.attack != "adaptive"):
        parser.error(f"--beta: expected with --attack adaptive only, got --attack {args.attack} --beta {args.beta}")
    if args.beta is None:
        run = study.model(args.arch, args.attack)
    else:
        run = study.adaptive_model(args.arch, args.beta)
    results = []
    for r in range(args.runs):
        reference, benign = study.redraw(r)
        if args.max_eval and len(benign) > args.max_eval:
            benign = benign.subset(np.sort(np.random.default_rng(r).choice(len(benign), args.max_eval, replace=False)))
        results.append(one_run(run, reference, benign, run.attack.poisoned_test_set(benign)))
    names = list(results[0][0])
    per_layer = np.array([layers for _, layers, _ in results])
    facts = results[0][2]
    lois = [f["loi"] for _, _, f in results]
    data_args = "" if args.dataset == "digits" else (
        f" npz {args.path} --models-dir {args.models_dir}"
        f"{f' --train-subset {args.train_subset}' if args.train_subset else ''}"
        f"{f' --epochs {args.epochs}' if args.epochs else ''}")
    command = (f"python benchmarks/trajectory_diagnosis.py{data_args} --arch {args.arch} --attack {args.attack} "
               f"{f'--beta {args.beta:g} ' if args.beta is not None else ''}"
               f"--runs {args.runs}{f' --max-eval {args.max_eval}' if args.max_eval else ''} --threads {args.threads}"
               f"{' --out ' + args.out if args.out else ''}")
    model_from = "the zoo's model" if args.dataset == "digits" else f"the model in {args.models_dir}"
    lines = [
        f"# Trajectory score variants: {study.data.name}, {args.arch} + {args.attack}"
        f"{f' (beta {args.beta:g})' if args.beta is not None else ''}",
        "",
        f"Command: `{command}`; {model_from}; {args.runs} reference redraws (run 0 = the dataset's own split; "
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
        "",
        f"Benign inputs predicted as a class with fewer than {MIN_CLASS_SAMPLES} reference samples, per run: "
        + " / ".join(f"{100 * f['few_share']:.1f}" for _, _, f in results)
        + " % of all benign inputs, and "
        + " / ".join(f"{100 * f['few_share_flagged']:.1f}" for _, _, f in results)
        + " % of those the shipped trajectory score flags at the threshold that flags 5 % of the benign inputs.",
        "",
        "Triggered inputs the model sends to the target class (the attack worked on them), per run: "
        + " / ".join(f"{100 * f['hit_share']:.1f}" for _, _, f in results)
        + " %. AUROC % (mean over runs) against the benign inputs, split by that outcome:",
        "",
        "| score | triggered, sent to the target | triggered, kept their class |",
        "|---|---|---|",
        *[f"| {name} | {100 * np.nanmean([f['by_outcome'][name][0] for _, _, f in results]):.1f} | "
          f"{100 * np.nanmean([f['by_outcome'][name][1] for _, _, f in results]):.1f} |"
          for name in results[0][2]["by_outcome"]],
    ]
    text = "\n".join(lines) + "\n"
    publish(text.rstrip("\n"), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
