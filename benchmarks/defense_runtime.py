"""CPU runtime of the layer-wise detector, Activation Clustering and SCAn on the same inputs (paper, Fig. 11).

Each detector is fitted on the reference split and then run once over all benign and poisoned
evaluation inputs together (AC and SCAn judge the set as a whole), on the digits model attacked by
BadNets from ``checkpoints/`` (trained when absent). Repeats rotate the detectors' order so machine
load affects all alike; the table gives medians and each detector's total time relative to the
layer-wise detector's, measured in the same run (:func:`analysis.comparison.detector_runtime`).

    python benchmarks/defense_runtime.py [--arch resnet18] [--repeats 3] [--threads 2] [--out docs/results/defense_runtime.md]
"""
from __future__ import annotations

import argparse

import torch

from _report import load_average, publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.comparison import detector_runtime
from analysis.data import load_digits
from analysis.pipeline import attacked_model
from analysis.reproduce import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/defense_runtime.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_digits(0)
    run = attacked_model("digits", args.arch, "badnets", data=data, progress=False)
    inputs = torch.cat([data.test.x, run.poisoned_test.x])
    table = detector_runtime(run.model.eval(), data.reference, inputs, repeats=args.repeats)
    load = load_average()
    text = "\n".join([
        f"digits + {args.arch}, BadNets model; fit on {len(data.reference)} reference images, detection on "
        f"{len(data.test)} benign + {len(run.poisoned_test)} poisoned images in one call; CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} rotating repeats, 1-min load average "
        f"{load:.1f} at the end (paper: Fig. 11).",
        "",
        markdown_table(table),
        "",
        f"Command: `python benchmarks/defense_runtime.py --arch {args.arch} --repeats {args.repeats} "
        f"--threads {args.threads}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
