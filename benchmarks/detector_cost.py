"""Cost per input of every detector: forward passes, and time as a ratio to one plain forward pass, in one run.

On the digits zoo's BadNets model of each architecture, each detector of
:func:`analysis.comparison.available_defenses` ``(include_recent=True)`` is fitted on the reference split and run
once on 100 benign + 100 triggered evaluation inputs (the protocol of Tables 1/2, run 0). Measured:

* forward passes: the images that go through the model, counted by a forward hook on its top module. The hook is
  a plain function, which ``copy.deepcopy`` keeps, so the copies a defense makes (IBD-PSC's amplified models,
  Fine-Pruning's pruned one) are counted too. Fit: per reference image; detection: per input.
* time: seconds of detection per input divided by the seconds per input of one plain forward pass
  (``analysis.features.predict_classes``) of the same inputs, both the median of ``--repeats`` repeats, measured
  in the same run; and the seconds of fit.

    PYTHONPATH=. python benchmarks/detector_cost.py [--archs resnet18 mobilenetv2] [--max-eval 100]
        [--defense-samples 20] [--repeats 3] [--threads 2] [--detectors NAME ...] [--out docs/results/detector_cost.md]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from _report import load_average, publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.comparison import available_defenses, build_detector, cap
from analysis.data import load_digits
from analysis.features import predict_classes
from analysis.reproduce import markdown_table
from analysis.study import Study


def count_forward_images(model: torch.nn.Module):
    """``(counts, handle)``: ``counts[0]`` grows by the batch size of every forward pass of ``model`` or of a deepcopy."""
    counts = [0]

    def hook(module, inputs, output):  # a function, not a bound method: deepcopy shares it, and so the list
        counts[0] += int(inputs[0].shape[0])

    return counts, model.register_forward_hook(hook)


def cost_rows(study: Study, arch: str, repeats: int, names: list[str]) -> pd.DataFrame:
    run = study.model(arch, "badnets")
    reference, benign = study.redraw(0)
    poisoned = cap(run.attack.poisoned_test_set(benign), study.max_eval, 2000)
    inputs = torch.cat([cap(benign, study.max_eval, 1000).x, poisoned.x])
    model = run.model.eval()
    plain = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_classes(model, inputs)
        plain.append((time.perf_counter() - started) / len(inputs))
    rows = []
    for name in tqdm(names, desc=f"{arch}", leave=False):
        fits, detections, fit_images, detect_images = [], [], 0, 0
        for _ in range(repeats):
            detector = build_detector(name, seed=0, **study.detector_settings(name))
            counts, handle = count_forward_images(model)
            try:
                started = time.perf_counter()
                detector.fit(model, reference, train=run.data.train)
                fits.append(time.perf_counter() - started)
                fit_images = counts[0]
                started = time.perf_counter()
                detector.detect(model, inputs)
                detections.append((time.perf_counter() - started) / len(inputs))
                detect_images = counts[0] - fit_images
            finally:
                handle.remove()
        rows.append({"detector": name, "fit: passes / reference image": fit_images / len(reference),
                     "fit s": float(np.median(fits)), "detection: passes / input": detect_images / len(inputs),
                     "detection time / input ÷ one forward pass": float(np.median(detections) / np.median(plain))})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenetv2"], choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--max-eval", type=int, default=100, help="benign and poisoned inputs")
    parser.add_argument("--defense-samples", type=int, default=20, help="RS neighbours and STRIP blends (paper: 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detectors", nargs="+", default=None,
                        help="default: every comparison detector (available_defenses(include_recent=True))")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/detector_cost.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.detectors or list(available_defenses(include_recent=True))

    data = load_digits(0)
    started = time.perf_counter()
    sections = []
    for arch in args.archs:
        study = Study(data, archs=(arch,), max_eval=args.max_eval, defense_samples=args.defense_samples,
                      progress=False)
        sections += [f"## {arch} + BadNets", "", markdown_table(cost_rows(study, arch, args.repeats, names), digits=2), ""]
    load = load_average()
    text = "\n".join([
        "# Cost per input of every detector (digits zoo)",
        "",
        f"Fitted on the {len(data.reference)} reference images, run once on {args.max_eval} benign + "
        f"{args.max_eval} triggered evaluation inputs (Tables 1/2's run 0); RS and STRIP with "
        f"{args.defense_samples} neighbours / blends (paper: 100). Forward passes are counted by a hook on the "
        f"model (copies a defense makes included); times are medians of {args.repeats} repeats, the detection "
        f"time per input as a ratio to one plain forward pass of the same inputs in the same run. CPU, "
        f"{torch.get_num_threads()} threads, 1-min load average {load:.1f} at the end, "
        f"{(time.perf_counter() - started) / 60:.1f} min in all.",
        "",
        *sections,
        f"Command: `PYTHONPATH=. python benchmarks/detector_cost.py --archs {' '.join(args.archs)} --max-eval "
        f"{args.max_eval} --defense-samples {args.defense_samples} --repeats {args.repeats} --threads {args.threads}"
        f"{' --detectors ' + ' '.join(args.detectors) if args.detectors else ''} --out {args.out}`",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
