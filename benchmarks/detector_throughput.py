"""Scoring throughput of the layer-wise detector relative to the plain forward pass, and its fit time.

The detector has to run the model anyway (it needs the prediction), so a plain forward
pass over the same batch is the physical limit: a ratio of 1.0 means detection is free.
Both are timed in one run, alternating, on the same inputs, so machine load affects
both alike.

    python benchmarks/detector_throughput.py [--arch resnet18] [--batch-size 256] [--repeats 5]

Prints a Markdown table; ``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _report import publish  # benchmarks/_report.py: a script's own folder is on sys.path
from analysis.data import load_digits
from analysis.detection import LayerwiseDetector
from analysis.features import predict_classes
from analysis.pipeline import attacked_model


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_digits(0)
    run = attacked_model("digits", args.arch, "badnets", data=data, progress=False)
    model = run.model
    inputs = torch.cat([data.test.x, run.poisoned_test.x])  # benign and poisoned evaluation images

    fit_times = _time(lambda: LayerwiseDetector(batch_size=args.batch_size).fit(model, data.reference), args.repeats)
    detector = LayerwiseDetector(batch_size=args.batch_size).fit(model, data.reference)
    forward, detect = [], []
    for _ in range(args.repeats):  # alternate so both see the same machine state
        forward += _time(lambda: predict_classes(model, inputs, args.batch_size), 1)
        detect += _time(lambda: detector.detect(model, inputs), 1)
    f, d = statistics.median(forward), statistics.median(detect)
    lines = [
        f"digits + {args.arch} (BadNets model), {len(inputs)} inputs, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| plain forward pass | {len(inputs) / f:,.0f} inputs/s |",
        f"| layer-wise detector (predict + score) | {len(inputs) / d:,.0f} inputs/s |",
        f"| detector time / forward time | {d / f:.2f} |",
        f"| fit on {len(data.reference)} reference images | {statistics.median(fit_times):.2f} s |",
        f"| fit time / one forward pass over the reference set | "
        f"{statistics.median(fit_times) / (f * len(data.reference) / len(inputs)):.1f} |",
    ]
    text = "\n".join(lines)
    publish(text, args.out)


if __name__ == "__main__":
    main()
