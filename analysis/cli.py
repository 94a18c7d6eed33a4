"""Command line: ``python -m analysis demo``, ``zoo list|build|verify``, ``reproduce``, ``classroom`` and ``offline-html``.

A bad argument or input (a value out of range, a missing or malformed file, an ``--out`` that cannot be
written, an unknown attack) ends the command with one line on stderr naming it, and exit status 2.
Set the environment variable ``LAYERWISE_DEBUG=1`` to get the full traceback instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .paths import DEFAULT_CHECKPOINTS as DEFAULT_DIR
from .experiment_registry import EXPERIMENTS
from .paper_results import ADAPTIVE_BETAS

__all__ = ["build_parser", "main"]

DEBUG_VARIABLE = "LAYERWISE_DEBUG"
_EPILOG = (f"A bad argument or input file ends the command with a one-line error (exit status 2); "
           f"{DEBUG_VARIABLE}=1 shows the full traceback instead.")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``PROG: error: --option: expected ..., got ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message.removeprefix('argument ')}\n")


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (and <= ``maximum`` when given)."""
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _finite_number_at_least(minimum: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number >= ``minimum`` (``nan`` and ``inf`` refused)."""
    expected = f"a finite number >= {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


def _writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it, before any work starts."""
    folder = Path(folder)
    expected = f"{option}: expected a folder that can be created and written to, got {folder}"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{expected}, which is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{expected} ({error.strerror or error})") from None
    return folder


def _demo(args: argparse.Namespace) -> int:
    if Path(args.out).is_dir():
        raise ValueError(f"--out: expected the HTML report's file path, got the folder {args.out}")
    _writable_folder(Path(args.out).parent)  # before training: a bad --out must not cost a run
    import torch

    from .devices import pick_device

    if args.device is not None:
        pick_device(args.device, "--device")  # cuda without a GPU: one line now, not a traceback after loading
    from .detection import LayerwiseDetector
    from .explore import LayerwiseExplorer
    from .pipeline import attacked_model
    from .plotting import plot_score_distribution, write_html_report
    from .training import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    checkpoints = None if args.no_checkpoints else Path(args.checkpoints)
    config = TrainConfig.cpu(args.arch, seed=args.seed)
    config.epochs = args.epochs
    run = attacked_model(
        "digits", args.arch, "badnets", config=config, checkpoints=checkpoints, retrain=args.retrain,
        save=args.save_checkpoint, device=args.device, progress=not args.no_progress,
    )
    source = f"loaded from {run.loaded_from}" if run.loaded_from else f"trained in {run.train_seconds:.0f} s"
    target = run.attack.target
    # The same explorer the notebooks and apps read (analysis.workbench): one pass over the evaluation inputs.
    det = LayerwiseDetector(tau=args.tau).fit(run.model, run.data.reference)
    explorer = LayerwiseExplorer(run.model, det, run.data.test, run.poisoned_test, target=target)
    numbers = explorer.summary(args.tau)
    pct = {key: 100 * numbers[key] for key in ("ma", "asr", "tpr", "fpr")}
    pct["auroc"] = 100 * explorer.roc()["auroc"]
    loi = numbers["loi"]
    print(f"digits + {args.arch} + BadNets (target {target}, rate {run.attack.rate:.0%}): model {source}")
    print(f"  reference / evaluation images: {len(run.data.reference)} / {len(run.data.test)} benign, "
          f"{len(run.poisoned_test)} poisoned")
    print(f"  MA  {pct['ma']:6.2f} %   ASR {pct['asr']:6.2f} %")
    print(f"  LOI of target class {target}: layer {loi} of {det.n_layers_} "
          f"({det.layer_names_[loi - 1]}); scored layers {numbers['score_layers']}")
    print(f"  detector at tau = {args.tau}:  TPR {pct['tpr']:6.2f} %   FPR {pct['fpr']:6.2f} %   AUROC {pct['auroc']:6.2f} %")
    sweep = explorer.threshold_sweep((1.5, 2.0, 2.5, 3.0, 3.5))  # Fig. 5's compute, as the app and fig5_threshold
    print("  TPR/FPR % over tau (Fig. 5): " + ", ".join(
        f"tau {row.tau}: {row.TPR:.1f}/{row.FPR:.1f}" for row in sweep.itertuples()))

    # as in the paper's Sec. 3: the benign and poisoned evaluation inputs the model classifies as the target
    scored = numbers["score_layers"]
    curves = explorer.curve_figure(target)
    curves.update_layout(title=f"Layer-wise cosine similarity to class {target}'s benign centroids")
    figures = [
        curves,
        plot_score_distribution(*explorer.score_distribution(target), explorer.threshold(target, args.tau),
                                f"Summed similarity at layers {scored} (inputs predicted as {target})", "score"),
    ]
    # the report names the checkpoint, not its absolute path: the file can be shared or moved
    shown = f"checkpoint {Path(run.loaded_from).name}" if run.loaded_from else source
    summary = {"model": shown, "MA %": f"{pct['ma']:.2f}", "ASR %": f"{pct['asr']:.2f}",
               f"LOI (class {target})": loi, "tau": args.tau, "TPR %": f"{pct['tpr']:.2f}",
               "FPR %": f"{pct['fpr']:.2f}", "AUROC %": f"{pct['auroc']:.2f}"}
    paper_name, paper = _paper_badnets(args.arch)
    intro = (f"A {args.arch} trained on the digits dataset (1,797 scikit-learn images upsampled to 32x32) with the "
             f"BadNets backdoor: {run.attack.rate:.0%} of the training images carry a small white square and are "
             f"relabelled as class {target}. The layer-wise detector (Jebreel, Domingo-Ferrer, Li) was fitted on "
             f"{len(run.data.reference)} benign reference images and judged {len(run.data.test)} benign and "
             f"{len(run.poisoned_test)} triggered evaluation images. The paper's column gives its numbers for the "
             f"same attack on {paper_name}: another dataset and a larger model, so expect the same picture, not "
             f"the same digits.")
    captions = [
        f"Each curve is the mean (error bars: one standard deviation) over inputs that the model classifies as class "
        f"{target}, of their cosine similarity to class {target}'s benign centroid at each layer: green for benign "
        f"evaluation images of that class, red for triggered images of other classes. The circle marks the layer of "
        f"interest (LOI {loi}), found from the benign reference images alone; the shaded band marks the layers "
        f"the detector sums, {scored}. Where the red curve falls below the green one, poisoned inputs reach the "
        f"target class by another route than benign ones: that gap is what the detector reads.",
        f"The detector's score of each input classified as {target}: its cosine similarities to the class's benign "
        f"centroids summed over layers {scored}. The dashed line is the threshold mu - tau*sigma (tau = {args.tau}) "
        f"from the benign reference scores; inputs to its left are flagged as poisoned. The share of red mass to "
        f"the left is the TPR, the share of green mass the FPR (of these inputs).",
    ]
    path = write_html_report(args.out, "Layer-wise backdoor analysis: digits + BadNets", summary, figures,
                             paper=paper, paper_name=f"paper ({paper_name})", captions=captions, intro=intro)
    print(f"  report: {path}   ({time.perf_counter() - started:.0f} s in all)")
    return 0


def _paper_badnets(arch: str) -> tuple[str, dict[str, str]]:
    """The paper's BadNets numbers (Tables 1/2 and 3) for the dataset it used with ``arch``."""
    from . import paper_results as paper

    name, key, table = (("CIFAR-10, ResNet-18", "cifar10-resnet18", paper.TABLE1_CIFAR10) if arch == "resnet18"
                        else ("GTSRB, MobileNetV2", "gtsrb-mobilenetv2", paper.TABLE2_GTSRB))
    ma, asr = paper.TABLE3[key]["badnets"]
    tpr, fpr = table["layerwise"]["badnets"]
    return name, {"MA %": f"{ma:.2f}", "ASR %": f"{asr:.2f}", "tau": "2.5", "TPR %": f"{tpr:.2f}",
                  "FPR %": f"{fpr:.2f}"}


def _zoo(args: argparse.Namespace) -> int:
    import torch

    from . import zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.checkpoints)
    if args.zoo_command == "list":
        present = zoo.read_manifest(folder)["entries"]
        total = 0.0
        for entry in zoo.zoo_entries():
            recorded = present.get(entry.name)
            seconds = recorded.get("train_seconds") if isinstance(recorded, dict) else None
            seconds = seconds if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
            total += seconds
            status = f"present  trained in {seconds:6.0f} s" if entry.name in present else "missing"
            print(f"{entry.name:40s} {status}")
        print(f"training time recorded in the manifest: {total / 60:.0f} min in all")
        return 0
    if args.zoo_command == "build":
        started = time.perf_counter()
        built = zoo.build(args.only, folder, progress=not args.no_progress, cache_dir=args.cache_dir)
        print(f"built {len(built)} checkpoint(s) in {time.perf_counter() - started:.0f} s: {', '.join(built)}")
        return 0
    results = zoo.verify(folder, tolerance=args.tolerance)
    labels = {"ok": "ok        ", "failed": "FAIL      ", "unverified": "UNVERIFIED"}
    for result in results:
        print(f"{labels[result.status]} {result.name}: {result.message}")
    if not results:
        print(f"no checkpoints listed in {folder / 'manifest.json'}")
    unverified = sum(result.status == "unverified" for result in results)
    if unverified:
        print(f"{unverified} entr{'y' if unverified == 1 else 'ies'} could not be compared with the manifest "
              f"(UNVERIFIED: not a pass)")
    return 0 if results and all(r.ok for r in results) else 1


