"""Why two attacks use other settings (or miss) on digits: WaNet's noise mode and Label-Consistent.

Trains ResNet-18 (CPU width, the CPU profile, seed 0, no checkpoints) on digits under each
variant below and reports MA, ASR and the training time (attack preparation included):

* WaNet, paper settings (k 4, s 0.5, noise mode 0.2) vs noise mode off and s = 1.0.
  Result used by ``analysis.attacks.DATASET_ATTACK_SETTINGS`` (digits: noise mode off).
* Label-Consistent, paper settings (PGD ε 16/255, 20 × 2/255, 2×2 trigger bottom-right) vs
  ε 64/255 and a 4×4 trigger.

    python benchmarks/attack_variants.py [--only wanet lc] [--out docs/results/attacks]

Writes ``variants.csv`` and ``variants.md`` to ``--out``. LC's benign model and perturbed images
are cached in ``--cache-dir`` (default ``results/cache``), as ``zoo build`` does.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.attacks import build_attack
from analysis.data import load_digits
from analysis.features import predict_classes
from analysis.pipeline import attacked_model
from analysis.training import TrainConfig

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "attacks"
VARIANTS: dict[str, list[tuple[str, dict]]] = {  # attack -> (label, settings); the CPU profile's training
    "wanet": [
        ("paper settings (noise mode 0.2)", {}),
        ("noise mode off", {"noise_rate": 0.0}),
        ("strength s = 1.0", {"strength": 1.0}),
    ],
    "lc": [
        ("paper settings (eps 16/255, PGD 20 x 2/255)", {}),
        ("eps 64/255, PGD 60 x 2/255", {"eps": 64 / 255, "pgd_steps": 60}),
        ("4x4 trigger", {"trigger_size": 4}),
    ],
}
FIELDS = ["attack", "variant", "settings", "epochs", "ma", "asr", "train_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS, reverse=True))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache-dir", default="results/cache")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_digits()
    rows = []
    for attack in args.only:
        for label, settings in VARIANTS[attack]:
            config = TrainConfig.cpu("resnet18")
            atk = build_attack(attack, **settings)
            run = attacked_model("digits", "resnet18", atk, config=config, checkpoints=None, progress=False,
                                 data=data, cache_dir=args.cache_dir)
            ma = float(np.mean(predict_classes(run.model, data.test) == data.test.y.numpy()))
            asr = float(np.mean(predict_classes(run.model, run.poisoned_test) == atk.target))
            rows.append({"attack": attack, "variant": label, "settings": settings, "epochs": config.epochs,
                         "ma": ma, "asr": asr, "train_seconds": run.train_seconds})
            print(f"{attack:6s} {label:45s} MA {ma:.2%} ASR {asr:.2%} {run.train_seconds:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "variants.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# WaNet and Label-Consistent variants on digits (ResNet-18, width 16, seed 0)", "",
             f"Command: `python benchmarks/attack_variants.py --only {' '.join(args.only)}` ({args.threads} CPU "
             f"threads, torch {torch.__version__}, Python {platform.python_version()}). One training per row; "
             "the time includes attack preparation (LC: a cached benign model and PGD) and depends on what else "
             f"ran (load average at the end: {os.getloadavg()[0]:.1f}).", "",
             "| attack | variant | epochs | MA (%) | ASR (%) | train (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['attack']} | {r['variant']} | {r['epochs']} | {r['ma'] * 100:.2f} | {r['asr'] * 100:.2f} | "
              f"{r['train_seconds']:.0f} |" for r in rows]
    (args.out / "variants.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
