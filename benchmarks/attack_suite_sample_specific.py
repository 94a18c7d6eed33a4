"""The sample-specific attacks (ISSBA, IAD) trained end to end on digits, then analysed by the layer-wise detector.

For each attack: ``analysis.pipeline.attacked_model`` on digits (ResNet-18, width 16 by
default, ``TrainConfig(epochs, seed)``, no checkpoints: everything is trained here,
including ISSBA's encoder and IAD's generators), then ``analysis.pipeline.analyse`` at
``tau``. Reports MA, ASR, TPR, FPR, AUROC, the LOI of the target class and the training
time (attack preparation included); for ISSBA also the decoder's bit accuracy and the
residual's PSNR on the held-out test images; for IAD the mean mask density on them.
``--clean`` also trains a clean model with the same settings, for the MA comparison.

    python benchmarks/attack_suite_sample_specific.py [--attacks issba iad] [--clean] [--epochs 30]

Writes ``docs/results/attacks/<attack>.csv`` and ``.md`` per attack (``--out`` folder).
"""
from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import torch

from analysis.attacks import build_attack
from analysis.data import load_digits
from analysis.devices import seed_everything
from analysis.models import build_model
from analysis.pipeline import analyse, attacked_model
from analysis.training import TrainConfig, accuracy, train

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "attacks"


def clean_accuracy(data, arch: str, width: float, config: TrainConfig) -> tuple[float, float]:
    """(MA, seconds) of a model trained on the clean training set with the same settings."""
    seed_everything(config.seed)
    model = build_model(arch, data.num_classes, width)
    started = time.perf_counter()
    train(model, data.train, config, progress=False)
    return accuracy(model, data.test), time.perf_counter() - started


def run_attack(name: str, data, arch: str, width: float, config: TrainConfig, tau: float) -> dict:
    attack = build_attack(name)
    run = attacked_model(data=data, arch=arch, attack=attack, width=width, config=config, checkpoints=None,
                         progress=False)
    ev = analyse(run, tau=tau).evaluation
    row = {"attack": name, "dataset": "digits", "arch": arch, "width": width, "epochs": config.epochs,
           "seed": config.seed, "tau": tau, "ma": ev.ma, "asr": ev.asr, "tpr": ev.tpr, "fpr": ev.fpr,
           "auroc": ev.auroc, "loi": ev.loi, "train_seconds": run.train_seconds,
           "settings": ";".join(f"{k}={v}" for k, v in attack.settings().items())}
    if name == "issba":
        row.update(attack.quality(data.test))
    if name == "iad":
        row["mask_density"] = float(attack.masks(data.test.x).mean())
    return row


def write(row: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = row["attack"]
    with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [
        f"# {name.upper()} on digits, {row['arch']} width {row['width']}, {row['epochs']} epochs, seed {row['seed']}",
        "",
        f"Command: `{command}` ({torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| MA (%) | {pct(row['ma'])} |",
    ]
    if "clean_ma" in row:
        lines.append(f"| MA of a clean model, same settings (%) | {pct(row['clean_ma'])} |")
    lines += [
        f"| ASR (%) | {pct(row['asr'])} |",
        f"| TPR at tau {row['tau']} (%) | {pct(row['tpr'])} |",
        f"| FPR at tau {row['tau']} (%) | {pct(row['fpr'])} |",
        f"| AUROC (%) | {pct(row['auroc'])} |",
        f"| LOI of the target class | {row['loi']} |",
        f"| training time incl. attack preparation (s) | {row['train_seconds']:.0f} |",
    ]
    if "bit_accuracy" in row:
        lines += [f"| decoder bit accuracy on test images | {row['bit_accuracy']:.4f} |",
                  f"| residual PSNR on test images (dB) | {row['psnr']:.2f} |"]
    if "mask_density" in row:
        lines.append(f"| mean mask value on test images | {row['mask_density']:.4f} |")
    lines += ["", f"Attack settings: `{row['settings']}`.", ""]
    (out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", nargs="+", default=["issba", "iad"], choices=("issba", "iad"))
    parser.add_argument("--clean", action="store_true", help="also train a clean model for the MA comparison")
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--width", type=float, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width = int(args.width) if args.arch == "resnet18" else args.width
    command = "python benchmarks/attack_suite_sample_specific.py " + " ".join(
        ["--attacks", *args.attacks] + (["--clean"] if args.clean else []) +
        ["--arch", args.arch, "--width", str(args.width), "--epochs", str(args.epochs), "--seed", str(args.seed)])
    data = load_digits(0)
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    clean = clean_accuracy(data, args.arch, width, config) if args.clean else None
    if clean is not None:
        print(f"clean model: MA {100 * clean[0]:.2f}% in {clean[1]:.0f} s", flush=True)
    for name in args.attacks:
        row = run_attack(name, data, args.arch, width, config, args.tau)
        if clean is not None:
            row["clean_ma"] = clean[0]
        write(row, args.out, command)
        print({k: v for k, v in row.items() if k != "settings"}, flush=True)


if __name__ == "__main__":
    main()
