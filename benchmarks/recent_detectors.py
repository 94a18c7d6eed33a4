"""The paper's layer-wise detector and STRIP against three later input-level detectors (SCALE-UP, IBD-PSC, TED).

On the embedded digits dataset and the committed checkpoint zoo (``checkpoints/``, trained when
absent), every detector is fitted on the reference split (``run.data.reference``) and run once on
a seeded sample of benign evaluation images (``run.data.test``, disjoint from the reference) and
triggered non-target evaluation images (``run.poisoned_test``) together, with its default
(paper) settings, plus the layer-wise detector's ``score="trajectory"`` option. Per cell and detector the table gives the TPR and FPR at the detector's own
threshold, the AUROC of its suspicion score, the TPR at FPR <= 1 % and <= 5 % with the threshold
set on these benign scores themselves (:func:`analysis.metrics.tpr_at_fpr`, an oracle operating
point), the F1 of its flags (all through :func:`analysis.experiments.run_detector`, the protocol of Tables 1/2) and the seconds of fit + detection. STRIP blends each input with 20 reference images by
default, not the paper's 100 (``--strip-blends 100``): its forward passes dominate the runtime (4.1 min
for the whole script with 20 on 2 otherwise idle cores; STRIP's share grows fivefold with 100).

    PYTHONPATH=. python benchmarks/recent_detectors.py [--max-benign 200] [--max-poisoned 200] [--seed 0] [--threads 2]
                                          [--strip-blends 20] [--cells resnet18:badnets,...]
                                          [--out docs/results/recent_detectors.md]
"""
from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch
from tqdm.auto import tqdm

from _report import publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.data import LabeledImages, load_digits
from analysis.defenses import build_defense
from analysis.metrics import attack_metrics
from analysis.experiments import _cap, run_detector  # _cap: as the apps use it
from analysis.pipeline import attacked_model
from analysis.reproduce import markdown_table

DETECTORS = ("layerwise", "layerwise-trajectory", "strip", "scale-up", "ibd-psc", "ted")
CELLS = ("resnet18:badnets", "resnet18:blended", "resnet18:wanet", "resnet18:issba",
         "mobilenetv2:badnets", "mobilenetv2:blended")


def build(name: str, seed: int, strip_blends: int):
    if name == "layerwise-trajectory":  # the option beyond the paper: LayerwiseDetector(score="trajectory")
        return build_defense("layerwise", score="trajectory")
    return build_defense(name, seed=seed, n_blends=strip_blends) if name == "strip" else build_defense(name)


def evaluate(name: str, seed: int, strip_blends: int, model, reference: LabeledImages, benign: LabeledImages,
             poisoned: LabeledImages) -> dict:
    """One cell: the detector fitted on ``reference`` and run once on benign + poisoned (Tables 1/2's protocol)."""
    return {"detector": name, **run_detector(build(name, seed, strip_blends), model, reference, benign, poisoned)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS), help="arch:attack pairs, comma-separated")
    parser.add_argument("--max-benign", type=int, default=200)
    parser.add_argument("--max-poisoned", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the input samples and of STRIP")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strip-blends", type=int, default=20,
                        help="STRIP's blends per input (paper: 100, five times STRIP's runtime, which dominates)")
    parser.add_argument("--out", default="docs/results/recent_detectors.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cells = [tuple(cell.split(":")) for cell in args.cells.split(",")]

    data = load_digits(0)
    rows, info = [], []
    started = time.perf_counter()
    progress = tqdm(total=len(cells) * len(DETECTORS), desc="cells × detectors")
    for arch, attack in cells:
        run = attacked_model("digits", arch, attack, data=data, progress=False)
        model = run.model.eval()
        benign = _cap(run.data.test, args.max_benign, args.seed)
        poisoned = _cap(run.poisoned_test, args.max_poisoned, args.seed)
        info.append({"arch": arch, "attack": attack, "reference": len(run.data.reference), "benign": len(benign),
                     "poisoned": len(poisoned),
                     **{key.upper(): value * 100
                        for key, value in attack_metrics(model, benign, poisoned, run.attack.target).items()}})
        for name in DETECTORS:
            progress.set_postfix_str(f"{arch} {attack} {name}")
            rows.append({"arch": arch, "attack": attack, **evaluate(name, args.seed, args.strip_blends, model,
                                                                   run.data.reference, benign, poisoned)})
            progress.update()
    progress.close()
    total = time.perf_counter() - started

    table = pd.DataFrame(rows)
    summary = table.groupby("detector", sort=False)[["AUROC", "TPR@FPR<=1%", "TPR@FPR<=5%", "TPR", "FPR", "F1",
                                                        "seconds"]].mean()
    summary = summary.reset_index()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = (f"PYTHONPATH=. python benchmarks/recent_detectors.py --cells {args.cells} --max-benign {args.max_benign} "
               f"--max-poisoned {args.max_poisoned} --seed {args.seed} --threads {args.threads} "
               f"--strip-blends {args.strip_blends}")
    text = "\n".join([
        "# Recent input-level detectors vs the paper's layer-wise detector (digits zoo)",
        "",
        f"Digits (embedded, 10 classes, 32×32), committed checkpoints. Every detector is fitted on the "
        f"{len(data.reference)} reference images and run once on a seeded sample (seed {args.seed}) of at most "
        f"{args.max_benign} benign evaluation images (disjoint from the reference) and {args.max_poisoned} "
        f"triggered non-target images together, with its default settings: layer-wise tau = 2.5 (cosine, LOI; "
        f"layerwise-trajectory: the same detector with score='trajectory', not in the paper), "
        f"STRIP {args.strip_blends} blends{'' if args.strip_blends == 100 else ' (paper: 100)'} / 10th percentile, "
        f"SCALE-UP data-free (factors 3-11, SPC > 0.5), IBD-PSC "
        f"(omega 1.5, 5 models, error bound 0.6, PSC > 0.9), TED (paper layers, Euclidean, PCA 'mle', 1 % "
        f"contamination). CPU, {torch.get_num_threads()} threads, 1-min load average {load:.1f} at the end, "
        f"{total / 60:.1f} min in all.",
        "",
        "TPR / FPR: at the detector's own threshold. TPR@FPR<=x: the best TPR of a threshold whose FPR on these "
        "benign images is at most x (set on the evaluation scores: an oracle operating point, comparable across "
        f"detectors; with {args.max_benign} benign images, 1 % allows {int(args.max_benign * 0.01)} false positive(s)). "
        "F1: of the flags at the detector's own threshold, poisoned = positive. All in %. "
        "seconds: fit + detection. Every column comes from analysis.metrics.detection_metrics.",
        "",
        "## Models and inputs",
        "",
        markdown_table(pd.DataFrame(info), digits=1),
        "",
        "## Per cell",
        "",
        markdown_table(table, digits=1),
        "",
        "## Mean over cells",
        "",
        markdown_table(summary, digits=1),
        "",
        f"Command: `{command}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
