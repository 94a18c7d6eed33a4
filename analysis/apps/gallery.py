"""Fig. 4 (benign images and their poisoned versions), Table 3 (the zoo's MA and ASR), and a model of one's own.

* :class:`AttackGalleryApp`: one evaluation image, its poisoned version and their amplified
  difference, with the per-image and the attack's mean PSNR and the model's predictions.
* :func:`psnr_table`: how visible each attack's trigger is (PSNR of poisoned against benign images).
* :func:`zoo_table`: every model of the checkpoint zoo with its MA and ASR as stored in
  ``checkpoints/manifest.json``, beside the paper's Table 3.
* :class:`ModelCurvesApp`: the layer-wise curves and the detector (as :class:`~analysis.apps.layerwise.ExplorerApp`)
  of any model given as a :class:`~analysis.explore.LayerwiseExplorer`, e.g. one outside the zoo
  (notebook 12).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..checkpoints import DEFAULT_DIR, check_entry, checkpoint_name, read_manifest
from ..detector_inputs import check_tau
from ..explore import TAU_MAX, TAU_MIN, TAU_STEP, LayerwiseExplorer
from ..features import predict_classes
from ..metrics import psnr, trigger_psnr
from ..models import ARCHITECTURES
from ..paper_results import ATTACKS as PAPER_ATTACKS
from ..paper_results import TABLE3
from ..workbench import Workbench
from .base import FIGURE_WIDTH, App, check_model_choice, dropdown, slider
from .layerwise import explorer_figure

#: Display names of the attacks (paper's spelling).
ATTACK_NAMES = {"badnets": "BadNets", "blended": "Blended", "lc": "LC", "wanet": "WaNet", "issba": "ISSBA",
                "iad": "IAD", "adaptive": "adaptive", "clean": "clean"}

#: The paper's benchmark whose Table 3 row a zoo architecture is compared with.
PAPER_BENCHMARK = {"resnet18": "cifar10-resnet18", "mobilenetv2": "gtsrb-mobilenetv2"}

#: Attack settings shown in :func:`zoo_table` (besides target and rate), per attack.
SHOWN_SETTINGS = {"badnets": ("size",), "adaptive": ("beta",), "blended": ("ratio",), "lc": ("eps",),
                  "wanet": ("k", "strength", "noise_rate"), "issba": ("residual_weight",), "iad": ()}


def _db(value: float) -> str:
    return "∞ dB (identical)" if np.isinf(value) else f"{value:.1f} dB"


# ---------------------------------------------------------------------- gallery (Fig. 4)
@dataclass
class _Gallery:
    """One model's non-target evaluation images, their poisoned versions and PSNRs; predictions filled on demand."""

    model: torch.nn.Module
    benign: torch.Tensor  # [N, 3, H, W] in [0, 1]
    poisoned: torch.Tensor  # [N, 3, H, W] in [0, 1]
    labels: np.ndarray  # [N] true classes
    psnr: np.ndarray  # [N] dB
    mean_psnr: float  # dB, trigger_psnr over the set
    target: int
    predictions: dict = field(default_factory=dict)  # index -> (benign prediction, poisoned prediction)

    def predicted(self, index: int) -> tuple[int, int]:
        """The model's classes for benign and poisoned image ``index`` (one forward pass of 2 images, cached)."""
        if index not in self.predictions:
            pair = torch.stack([self.benign[index], self.poisoned[index]])
            self.predictions[index] = tuple(int(c) for c in predict_classes(self.model, pair))
        return self.predictions[index]


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8 for ``go.Image``."""
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class AttackGalleryApp(App):
    """Fig. 4: a benign evaluation image, its poisoned version and their amplified difference.

    Controls: architecture, attack, image (index into the evaluation images *not* of the attack's
    target class, the inputs the attack's poisoned test set is made of), amplification of the
    difference. Panels: the benign image, the poisoned image, ``|poisoned − benign| × amplification``
    clipped to [0, 1]. Readout: the image's PSNR and the attack's mean PSNR over the set
    (:func:`analysis.metrics.trigger_psnr`), the model's predictions for both images and the target.
    Moving the image slider runs the model on two images only.

    Parameters
    ----------
    workbench : gives the attacked models (the zoo's on digits).
    arch, attack : the model shown first.
    index : the image shown first (0-based, within the non-target evaluation images).
    amplification : factor of the difference panel, 1..20.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets", index: int = 0,
                 amplification: int = 10) -> None:
        check_model_choice(workbench, arch, attack)
        if isinstance(amplification, bool) or not isinstance(amplification, (int, np.integer)) \
                or not 1 <= amplification <= 20:
            raise ValueError(f"amplification: expected an integer in 1..20, got {amplification!r}")
        self.workbench = workbench
        self._cache: dict[tuple[str, str], _Gallery] = {}
        n = len(self.gallery(arch, attack).labels)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ValueError(f"index: expected an integer in 0..{n - 1}, got {index!r}")
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture"),
                          "attack": dropdown(list(workbench.attacks), attack, "attack"),
                          "index": slider(int(index), 0, n - 1, 1, "image", integer=True),
                          "amplification": slider(int(amplification), 1, 20, 1, "difference ×", integer=True)})

    def gallery(self, arch: str, attack: str) -> _Gallery:
        """The images, PSNRs and predictions of ``(arch, attack)``, computed on first use and cached."""
        key = (arch, attack)
        if key not in self._cache:
            run = self.workbench.model(arch, attack)
            benign = run.data.test.of_class_not(run.attack.target)
            self._cache[key] = _Gallery(run.model, benign.x, run.poisoned_test.x, benign.y.numpy(),
                                        psnr(benign.x, run.poisoned_test.x),
                                        trigger_psnr(run.attack, run.data.test, run.poisoned_test), run.attack.target)
        return self._cache[key]

    def sync_controls(self, changed: str) -> None:
        if changed in ("arch", "attack"):
            n = len(self.gallery(self.controls["arch"].value, self.controls["attack"].value).labels)
            index = self.controls["index"]
            index.value = min(index.value, n - 1)
            index.max = n - 1

    def draw(self, arch: str, attack: str, index: int, amplification: int) -> tuple[go.Figure, str]:
        g = self.gallery(arch, attack)
        index = min(int(index), len(g.labels) - 1)
        benign, poisoned = g.benign[index], g.poisoned[index]
        difference = ((poisoned - benign).abs() * amplification).clamp(0, 1)
        name = ATTACK_NAMES.get(attack, attack)
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.05, subplot_titles=(
            f"benign (class {g.labels[index]})", f"poisoned by {name}",
            f"|poisoned − benign| × {amplification}"))
        for col, image in enumerate((benign, poisoned, difference), start=1):
            fig.add_trace(go.Image(z=_rgb(image), name=("benign", "poisoned", "difference")[col - 1]), 1, col)
            fig.update_xaxes(title_text="column (pixel)", row=1, col=col)
            fig.update_yaxes(title_text="row (pixel)", row=1, col=col)
        fig.update_layout(title=f"{arch} + {name}: evaluation image {index} of {len(g.labels)} (non-target)",
                          template="plotly_white", width=FIGURE_WIDTH, height=380,
                          margin=dict(t=90, b=60, l=60, r=20))
        on_benign, on_poisoned = g.predicted(index)
        hit = "the backdoor works" if on_poisoned == g.target else "the backdoor misses"
        text = (f"<b>PSNR</b> of this poisoned image: {_db(float(g.psnr[index]))}; mean over the {len(g.labels)} "
                f"poisoned evaluation images: {_db(g.mean_psnr)}<br>"
                f"{arch}'s prediction: benign image → class {on_benign} (true class {g.labels[index]}), "
                f"poisoned image → class {on_poisoned}; attack target: class {g.target} ({hit})")
        return fig, text


