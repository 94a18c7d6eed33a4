"""PCA pictures of one layer's features (paper, Fig. 1) and how well they separate benign from poisoned inputs.

The paper's Fig. 1 projects the features of the layer before the fully connected layers (the
*latent* layer, ``model.latent_layer``) onto two principal components: benign inputs of the
attack's target class (green) and poisoned inputs (red) overlap there, which is why defenses that
read latent features struggle. :class:`Projector` draws the same picture at any of the paper's
layers ``1..L``, so the latent view can be set beside the target class's critical layers
(LOI-2..LOI), where the two groups come apart.

What is projected (:meth:`Projector.project`):

* The PCA (two components) is fitted, by default (``fit="reference"``), on the benign *reference*
  features of every class (the defender's split, ``run.data.reference``), so its axes do not
  depend on the inputs judged: they follow the largest variance among the classes. With
  ``fit="inputs"`` it is fitted on the projected inputs themselves (benign and poisoned together,
  as a defender that clusters the incoming inputs, e.g. AC, would): its axes then follow the
  largest variance among those inputs, which is the backdoor's where the two groups differ most.
* Benign: the benign evaluation images that the model classifies as the target class.
* Poisoned: the triggered non-target evaluation images (``run.poisoned_test``) that the model
  classifies as the target class, i.e. those the backdoor captured.

Both selections follow the paper's Sec. 3 and :meth:`analysis.explore.LayerwiseExplorer.curves`.

Separability (:func:`separability`) is one number per picture: the AUROC of the best straight
line through the 2-D picture (Fisher's linear discriminant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn as nn

from .data import LabeledImages
from .devices import evaluation_mode, model_device, model_dtype
from .features import extract_features, paper_layers, predict_classes
from .metrics import auroc
from .validation import check_index, check_model_output
from .plotting import BENIGN_COLOR, POISONED_COLOR

if TYPE_CHECKING:  # experiments imports this module for fig1_pca's registration
    from .study import Study

#: The attacks of the paper's Fig. 1.
FIG1_ATTACKS = ("badnets", "blended")
#: Fit sets with at most this many rows or columns get sklearn's full SVD; larger ones ARPACK (both deterministic).
SMALL_FOR_FULL_SVD = 64
#: What the PCA can be fitted on: the reference features of all classes, or the projected inputs themselves.
FITS = ("reference", "inputs")


def separability(benign: np.ndarray, poisoned: np.ndarray) -> float:
    """AUROC (fraction in [0, 1]) of Fisher's linear discriminant between two groups of points.

    The points are projected on ``w = S⁻¹ (m_p − m_b)``, where ``m_b``, ``m_p`` are the groups'
    means and ``S`` their pooled within-group covariance; the AUROC of that 1-D score (poisoned =
    positive, :func:`analysis.metrics.auroc`) is the share of (benign, poisoned) pairs that the line
    orders correctly: 1.0 = a straight line separates the groups perfectly, 0.5 = no better than
    chance. For two Gaussian groups with a common covariance whose means lie ``d`` (Mahalanobis)
    apart it tends to ``Φ(d / √2)``; e.g. 1-D groups one standard deviation apart give 0.76.

    The direction is fitted on the same points it scores, so with few points it is optimistic.

    Parameters
    ----------
    benign : ``[Nb, d]`` points of the benign group (``[Nb]`` is read as ``[Nb, 1]``).
    poisoned : ``[Np, d]`` points of the poisoned group.

    Returns
    -------
    float, NaN when a group has fewer than 2 points.
    """
    groups = []
    for name, values in (("benign", benign), ("poisoned", poisoned)):
        array = np.asarray(values, dtype=np.float64)
        array = array[:, None] if array.ndim == 1 else array
        if array.ndim != 2:
            raise ValueError(f"{name}: expected points of shape [N, d], got shape {np.shape(values)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: contains NaN or inf")
        groups.append(array)
    benign, poisoned = groups
    if benign.shape[1] != poisoned.shape[1]:
        raise ValueError(f"benign and poisoned differ in dimension: {benign.shape[1]} vs {poisoned.shape[1]}")
    if len(benign) < 2 or len(poisoned) < 2:
        return float("nan")
    scatter = (np.cov(benign, rowvar=False, ddof=1) * (len(benign) - 1)
               + np.cov(poisoned, rowvar=False, ddof=1) * (len(poisoned) - 1))
    pooled = np.atleast_2d(scatter / (len(benign) + len(poisoned) - 2))
    ridge = 1e-9 * max(float(np.trace(pooled)) / len(pooled), 1e-12)  # keeps S invertible for flat groups
    direction = np.linalg.solve(pooled + ridge * np.eye(len(pooled)), poisoned.mean(0) - benign.mean(0))
    return auroc(benign @ direction, poisoned @ direction)


@dataclass(frozen=True)
class Projection:
    """Two principal components of one layer's features.

    Attributes
    ----------
    benign : ``[Nb, 2]`` coordinates of the benign evaluation inputs classified as the target.
    poisoned : ``[Np, 2]`` coordinates of the poisoned inputs classified as the target.
    explained_variance : ``[2]`` share (fraction) of the variance of the features the PCA was fitted on
        (see ``fit``) along PC1, PC2.
    layer : the paper's layer index (1-indexed), or None when ``module`` is not one of the paper's
        layers (ResNet-18's latent ``pool``, the average of layer L-1's output).
    module : the module path whose (flattened) output was projected.
    fit : what the PCA was fitted on, one of :data:`FITS`.
    n_features : the layer's dimension ``D`` (features per input before the projection).
    separability : :func:`separability` of ``benign`` vs ``poisoned`` in the 2-D picture (fraction).
    """

    benign: np.ndarray
    poisoned: np.ndarray
    explained_variance: np.ndarray
    layer: int | None
    module: str
    fit: str
    n_features: int
    separability: float

    @property
    def n_benign(self) -> int:
        return len(self.benign)

    @property
    def n_poisoned(self) -> int:
        return len(self.poisoned)

    def axis_title(self, component: int) -> str:
        """``"PC1 (42 % of variance)"`` for ``component`` 1 or 2."""
        return f"PC{component} ({100 * self.explained_variance[component - 1]:.0f} % of variance)"


class Projector:
    """PCA projections of one attacked model's layers, computed one layer at a time and cached.

    Parameters
    ----------
    model : the attacked classifier, with ``paper_layers`` (and ``latent_layer`` for ``"latent"``).
    reference : benign reference images of every class: the PCA is fitted on their features.
    benign_test : benign evaluation images; those classified as ``target`` are projected.
    poisoned_test : triggered non-target evaluation images; those classified as ``target`` are projected.
    target : the attack's target class.
    benign_predicted, poisoned_predicted : the model's predicted classes ``[N]`` of ``benign_test`` and
        ``poisoned_test`` when already known (e.g. from a :class:`~analysis.explore.LayerwiseExplorer`);
        None: computed here with one forward pass.
    seed : the PCA's ``random_state`` (ARPACK's start vector; results do not depend on it beyond rounding).
    batch_size : images per forward pass.

    A layer's features (``[N, D]``, up to 16384 floats per input in ResNet-18's early layers) live
    only while its PCAs are computed; the cache keeps the 2-D results per (module path, fit), so
    returning to a layer costs nothing. One projector belongs to one model: keep one per model to
    cache per (model, layer).
    """

    def __init__(self, model: nn.Module, reference: LabeledImages, benign_test: LabeledImages,
                 poisoned_test: LabeledImages, target: int, *, benign_predicted: np.ndarray | None = None,
                 poisoned_predicted: np.ndarray | None = None, seed: int = 0, batch_size: int = 256) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        for name, data in (("reference", reference), ("benign_test", benign_test), ("poisoned_test", poisoned_test)):
            if not isinstance(data, LabeledImages):
                raise TypeError(f"{name}: expected LabeledImages, got {type(data).__name__}")
        if len(reference) < 2:
            raise ValueError(f"reference: expected at least 2 images to fit a 2-component PCA, got {len(reference)}")
        self.model, self.reference, self.target = model, reference, self._check_target(model, reference, target)
        self.layers: list[str] = paper_layers(model)
        self.n_layers = len(self.layers)
        self.latent_layer: str | None = getattr(model, "latent_layer", None)
        self.seed, self.batch_size = seed, batch_size
        self.n_benign_test, self.n_poisoned_test = len(benign_test), len(poisoned_test)
        benign_predicted = self._predicted(benign_predicted, benign_test, "benign_predicted")
        poisoned_predicted = self._predicted(poisoned_predicted, poisoned_test, "poisoned_predicted")
        self.benign = benign_test.subset(np.flatnonzero(benign_predicted == self.target))
        self.poisoned = poisoned_test.subset(np.flatnonzero(poisoned_predicted == self.target))
        self._cache: dict[str, Projection] = {}

    @staticmethod
    def _check_target(model: nn.Module, reference: LabeledImages, target: int) -> int:
        """``target`` as an int class of ``model`` (0..classes-1, read from one forward pass); else a clear error.

        A class the model does not have (12 for a 10-class model, 1.7, a label from another dataset) would
        select no input and draw an empty picture without a word.
        """
        with torch.no_grad(), evaluation_mode(model):
            logits = check_model_output(model(reference.x[:1].to(model_device(model), model_dtype(model))))
        classes = logits.shape[1]
        try:
            return check_index(target, "target", 0, classes - 1)
        except ValueError as error:
            raise ValueError(f"{error}: the model has {classes} classes (0..{classes - 1}), so no input could be "
                             f"classified as target {target!r} and the projection would be empty") from None
        except TypeError as error:
            raise TypeError(f"{error} (a class of the model: 0..{classes - 1})") from None

    def _predicted(self, predicted: np.ndarray | None, data: LabeledImages, name: str) -> np.ndarray:
        if predicted is None:
            return predict_classes(self.model, data, self.batch_size) if len(data) else np.empty(0, np.int64)
        predicted = np.asarray(predicted)
        if predicted.shape != (len(data),):
            raise ValueError(f"{name}: expected one predicted class per image, shape ({len(data)},), "
                             f"got shape {predicted.shape}")
        return predicted

    def module(self, layer: int | str) -> tuple[int | None, str]:
        """``(paper layer index or None, module path)`` of ``layer``: an integer ``1..L`` or ``"latent"``."""
        if layer == "latent":
            if not self.latent_layer:
                raise ValueError(f"layer: {type(self.model).__name__} has no 'latent_layer'; pass a layer 1..{self.n_layers}")
            index = self.layers.index(self.latent_layer) + 1 if self.latent_layer in self.layers else None
            return index, self.latent_layer
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= self.n_layers:
            raise ValueError(f"layer: expected an integer in 1..{self.n_layers} or 'latent', got {layer!r}")
        return int(layer), self.layers[int(layer) - 1]

    def project(self, layer: int | str = "latent", fit: str = "reference") -> Projection:
        """The :class:`Projection` of ``layer`` (``1..L`` in the paper's order, or ``"latent"``), cached.

        ``fit`` (one of :data:`FITS`) says what the PCA is fitted on. The layer's features are
        extracted once for both fits, then dropped.
        """
        if fit not in FITS:
            raise ValueError(f"fit: expected one of {FITS}, got {fit!r}")
        index, module = self.module(layer)
        if (module, fit) not in self._cache:
            images = torch.cat([self.reference.x, self.benign.x, self.poisoned.x])
            (features,), _ = extract_features(self.model, images, [module], self.batch_size)
            if features.shape[1] < 2:
                raise ValueError(f"layer: {module!r} has {features.shape[1]} feature(s), a 2-D PCA needs at least 2")
            features = features.astype(np.float64)
            n_ref, n_benign = len(self.reference), len(self.benign)
            inputs = features[n_ref:]
            for name, fit_set in (("reference", features[:n_ref]), ("inputs", inputs)):
                self._cache[(module, name)] = self._fit(fit_set, inputs, n_benign, index, module, name)
        return self._cache[(module, fit)]

    def _fit(self, fit_set: np.ndarray, inputs: np.ndarray, n_benign: int, index: int | None, module: str,
             fit: str) -> Projection:
        """PCA fitted on ``fit_set`` ``[M, D]``, applied to ``inputs`` ``[Nb + Np, D]`` (benign first)."""
        from sklearn.decomposition import PCA

        if len(fit_set) < 2:  # "inputs" with fewer than 2 inputs classified as the target
            nan = np.full(2, np.nan)
            return Projection(np.full((n_benign, 2), np.nan), np.full((len(inputs) - n_benign, 2), np.nan), nan,
                              index, module, fit, int(inputs.shape[1]), float("nan"))
        # ARPACK (seeded start vector: deterministic) finds the two leading components of a [M, D] matrix in a
        # fraction of a second where a full LAPACK SVD of 180 x 16384 takes over 10 s on 2 cores; tiny matrices,
        # where ARPACK cannot run (it needs min(M, D) > 2), get the full SVD.
        solver = "full" if min(fit_set.shape) <= SMALL_FOR_FULL_SVD else "arpack"
        pca = PCA(n_components=2, svd_solver=solver, random_state=self.seed).fit(fit_set)
        points = pca.transform(inputs) if len(inputs) else np.empty((0, 2))
        benign, poisoned = points[:n_benign], points[n_benign:]
        return Projection(benign, poisoned, pca.explained_variance_ratio_.copy(), index, module, fit,
                          int(inputs.shape[1]), separability(benign, poisoned))


def add_projection(fig: go.Figure, projection: Projection, row: int, col: int, *, showlegend: bool = True,
                   target: int | None = None) -> go.Figure:
    """Draw ``projection`` into subplot (``row``, ``col``) of ``fig``: benign green, poisoned red, PCs on the axes."""
    benign_name = "benign" if target is None else f"benign, classified {target}"
    poisoned_name = "poisoned" if target is None else f"poisoned, classified {target}"
    for name, points, color in ((benign_name, projection.benign, BENIGN_COLOR),
                                (poisoned_name, projection.poisoned, POISONED_COLOR)):
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=name,
                                 legendgroup=name, showlegend=showlegend,
                                 marker=dict(color=color, size=6, opacity=0.6)), row=row, col=col)
    fig.update_xaxes(title_text=projection.axis_title(1), row=row, col=col)
    fig.update_yaxes(title_text=projection.axis_title(2), row=row, col=col)
    return fig


def layer_label(projection: Projection, loi: int | None = None) -> str:
    """``"layer 10 (fc, LOI)"``, or ``"latent layer (pool)"`` for a module outside the paper's layers."""
    if projection.layer is None:
        return f"latent layer ({projection.module})"
    tag = ", LOI" if loi is not None and projection.layer == loi else ""
    return f"layer {projection.layer} ({projection.module}{tag})"


def fig1_pca(study: "Study") -> tuple[pd.DataFrame, list]:
    """Fig. 1: PCA of the latent features and of the target class's LOI features (BadNets, Blended, every architecture).

    Per (architecture, attack): benign and poisoned evaluation inputs classified as the target are
    projected (:class:`Projector`) with the PCA fitted on the reference features of all classes and,
    in other rows, on those inputs themselves (``fit``); the LOI is the layer-wise detector's,
    fitted on the dataset's reference split. Columns: ``view`` (latent or LOI), ``fit``, ``layer``
    (paper index; empty where the latent layer is not one of the paper's layers), ``module``,
    ``PC1_var`` and ``PC2_var`` (% of the variance of the features the PCA was fitted on),
    ``separability`` (%, :func:`separability`), ``n_benign`` and ``n_poisoned``. Figures per
    architecture and fit: rows = attacks, columns = latent, LOI.
    """
    from plotly.subplots import make_subplots

    from .detection import LayerwiseDetector

    attacks = [a for a in FIG1_ATTACKS if a in study.attacks]
    rows, figures = [], []
    for arch in study.archs:
        panels: dict[str, list[tuple[str, Projection]]] = {fit: [] for fit in FITS}
        for attack in attacks:
            run = study.model(arch, attack)
            target = run.attack.target
            loi = LayerwiseDetector().fit(run.model, run.data.reference).loi_[target]
            projector = Projector(run.model, run.data.reference, run.data.test, run.poisoned_test, target)
            for fit in FITS:
                for view, layer in (("latent", "latent"), ("LOI", loi)):
                    p = projector.project(layer, fit)
                    panels[fit].append((f"{attack}, {view}: {layer_label(p, loi)}", p))
                    rows.append({"arch": arch, "attack": attack, "view": view, "fit": fit,
                                 "layer": np.nan if p.layer is None else p.layer, "module": p.module,
                                 "PC1_var": 100 * p.explained_variance[0], "PC2_var": 100 * p.explained_variance[1],
                                 "separability": 100 * p.separability, "n_benign": p.n_benign,
                                 "n_poisoned": p.n_poisoned})
        for fit, cells in panels.items():
            if not cells:
                continue
            fig = make_subplots(rows=len(attacks), cols=2, subplot_titles=[title for title, _ in cells],
                                horizontal_spacing=0.12, vertical_spacing=0.14)
            for i, (_, p) in enumerate(cells):
                add_projection(fig, p, i // 2 + 1, i % 2 + 1, showlegend=i == 0)
            fitted = "the reference features of all classes" if fit == "reference" else "the inputs shown"
            fig.update_layout(title=f"Fig. 1 ({arch}): benign (green) and poisoned (red) features of the target class, "
                                    f"PCA fitted on {fitted}", template="plotly_white", height=380 * len(attacks))
            figures.append((f"fig1_pca_{arch}" + ("" if fit == "reference" else f"_{fit}"), fig))
    return pd.DataFrame(rows), figures


__all__ = ["FIG1_ATTACKS", "FITS", "Projection", "Projector", "add_projection", "fig1_pca", "layer_label", "separability"]
