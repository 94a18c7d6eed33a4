"""Why attacks use other settings (or miss) on digits: WaNet's noise mode, ISSBA's residual, Label-Consistent.

Trains ``--arch`` (default ResNet-18; CPU width, the CPU profile, seed 0 unless a variant sets
``seed``, no checkpoints) on digits
under each variant below and reports MA, ASR and the training time (attack preparation included):

* WaNet, paper settings (k 4, s 0.5, noise mode 0.2) vs noise mode off, s = 1.0, and both.
  Result used by ``analysis.attacks.DATASET_ATTACK_SETTINGS`` (digits: noise mode off; s = 1.0
  was tried and not kept).
* Label-Consistent, paper settings (PGD ε 16/255, 20 × 2/255, 2×2 trigger bottom-right) vs
  ε 64/255, ε 128/255 and a 4×4 trigger, and the same budgets against an adversarially trained
  surrogate (``surrogate="adversarial"``, Turner et al.'s choice; ε_train 16/255, 5 PGD steps).
  For LC two more columns say why it misses: the share of the perturbed images the surrogate
  no longer assigns to the target (did PGD work?), and the
  share of non-target test images sent to the target by a poisoned image's perturbation alone,
  without the trigger (did the victim learn the perturbation instead of the trigger?).
* BadNets, WaNet without noise mode and IAD with seeds 0, 1, 2: how far ASR moves between runs that differ
  only in the seed (a variant's ``seed`` seeds both the attack and the training). Run with
  ``--arch mobilenetv2 --variants seed "noise mode off"``.
* ISSBA, our encoder's residual weight 5 (the class default), 2 and 1 (digits' setting in
  ``DATASET_ATTACK_SETTINGS``), with the residual's PSNR and the decoder's bit accuracy on the
  test images. Run with ``--arch mobilenetv2``, where the weight decides whether it is learned.

    python benchmarks/attack_variants.py [digits | npz PATH] [--only wanet lc issba badnets iad] [--arch resnet18]
                                         [--variants TEXT ...] [--out docs/results/attacks]

``npz PATH`` trains on a real dataset instead (e.g. ``../shared/data/gtsrb_32x32.npz``), as ``reproduce npz``
does: ``--train-subset`` (a seeded stratified subset), ``--epochs``, the CPU profile otherwise; the models
are saved in ``--models-dir`` under ``<dataset>-<arch>-<attack>-variant-<n>`` (so a rerun loads them) and
LC's benign model is cached in ``--models-dir``/cache, where ``reproduce`` caches it (pass the reproduce
folder's ``models`` to reuse its benign model). Variants that change the seed are digits-only. On npz
data every row also gets the paper's detector (``LayerwiseDetector()``, fitted on the reference split):
the target class's LOI, TPR on the triggered non-target test images and FPR on the benign test images.
The rows go to ``variants_<dataset>_<arch>.*``.

``--variants`` keeps only the variants whose label contains one of the given texts; ``--epochs``
and ``--batch-size`` replace the CPU profile's (30 epochs, batch 128); a row is identified by
attack, variant, epochs and batch size. ``--exact`` keeps only variants whose label equals a text.

Writes ``variants.csv`` and ``variants.md`` to ``--out`` (``variants_<arch>.*`` for other
architectures than ResNet-18). LC's benign model and perturbed images
are cached in ``--cache-dir`` (default ``results/cache``), as ``zoo build`` does.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.attacks import AttackContext, build_attack, dataset_attack_settings
from analysis.data import LabeledImages, load_digits
from analysis.detection import LayerwiseDetector
from analysis.features import predict_classes
from analysis.metrics import false_positive_rate, true_positive_rate
from analysis.pipeline import attacked_model
from analysis.reproduce import load_for_reproduce
from analysis.study import Study
from analysis.training import TrainConfig

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "attacks"
VARIANTS: dict[str, list[tuple[str, dict]]] = {  # attack -> (label, settings); the CPU profile's training
    "wanet": [
        ("paper settings (noise mode 0.2)", {}),
        ("noise mode off", {"noise_rate": 0.0}),
        ("strength s = 1.0", {"strength": 1.0}),
        ("noise mode off, seed 1", {"noise_rate": 0.0, "seed": 1}),
        ("noise mode off, seed 2", {"noise_rate": 0.0, "seed": 2}),
        ("noise mode off, strength s = 1.0", {"noise_rate": 0.0, "strength": 1.0}),
        ("noise mode off, strength s = 1.0, seed 1", {"noise_rate": 0.0, "strength": 1.0, "seed": 1}),
        ("noise mode off, strength s = 1.0, seed 2", {"noise_rate": 0.0, "strength": 1.0, "seed": 2}),
    ],
    "badnets": [
        ("paper settings, seed 0", {}),
        ("paper settings, seed 1", {"seed": 1}),
        ("paper settings, seed 2", {"seed": 2}),
    ],
    "iad": [
        ("paper settings, seed 0", {}),
        ("paper settings, seed 1", {"seed": 1}),
        ("paper settings, seed 2", {"seed": 2}),
    ],
    "lc": [
        ("paper settings (eps 16/255, PGD 20 x 2/255)", {}),
        ("eps 64/255, PGD 60 x 2/255", {"eps": 64 / 255, "pgd_steps": 60}),
        ("eps 128/255, PGD 60 x 4/255", {"eps": 128 / 255, "pgd_step": 4 / 255, "pgd_steps": 60}),
        ("4x4 trigger", {"trigger_size": 4}),
        ("adversarially trained surrogate, eps 16/255", {"surrogate": "adversarial"}),
        ("adversarially trained surrogate, eps 64/255, PGD 60 x 2/255",
         {"surrogate": "adversarial", "eps": 64 / 255, "pgd_steps": 60}),
        ("adversarially trained surrogate, eps 128/255, PGD 60 x 4/255",
         {"surrogate": "adversarial", "eps": 128 / 255, "pgd_step": 4 / 255, "pgd_steps": 60}),
        ("8x8 trigger", {"trigger_size": 8}),
    ],
    "issba": [
        ("residual weight 5 (class default)", {"residual_weight": 5.0}),
        ("residual weight 2", {"residual_weight": 2.0}),
        ("residual weight 1 (digits setting)", {"residual_weight": 1.0}),
    ],
}
FIELDS = ["arch", "attack", "variant", "settings", "epochs", "batch_size", "ma", "asr", "train_seconds",
          "pgd_fooled", "perturbation_only_asr", "psnr", "bit_accuracy", "loi", "tpr", "fpr", "command", "threads",
          "torch"]
NUMBERS = ("ma", "asr", "train_seconds", "pgd_fooled", "perturbation_only_asr", "psnr", "bit_accuracy", "loi",
           "tpr", "fpr")


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier run's CSV, numbers parsed ("" stays ""); rows from before the batch column get 128."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in FIELDS:
            row.setdefault(key, "")
            if key in NUMBERS and row[key] not in ("", None):
                row[key] = float(row[key])
        row["batch_size"] = int(row["batch_size"] or 128)
    return rows


def render(rows: list[dict], arch: str, dataset: str = "digits") -> str:
    """The Markdown table of ``rows``, with the commands (threads, torch) that produced them.

    The detector's columns (LOI, TPR, FPR) appear when some row has them (npz runs)."""
    commands = sorted({(r["command"], str(r["threads"]), r["torch"]) for r in rows})
    detector = any(r["tpr"] != "" for r in rows)
    lines = [f"# Attack variants on {dataset} ({arch}, CPU width, seed 0 unless the variant says otherwise)", "",
             "Commands (one training per row; the time includes attack preparation, e.g. LC's cached benign "
             "model and PGD, and depends on what else ran):", ""]
    lines += [f"- `{command}` ({threads} CPU thread{'' if threads == '1' else 's'}, torch {version}, "
              f"Python {platform.python_version()})"
              for command, threads, version in commands]
    lines += ["", "LC only: *PGD fooled* = perturbed target images the surrogate (benign model) assigns to "
              "another class; "
              "*perturbation only* = non-target test images sent to the target by a poisoned image's "
              "perturbation without the trigger (the victim learned the perturbation as a class-2 feature). "
              "ISSBA only: PSNR of the encoded test images (dB) and the decoder's bit accuracy."
              + (" LOI, TPR, FPR: the paper's detector (`LayerwiseDetector()`, tau 2.5) fitted on the reference "
                 "split: the target class's layer of interest, the share of triggered non-target test images "
                 "flagged, the share of benign test images flagged (%)." if detector else ""), "",
              "| attack | variant | epochs | batch | threads | MA (%) | ASR (%) | train (s) | PGD fooled (%) "
              "| perturbation only (%) | PSNR (dB) | bit accuracy |"
              + (" LOI | TPR (%) | FPR (%) |" if detector else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if detector else "")]
    percent = lambda value: "" if value == "" else f"{value * 100:.1f}"  # noqa: E731
    lines += [f"| {r['attack']} | {r['variant']} | {r['epochs']} | {r['batch_size']} | {r['threads']} | "
              f"{r['ma'] * 100:.2f} | {r['asr'] * 100:.2f} | "
              f"{r['train_seconds']:.0f} | {percent(r['pgd_fooled'])} | {percent(r['perturbation_only_asr'])} | "
              f"{'' if r['psnr'] == '' else format(r['psnr'], '.1f')} | {percent(r['bit_accuracy'])} |"
              + (f" {'' if r['loi'] == '' else int(r['loi'])} | {percent(r['tpr'])} | {percent(r['fpr'])} |"
                 if detector else "")
              for r in rows]
    return "\n".join(lines) + "\n"