def psnr_table(workbench: Workbench, arch: str = "resnet18", attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """How visible each attack's trigger is: PSNR (dB) of its poisoned evaluation images against the benign ones.

    Parameters
    ----------
    workbench : gives the attacked models (their attacks hold the triggers; loaded once and cached).
    arch : whose models (sample-specific triggers, ISSBA and IAD, belong to one model).
    attacks : which attacks (default: the workbench's six, in the paper's order).

    Returns
    -------
    DataFrame indexed by attack with ``images`` (non-target evaluation images),
    ``mean dB`` (:func:`analysis.metrics.trigger_psnr`), ``min dB`` and ``max dB`` (:func:`psnr` per image).
    """
    rows = {}
    for attack in workbench.attacks if attacks is None else attacks:
        if attack not in workbench.attacks:
            raise ValueError(f"attacks: expected names among {list(workbench.attacks)}, got {attack!r}")
        run = workbench.model(arch, attack)
        per_image = psnr(run.data.test.of_class_not(run.attack.target).x, run.poisoned_test.x)
        rows[ATTACK_NAMES.get(attack, attack)] = {
            "images": len(per_image), "mean dB": trigger_psnr(run.attack, run.data.test, run.poisoned_test),
            "min dB": float(per_image.min()), "max dB": float(per_image.max())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("attack")


# ---------------------------------------------------------------------- Table 3
def _settings_text(attack: str, settings: dict | None) -> str:
    if not settings:
        return ""
    parts = [f"target {settings['target']}", f"rate {100 * settings['rate']:g} %"]
    for key in SHOWN_SETTINGS.get(attack, ()):
        if key in settings and settings[key] is not None:
            value = settings[key]
            if key == "eps":  # LC's perturbation budget, in the paper's units of 1/255
                parts.append(f"eps {255 * value:.3g}/255")
            else:
                parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def zoo_table(folder: str | Path = DEFAULT_DIR) -> pd.DataFrame:
    """Every model of the checkpoint zoo with its MA and ASR (%) as its manifest records them, beside Table 3.

    The manifest's numbers were measured on the stored (float16) weights when the zoo was built;
    ``python -m analysis zoo verify`` re-measures them. ``paper MA %`` / ``paper ASR %`` are the paper's
    Table 3 values of the same attack on the benchmark of the same architecture (ResNet-18: CIFAR-10,
    MobileNetV2: GTSRB) for the six main attack models; NaN for the clean models and the variants
    (other poisoning rates: Table 4; adaptive attack: Table 7).

    Returns
    -------
    DataFrame with columns ``name, arch, attack, settings, MA %, ASR %, paper MA %, paper ASR %``, one
    row per manifest entry, ordered by architecture, then clean, the paper's attacks, the variants.
    """
    entries = read_manifest(folder)["entries"]
    order = ["clean", *PAPER_ATTACKS]
    rows = []
    for name, entry in entries.items():
        entry = check_entry(name, entry, folder)  # a malformed entry is named, not a KeyError deep in a table
        config, metrics = entry.get("config", {}), entry.get("metrics", {})
        arch, attack = config.get("arch"), config.get("attack") or "clean"
        paper = TABLE3.get(PAPER_BENCHMARK.get(arch, ""), {}).get(attack) \
            if name == checkpoint_name(str(config.get("dataset")), str(arch), attack) else None
        rows.append({
            "name": name, "arch": arch, "attack": ATTACK_NAMES.get(attack, attack),
            "settings": _settings_text(attack, config.get("attack_settings")),
            "MA %": 100 * metrics["ma"] if "ma" in metrics else np.nan,
            "ASR %": 100 * metrics["asr"] if "asr" in metrics else np.nan,
            "paper MA %": paper[0] if paper else np.nan, "paper ASR %": paper[1] if paper else np.nan,
            "_sort": (list(ARCHITECTURES).index(arch) if arch in ARCHITECTURES else len(ARCHITECTURES),
                      order.index(attack) if attack in order else len(order), name),
        })
    if not rows:
        raise ValueError(f"folder: no checkpoint manifest with entries in {Path(folder)}")
    rows.sort(key=lambda row: row.pop("_sort"))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- a model of one's own (notebook 12)
class ModelCurvesApp(App):
    """The curves and the detector of :class:`~analysis.apps.layerwise.ExplorerApp` for any model's explorer.

    ``ExplorerApp`` picks zoo models from a :class:`Workbench`; this app shows one
    :class:`~analysis.explore.LayerwiseExplorer` built on any model (layers named by module path).
    Controls: class (default the target), layer (default the class's LOI), tau. Panels: mean ± std
    cosine similarity per layer to the class's benign centroids (LOI-2..LOI shaded, LOI circled,
    selected layer dotted); the similarity histograms at the selected layer; the detector's scores
    with the threshold ``mu - tau sigma``.

    Parameters
    ----------
    explorer : the precomputed explorer of the model.
    label : the model's name in titles (e.g. ``"SmallVGG + BadNets"``).
    tau : the threshold shown first (standard deviations).
    """

    def __init__(self, explorer: LayerwiseExplorer, label: str = "model", tau: float = 2.5) -> None:
        if not isinstance(explorer, LayerwiseExplorer):
            raise TypeError(f"explorer: expected a LayerwiseExplorer, got {type(explorer).__name__}")
        check_tau(tau, low=TAU_MIN, high=TAU_MAX)
        self.explorer, self.label = explorer, str(label)
        target = explorer.target
        super().__init__({"class_": dropdown(explorer.classes, target, "class", "140px"),
                          "layer": slider(explorer.detector.loi_[target], 1, explorer.n_layers, 1, "layer",
                                          integer=True),
                          "tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")})

    def sync_controls(self, changed: str) -> None:
        if changed == "class_":
            self.controls["layer"].value = self.explorer.detector.loi_[self.controls["class_"].value]

    def draw(self, class_: int, layer: int, tau: float) -> tuple[go.Figure, str]:
        return explorer_figure(self.explorer, class_, layer, tau, self.label, module_ticks=True)


__all__ = ["ATTACK_NAMES", "AttackGalleryApp", "ModelCurvesApp", "psnr_table", "zoo_table"]
