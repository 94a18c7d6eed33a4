"""How one atypical reference image moves the layer-wise detector's threshold (docs/deviations.md).

Fits ``LayerwiseDetector`` (paper settings) on the digits reference split for a zoo model and, for
the attack's target class, prints the reference scores (summed cosine similarity at LOI-2..LOI),
mu and sigma with and without the lowest score, the threshold mu - tau sigma, and the share of
triggered inputs predicted as the target that fall below each threshold.

    python benchmarks/reference_outlier.py [--arch mobilenetv2] [--attack badnets] [--threads 1]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from analysis.data import load_digits
from analysis.detection import LayerwiseDetector
from analysis.study import Study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv2", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--tau", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = Study(load_digits(0), progress=False).model(args.arch, args.attack)
    detector = LayerwiseDetector(tau=args.tau).fit(run.model, run.data.reference)
    target = run.attack.target
    scores = np.sort(detector.reference_scores_[target])
    found = detector.detect(run.model, run.poisoned_test)
    poisoned = found.scores[found.predicted == target]
    print(f"digits + {args.arch} + {args.attack}: class {target}, LOI {detector.loi_[target]}, "
          f"scored layers {list(detector.score_layers_[target])}")
    print("reference scores, sorted:", np.round(scores, 2).tolist())
    print(f"triggered inputs predicted as {target}: {len(poisoned)}, mean score {poisoned.mean():.2f}")
    for label, kept in (("all reference scores", scores), ("without the lowest", scores[1:])):
        mu, sigma = kept.mean(), kept.std(ddof=0)
        threshold = mu - args.tau * sigma
        print(f"{label:22s} mu {mu:.2f}  sigma {sigma:.2f}  threshold {threshold:.2f}  "
              f"triggered inputs below it {np.mean(poisoned < threshold):.1%}")


if __name__ == "__main__":
    main()