def _budget(value: int | None) -> int | None | str:
    """``--max-eval``/``--defense-samples``: absent = the profile's budget, 0 = none (all inputs, paper samples)."""
    return "profile" if value is None else (value or None)


def _reproduce(args: argparse.Namespace) -> int:
    import torch

    from .reproduce import load_for_reproduce, reproduce

    if args.out:
        _writable_folder(args.out)  # before loading or training anything
    if args.backend == "ray":
        from .backends import require_ray

        require_ray("--backend")  # before loading data: Ray missing is a one-line error naming the install
    else:
        for option, value in (("--address", args.address), ("--gpus-per-task", args.gpus_per_task or None)):
            if value is not None:
                raise ValueError(f"{option}: only used with --backend ray, got {option} {value} with --backend local")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_for_reproduce(args.dataset, args.path)
    out = args.out or str(_writable_folder(f"results/{data.name}-{args.profile}"))
    started = time.perf_counter()
    report = reproduce(data, out, profile=args.profile, only=args.only, archs=args.archs, runs=args.runs,
                       progress=not args.no_progress, train_subset=args.train_subset, epochs=args.epochs,
                       batch_size=args.batch_size, attacks=args.attacks,
                       command="python -m analysis reproduce " + " ".join(sys.argv[2:]),
                       max_eval=_budget(args.max_eval), defense_samples=_budget(args.defense_samples),
                       backend=args.backend, address=args.address, gpus_per_task=args.gpus_per_task,
                       betas=args.betas, redo=args.redo)
    print(f"report: {report}   ({time.perf_counter() - started:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis", description=__doc__.split("\n\n")[0], epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="digits + BadNets: train or load, detect, report", epilog=_EPILOG)
    demo.add_argument("--arch", choices=("resnet18", "mobilenetv2"), default="resnet18")
    demo.add_argument("--epochs", type=_int_at_least(1), default=30, help="training epochs (cpu profile: 30); a checkpoint trained with other settings is "
                      "refused: add --retrain or --no-checkpoints")
    demo.add_argument("--seed", type=_int_at_least(0), default=0)
    demo.add_argument("--tau", type=_finite_number_at_least(0.0), default=2.5,
                      help="detection threshold in standard deviations")
    demo.add_argument("--checkpoints", default=str(DEFAULT_DIR), help="folder with manifest.json")
    demo.add_argument("--no-checkpoints", action="store_true", help="never load a checkpoint: always train")
    demo.add_argument("--retrain", action="store_true", help="train even when a checkpoint exists")
    demo.add_argument("--save-checkpoint", action="store_true", help="write the trained model to --checkpoints")
    demo.add_argument("--out", default="reports/demo.html", help="HTML report path")
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available); one this "
                      "machine lacks is refused before any work")
    demo.add_argument("--threads", type=_int_at_least(0), default=0, help="CPU threads for torch (0 = torch's default)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    zoo = sub.add_parser("zoo", help="list, build or verify the checkpoint zoo", epilog=_EPILOG)
    zoo.add_argument("zoo_command", choices=("list", "build", "verify"))
    zoo.add_argument("--only", nargs="+", default=None, metavar="NAME", help="zoo entries to build")
    zoo.add_argument("--checkpoints", default=str(DEFAULT_DIR))
    zoo.add_argument("--tolerance", type=_finite_number_at_least(0.0), default=0.005,
                     help="allowed MA/ASR difference (fraction)")
    zoo.add_argument("--cache-dir", default="results/cache",
                     help="where attack preparations (ISSBA encoder, LC perturbations, ...) are cached")
    zoo.add_argument("--threads", type=_int_at_least(0), default=0, help="CPU threads for torch (0 = torch's default)")
    zoo.add_argument("--no-progress", action="store_true")
    zoo.set_defaults(func=_zoo)

    rep = sub.add_parser("reproduce", help="the paper's tables and figures: CSV, Markdown and HTML", epilog=_EPILOG)
    rep.add_argument("dataset", nargs="?", default="digits", choices=("digits", "npz", "cifar10", "gtsrb"))
    rep.add_argument("path", nargs="?", default=None, help="npz: the archive; cifar10/gtsrb: download folder")
    rep.add_argument("--profile", choices=("cpu", "paper"), default="cpu",
                     help="training budget: cpu (30 epochs, one-cycle) or paper (200 epochs, lr steps at 100/150)")
    # the names come from the one registry (analysis.experiment_registry, which imports no torch: --help stays
    # cheap); reproduce() checks them and refuses an unknown one with the list
    rep.add_argument("--only", nargs="+", default=None, metavar="EXPERIMENT",
                     help=f"experiments to run (default: all: {' '.join(EXPERIMENTS)})")
    rep.add_argument("--archs", nargs="+", choices=("resnet18", "mobilenetv2"), default=["resnet18", "mobilenetv2"])
    rep.add_argument("--runs", type=_int_at_least(1), default=5, help="reference redraws per detection cell")
    rep.add_argument("--attacks", nargs="+", default=None, help="subset of attacks (default: all available)")
    rep.add_argument("--train-subset", type=_int_at_least(1), default=None,
                     help="train on this many images (stratified)")
    rep.add_argument("--epochs", type=_int_at_least(1), default=None, help="override the profile's epochs")
    rep.add_argument("--batch-size", type=_int_at_least(1), default=None,
                     help="override the profile's batch size (128)")
    rep.add_argument("--max-eval", type=_int_at_least(0), default=None,
                     help="Tables 1/2: at most this many benign and this many poisoned inputs per run "
                          "(default: the profile's, cpu 50; 0 = all)")
    rep.add_argument("--defense-samples", type=_int_at_least(0), default=None,
                     help="Tables 1/2: RS neighbours and STRIP blends per input "
                          "(default: the profile's, cpu 20; 0 = the paper's 100)")
    rep.add_argument("--betas", nargs="+", type=float, default=None, metavar="BETA",
                     help="Table 7: the adaptive attack's betas, each in [0, 1) (default: "
                          f"{' '.join(f'{b:g}' for b in ADAPTIVE_BETAS)})")
    rep.add_argument("--redo", nargs="+", default=[], metavar="NAME",
                     help="run these experiments again although the folder has them done (the others resume)")
    rep.add_argument("--out", default=None, help="results folder (default results/DATASET-PROFILE)")
    rep.add_argument("--threads", type=_int_at_least(0), default=0,
                     help="CPU threads for torch (0 = torch's default); with --backend ray every task uses (and "
                          "reserves) as many")
    rep.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="where experiments run: this process (local) or one Ray task per model to train and per "
                          "experiment (ray; pip install -e \".[cluster]\"; see docs/cluster.md)")
    rep.add_argument("--address", default=None, metavar="ADDR",
                     help="--backend ray: the Ray cluster (auto, HOST:6379 or ray://HOST:10001; default: a local Ray "
                          "for this run); --out must be on a filesystem every node shares")
    rep.add_argument("--gpus-per-task", type=_finite_number_at_least(0.0), default=0.0, metavar="N",
                     help="--backend ray: GPUs each task reserves (default 0: CPU tasks)")
    rep.add_argument("--no-progress", action="store_true")
    rep.set_defaults(func=_reproduce)

    classroom = sub.add_parser("classroom", help="serve a notebook as a Voila app (no code, live widgets, offline)",
                               epilog=_EPILOG)
    classroom.add_argument("notebook", nargs="?", default="notebooks/00_tour.ipynb")
    classroom.add_argument("--port", type=_int_at_least(1, 65535), default=8866)
    classroom.add_argument("--ip", default="127.0.0.1", help="0.0.0.0 to serve a classroom's network")
    classroom.add_argument("--cull-idle", type=_int_at_least(0), default=600,
                           help="seconds before an idle visitor's kernel is shut down (0 = never)")
    classroom.set_defaults(func=_classroom)

    offline = sub.add_parser("offline-html", epilog=_EPILOG,
                             help="make HTML figures under FOLDER load one FOLDER/plotly.min.js "
                                  "(CDN links and per-folder copies)")
    offline.add_argument("folder", help="folder searched recursively for *.html (e.g. docs/results)")
    offline.set_defaults(func=_offline_html)
    return parser


def _classroom(args: argparse.Namespace) -> int:
    from .classroom import serve, voila_command, voila_environment

    command = voila_command(args.notebook, args.port, args.ip, args.cull_idle)
    print(f"serving {args.notebook} at http://{args.ip}:{args.port}/ (Ctrl+C stops)", flush=True)
    return serve(command, env=voila_environment())


def _offline_html(args: argparse.Namespace) -> int:
    from .plotting import make_html_offline

    pages = make_html_offline(args.folder)
    print(f"{len(pages)} page(s) now load plotly.js from {Path(args.folder) / 'plotly.min.js'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a bad argument or input prints one line to stderr and returns 2 (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    # what our own checks raise, and the operating system's answer to a path of the wrong kind or rights
    except (ValueError, TypeError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) is quoted
        print(f"{parser.prog} {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
