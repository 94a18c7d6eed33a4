"""How often the paper's LOI choice looks fragile on models where the rule works (digits zoo, reference redraws).

For every zoo model of each architecture and ``--runs`` reference redraws (:func:`analysis.protocol.redraw`), the
paper's detector is fitted on the reference images alone and :func:`analysis.diagnostics.loi_diagnosis` is run on
every class. Reported per fit: the target class's LOI and whether it is the output layer, and the classes whose LOI
is *both* the output layer and a near-tie (``warn_fragile_loi(..., tie_at_output_only=True)``), with their
runner-up rise as a fraction of the largest. This is why that check is a diagnosis to call, not a warning inside
``LayerwiseDetector.fit`` (``docs/low_fpr.md``).

    PYTHONPATH=. python benchmarks/loi_warning_rate.py [--archs resnet18 mobilenetv2] [--runs 5] [--threads 1]
        [--out docs/results/loi_warning_rate_digits.md]
"""
from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
import torch

from _report import load_average, publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.data import load_digits
from analysis.detection import LayerwiseDetector
from analysis.diagnostics import loi_diagnosis
from analysis.protocol import redraw
from analysis.reproduce import markdown_table
from analysis.study import Study

ATTACKS = ("badnets", "blended", "wanet", "issba", "iad")  # the attacks that implant on digits (LC does not)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenetv2"], choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results/loi_warning_rate_digits.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits(0)
    started = time.perf_counter()
    rows = []
    for arch in args.archs:
        study = Study(data, archs=(arch,), progress=False)
        for attack in ATTACKS:
            run = study.model(arch, attack)
            target = run.attack.target
            for r in range(args.runs):
                reference, _ = redraw(data, r)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # small classes; reported elsewhere
                    detector = LayerwiseDetector().fit(run.model, reference)
                found = {t: loi_diagnosis(v) for t, v in detector.mean_similarity_.items()}
                fragile = {t: d for t, d in found.items() if d.near_tie and d.at_output}
                rows.append({
                    "arch": arch, "attack": attack, "run": r, "target": target, "target LOI": found[target].loi,
                    "layers": detector.n_layers_, "target LOI at output": found[target].at_output,
                    "near-tie at output: classes (runner-up / largest rise)":
                        ", ".join(f"{t} ({d.runner_up_rise / d.rise:.3f})" for t, d in sorted(fragile.items())),
                    "flags the target": target in fragile,
                })
    table = pd.DataFrame(rows)
    fired = table["near-tie at output: classes (runner-up / largest rise)"] != ""
    summary = table.assign(fired=fired).groupby("arch", sort=False).agg(
        fits=("run", "size"), fits_where_it_fires=("fired", "sum"), of_them_on_the_target=("flags the target", "sum"),
        target_LOI_at_output=("target LOI at output", "sum"))
    text = "\n".join([
        "# How often the LOI looks fragile on the digits zoo (`analysis.diagnostics`)", "",
        f"Zoo models of {', '.join(ATTACKS)} (the attacks that implant on digits), {args.runs} reference redraws "
        f"each (run 0 the dataset's own split); the paper's detector fitted on the reference images alone. "
        f"'near-tie at output': classes whose LOI is the output layer and whose runner-up rise is at least "
        f"0.85 of the largest. CPU, {torch.get_num_threads()} threads, 1-min load average {load_average():.1f} at "
        f"the end, {(time.perf_counter() - started) / 60:.1f} min in all.", "",
        "## Summary", "", markdown_table(summary.reset_index()), "", "## Per fit", "", markdown_table(table), "",
        f"Command: `PYTHONPATH=. python benchmarks/loi_warning_rate.py --archs {' '.join(args.archs)} --runs "
        f"{args.runs} --threads {args.threads} --out {args.out}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