def detector_columns(run) -> dict[str, float]:
    """The paper's detector on a trained variant: the target's LOI, TPR on the triggered non-target test
    images and FPR on the benign test images (shares), fitted on the reference split, as Table 3 does."""
    detector = LayerwiseDetector().fit(run.model, run.data.reference)
    found_b, found_p = detector.detect(run.model, run.data.test), detector.detect(run.model, run.poisoned_test)
    return {"loi": detector.loi_[run.attack.target], "tpr": true_positive_rate(found_p.flagged),
            "fpr": false_positive_rate(found_b.flagged)}


def lc_diagnostics(attack, run, data, context) -> dict[str, float]:
    """For a trained LC victim: ``pgd_fooled`` = share of the perturbed images the benign model does
    not predict as the target; ``perturbation_only_asr`` = share of non-target test images predicted
    as the target after adding one poisoned image's perturbation (cycled, no trigger)."""
    idx = torch.as_tensor(attack.perturbed_indices)
    delta = attack.perturbed - data.train.x[idx]
    benign = attack.benign_model(data.train, data.num_classes, context)
    fooled = float(np.mean(predict_classes(benign, LabeledImages(attack.perturbed, data.train.y[idx]))
                           != attack.target))
    others = data.test.of_class_not(attack.target)
    cycled = delta[torch.arange(len(others)) % len(delta)]
    shifted = LabeledImages((others.x + cycled).clamp(0.0, 1.0), others.y.clone())
    return {"pgd_fooled": fooled,
            "perturbation_only_asr": float(np.mean(predict_classes(run.model, shifted) == attack.target))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="digits", choices=["digits", "npz"])
    parser.add_argument("path", nargs="?", default=None, help="npz: the archive")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=["wanet", "lc"])
    parser.add_argument("--arch", default="resnet18", choices=("resnet18", "mobilenetv2"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache-dir", default="results/cache", help="digits: where LC's benign model is cached")
    parser.add_argument("--models-dir", type=Path, default=Path("results/models"),
                        help="npz: where the variants' models are saved (LC's benign model in its cache/)")
    parser.add_argument("--train-subset", type=int, default=None, help="npz: train on this many images (stratified)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs instead of the CPU profile's 30 (rows keep their epochs)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size instead of the CPU profile's (rows keep their batch size)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="TEXT",
                        help="only variants whose label contains one of these texts")
    parser.add_argument("--exact", action="store_true", help="--variants texts must equal the label")
    args = parser.parse_args(argv)
    if args.dataset == "npz" and not args.path:
        parser.error("npz: give the archive's path")
    if args.dataset == "digits" and (args.path or args.train_subset):
        parser.error("path and --train-subset are for npz data")
    torch.set_num_threads(args.threads)
    chosen = [(attack, number, label, settings) for attack in args.only
              for number, (label, settings) in enumerate(VARIANTS[attack])
              if not args.variants or any(text == label if args.exact else text in label for text in args.variants)]
    study = None
    if args.dataset == "npz":
        seeded = [label for _, _, label, settings in chosen if settings.get("seed", 0) != 0]
        if seeded:
            parser.error(f"variants that change the seed are digits-only: {seeded}")
        study = Study(load_for_reproduce("npz", args.path), archs=(args.arch,), models_dir=args.models_dir,
                      zoo_dir=None, progress=False, attacks=tuple(args.only), train_subset=args.train_subset,
                      epochs=args.epochs, batch_size=args.batch_size)
        data = study.data
    else:
        data = load_digits()
    rows = []
    for attack, number, label, settings in chosen:
        if study is not None:
            config = study.config(args.arch)
            # the variant's settings replace the dataset's own, as a digits run's do
            atk_settings = {**dataset_attack_settings(data.name, attack), **settings}
            run = study.model(args.arch, attack, name=f"{data.name}-{args.arch}-{attack}-variant-{number}",
                              **atk_settings)
            atk = run.attack
            cache_dir = args.models_dir / "cache"
        else:
            config = TrainConfig.cpu(args.arch, seed=settings.get("seed", 0))
            if args.epochs is not None:
                config = dataclasses.replace(config, epochs=args.epochs)
            if args.batch_size is not None:
                config = dataclasses.replace(config, batch_size=args.batch_size)
            atk = build_attack(attack, **settings)
            run = attacked_model("digits", args.arch, atk, config=config, checkpoints=None, progress=False,
                                 data=data, cache_dir=args.cache_dir)
            cache_dir = args.cache_dir
        ma = float(np.mean(predict_classes(run.model, data.test) == data.test.y.numpy()))
        asr = float(np.mean(predict_classes(run.model, run.poisoned_test) == atk.target))
        row = {**dict.fromkeys(FIELDS, ""), "arch": args.arch, "attack": attack, "variant": label,
               "settings": settings, "epochs": config.epochs, "batch_size": config.batch_size, "ma": ma,
               "asr": asr, "train_seconds": run.train_seconds}
        if attack == "lc":
            training = study.training_data() if study is not None else data
            context = AttackContext(config=config, arch=args.arch, progress=False, cache_dir=cache_dir)
            row.update(lc_diagnostics(atk, run, training, context))
        if attack == "issba":
            row.update(atk.quality(data.test))
        if study is not None:
            row.update(detector_columns(run))
        rows.append(row)
        print(f"{attack:6s} {label:45s} MA {ma:.2%} ASR {asr:.2%} {run.train_seconds:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if study is not None:
        stem = f"variants_{data.name}_{args.arch}"
    else:
        stem = "variants" if args.arch == "resnet18" else f"variants_{args.arch}"
    command = "python benchmarks/attack_variants.py"
    if study is not None:
        command += f" npz {args.path}" + (f" --train-subset {args.train_subset}" if args.train_subset else "")
    command += f" --only {' '.join(args.only)} --arch {args.arch}"
    if args.epochs is not None:
        command += f" --epochs {args.epochs}"
    if args.batch_size is not None:
        command += f" --batch-size {args.batch_size}"
    if args.variants:
        command += " --variants " + " ".join(f'"{text}"' if " " in text else text for text in args.variants)
        command += " --exact" if args.exact else ""
    for row in rows:
        row.update(command=command, threads=args.threads, torch=torch.__version__)
    # rows of variants not rerun stay, with the command that produced them
    key = lambda row: (row["attack"], row["variant"], str(row["epochs"]), row["batch_size"])  # noqa: E731
    rerun = {key(row) for row in rows}
    kept = [row for row in read_rows(args.out / f"{stem}.csv") if key(row) not in rerun]
    order = {(attack, label): i for i, (attack, label) in
             enumerate((attack, label) for attack, variants in VARIANTS.items() for label, _ in variants)}
    rows = sorted(kept + rows, key=lambda row: (order.get((row["attack"], row["variant"]), len(order)),
                                                int(row["epochs"]), -row["batch_size"]))
    with open(args.out / f"{stem}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (args.out / f"{stem}.md").write_text(render(rows, args.arch, data.name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
