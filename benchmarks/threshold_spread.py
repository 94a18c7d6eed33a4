"""The layer-wise detector with the paper's mean/std threshold vs the robust median/MAD option.

For every attacked digits model of the zoo (both architectures, the six attacks) and ``--runs``
reference draws (run 0 = the dataset's own split, then the redraws of ``reproduce``), fits
``LayerwiseDetector(spread="std")`` (paper) and ``LayerwiseDetector(spread="mad")`` on the same
reference set and reports TPR and FPR at tau = 2.5 on every benign evaluation image and every
triggered non-target image, mean ± std over runs. Features are extracted once per run and shared by
both settings (``fit_features`` / ``score_features``).

    python benchmarks/threshold_spread.py [--runs 3] [--threads 1] [--out docs/results/threshold_spread.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.data import load_digits
from analysis.detection import LayerwiseDetector
from analysis.study import Study
from analysis.features import extract_features, paper_layers
from analysis.reproduce import markdown_table

ATTACKS = ("badnets", "blended", "lc", "wanet", "issba", "iad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tau", type=float, default=2.5)
    parser.add_argument("--out", default="docs/results/threshold_spread.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    study = Study(load_digits(0), progress=False)
    rows = []
    for arch in study.archs:
        for attack in tqdm(ATTACKS, desc=arch):
            run = study.model(arch, attack)
            model = run.model.eval()
            layers = paper_layers(model)
            for r in range(args.runs):
                reference, benign = study.redraw(r)
                poisoned = run.attack.poisoned_test_set(benign)
                ref_feats, _ = extract_features(model, reference.x, layers)
                found = {}
                for name, images in (("benign", benign.x), ("poisoned", poisoned.x)):
                    found[name] = extract_features(model, images, layers)  # (features, predicted)
                for spread in ("std", "mad"):
                    det = LayerwiseDetector(tau=args.tau, spread=spread, unknown_class="flag")
                    det.fit_features(ref_feats, reference.y.numpy())
                    flags = {name: det.predict_features(*found[name]) for name in found}
                    rows.append({"arch": arch, "attack": attack, "run": r, "spread": spread,
                                 "TPR": flags["poisoned"].mean() * 100, "FPR": flags["benign"].mean() * 100})
    frame = pd.DataFrame(rows)
    table = (frame.groupby(["arch", "attack", "spread"], sort=False)[["TPR", "FPR"]]
             .agg(["mean", lambda v: v.std(ddof=0)]))
    table.columns = ["TPR", "TPR_std", "FPR", "FPR_std"]
    table = table.reset_index()
    command = f"python benchmarks/threshold_spread.py --runs {args.runs} --threads {args.threads}"
    text = "\n".join([
        f"Layer-wise detector at tau = {args.tau:g}: the paper's mean/std threshold (`spread=\"std\"`) vs "
        f"median/MAD (`spread=\"mad\"`), digits zoo models, {args.runs} reference draws, every benign and "
        "triggered evaluation input; mean ± std over draws (percent).",
        "",
        markdown_table(table),
        "",
        f"Command: `{command}`",
        "",
    ])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    print(text)


if __name__ == "__main__":
    main()
