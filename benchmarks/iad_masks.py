"""How much of each image IAD's trained mask generator covers, with its losses on the thresholded or the raw masks.

IAD's code computes the mask generator's norm and diversity losses after its soft threshold
(``mask_loss_on="sharpened"``, our default); this toolkit first computed them on the raw output
(``"raw"``, still digits' setting), and at the mask generator's learning rate 0.01 (IAD's, and digits') or
0.001 (our default). Trains only the mask generator (IAD's first step, seed 0, batch 128)
for each combination and number of mask epochs and reports the share of pixels whose thresholded mask
exceeds 0.5 on the training images (``IAD.check_masks``; IAD aims at ``mask_density`` 3.2 %):

    python benchmarks/iad_masks.py [digits | npz PATH] [--train-subset N] [--epochs 1 3 10] [--losses-on sharpened raw]
                                   [--mask-lrs 0.01 0.001] [--out docs/results/attacks]

Writes ``iad_masks_<dataset>.md``. A share near 0 means empty masks: the triggered images equal the
clean ones and no backdoor can be learned.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from analysis.attacks import IAD, AttackContext
from analysis.attacks.iad import MASK_LOSS_ON
from analysis.reproduce import load_for_reproduce
from analysis.study import Study
from analysis.training import TrainConfig

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "attacks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", choices=["digits", "npz"])
    parser.add_argument("path", nargs="?", default=None, help="npz: the archive")
    parser.add_argument("--train-subset", type=int, default=None, help="train on this many images (stratified)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10], help="mask-generator epochs")
    parser.add_argument("--losses-on", nargs="+", choices=MASK_LOSS_ON, default=list(MASK_LOSS_ON))
    parser.add_argument("--mask-lrs", type=float, nargs="+", default=[0.01, 0.001])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    study = Study(load_for_reproduce(args.dataset, args.path), train_subset=args.train_subset, progress=False)
    train = study.training_data().train
    context = AttackContext(config=TrainConfig(epochs=1, batch_size=128, seed=0), progress=False)
    rows = []
    for mode, lr in [(mode, lr) for mode in args.losses_on for lr in args.mask_lrs]:
        for epochs in args.epochs:
            attack = IAD(mask_loss_on=mode, mask_lr=lr, mask_epochs=epochs)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # empty masks are what this table reports
                attack.prepare(train, study.data.num_classes, context)
                share = attack.check_masks(train.x, max_images=len(train.x))
            rows.append((mode, lr, epochs, share, time.perf_counter() - started))
            print(f"{mode:9s} lr {lr:g} {epochs:3d} epochs: {share:.2%} of pixels ({rows[-1][4]:.0f} s)", flush=True)
    command = "python benchmarks/iad_masks.py" + (f" npz {args.path}" if args.dataset == "npz" else "")
    command += (f" --train-subset {args.train_subset}" if args.train_subset else "")
    command += " --epochs " + " ".join(map(str, args.epochs))
    command += " --losses-on " + " ".join(args.losses_on) + " --mask-lrs " + " ".join(f"{lr:g}" for lr in args.mask_lrs)
    lines = [f"# IAD's mask generator on {study.data.name}: share of pixels its thresholded masks cover", "",
             f"`{command}` ({len(train)} training images, {args.threads} CPU thread(s), torch {torch.__version__}, "
             f"Python {platform.python_version()}). IAD aims at mask density 3.2 %.", "",
             "| losses on | mask lr | mask epochs | pixels covered (%) | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {mode} | {lr:g} | {epochs} | {share * 100:.2f} | {seconds:.0f} |"
              for mode, lr, epochs, share, seconds in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"iad_masks_{study.data.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
