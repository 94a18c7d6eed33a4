"""Interactive exploration of the layer-wise analysis (paper, Fig. 2), for notebooks.

:class:`LayerwiseExplorer` runs the model once over the benign evaluation images and the
poisoned ones and keeps, for every input, its cosine similarity to every class's benign
centroids at every layer, its predicted class and its detector score. Everything the
notebook shows is then read from those arrays: curves per class, histograms per layer,
TPR/FPR per threshold tau, so widget callbacks never run the model.

The widget apps of the notebooks (:mod:`analysis.apps`) draw from these arrays; this module
holds no widget.

As in the paper's Sec. 3, the curves of a class ``c`` use the benign and the poisoned
evaluation inputs that the model *classifies* as ``c``, each compared with ``c``'s
centroids (for a class other than the attack's target, few poisoned inputs remain: the
ASR misses). One difference: the centroids are the detector's, estimated on the
defender's reference split (the paper's Sec. 3 analysis uses 10% of the target class's
test images, which is what our reference split is on CIFAR-10 and GTSRB).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn as nn

from .data import LabeledImages
from .detection import LayerwiseDetector
from .detector_inputs import check_tau
from .features import iter_features
from .plotting import histogram_figure, layerwise_curve_figure
from .metrics import attack_success_rate, auroc, false_positive_rate, main_accuracy, roc_points, true_positive_rate
from .operating_point import detector_tau, tau_label
from .similarity import EPS

TAU_MIN, TAU_MAX, TAU_STEP = 0.5, 4.0, 0.1


# ---------------------------------------------------------------------- the figure families' computations
# One function per family, on the detector's scores: the live apps pass an explorer's precomputed arrays, the
# batch experiments (analysis.experiments) the arrays of LayerwiseDetector.detect on each redraw.
def threshold_sweep(detector: LayerwiseDetector, benign_scores: np.ndarray, benign_predicted: np.ndarray,
                    poisoned_scores: np.ndarray, poisoned_predicted: np.ndarray,
                    taus: Sequence[float | None]) -> pd.DataFrame:
    """Fig. 5 and Table 8: the detector's TPR and FPR (%) at each threshold in ``taus``.

    Parameters
    ----------
    detector : LayerwiseDetector
        The fitted detector; an input is flagged as :meth:`LayerwiseDetector.flag_scores` flags it, against
        its predicted class.
    benign_scores, benign_predicted : numpy.ndarray
        The raw scores and predicted classes ``[Nb]`` of the benign inputs.
    poisoned_scores, poisoned_predicted : numpy.ndarray
        The same ``[Np]`` of the poisoned inputs.
    taus : sequence of float or None
        The thresholds, in standard deviations; None is the detector's own (:func:`detector_tau`).

    Returns
    -------
    pandas.DataFrame
        One row per tau: ``tau``, ``TPR`` (flagged poisoned inputs, %), ``FPR`` (flagged benign inputs, %).
        :func:`analysis.plotting.plot_threshold_sweep` draws it.
    """
    rows = []
    for tau in taus:
        tau = None if tau is None else check_tau(tau)
        rows.append({"tau": detector_tau(detector) if tau is None else tau,
                     "TPR": true_positive_rate(detector.flag_scores(poisoned_scores, poisoned_predicted, tau)) * 100,
                     "FPR": false_positive_rate(detector.flag_scores(benign_scores, benign_predicted, tau)) * 100})
    return pd.DataFrame(rows, columns=["tau", "TPR", "FPR"])


def score_distribution(benign_scores: np.ndarray, benign_predicted: np.ndarray, poisoned_scores: np.ndarray,
                       poisoned_predicted: np.ndarray, class_: int) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 6: the scores of the benign and of the poisoned inputs the model predicts as ``class_``.

    Parameters
    ----------
    benign_scores, benign_predicted, poisoned_scores, poisoned_predicted : numpy.ndarray
        The detector's raw scores and the predicted classes, as in :func:`threshold_sweep`.
    class_ : int
        The class (Fig. 6: the attack's target).

    Returns
    -------
    tuple of numpy.ndarray
        ``(benign [nb], poisoned [np])``; :func:`analysis.plotting.plot_score_distribution` draws them.
    """
    return benign_scores[benign_predicted == class_], poisoned_scores[poisoned_predicted == class_]


def model_rates(detector: LayerwiseDetector, target: int, benign_labels: np.ndarray, benign_predicted: np.ndarray,
                benign_scores: np.ndarray, poisoned_predicted: np.ndarray,
                poisoned_scores: np.ndarray) -> dict[str, float | int]:
    """Tables 4 and 7: one model's MA and ASR, and the detector's TPR and FPR at its own threshold.

    Parameters
    ----------
    detector : LayerwiseDetector
        The fitted detector (flags as :meth:`LayerwiseDetector.flag_scores` with its own tau).
    target : int
        The attack's target class.
    benign_labels : numpy.ndarray
        The true labels ``[Nb]`` of the benign inputs.
    benign_predicted, benign_scores, poisoned_predicted, poisoned_scores : numpy.ndarray
        As in :func:`threshold_sweep`.

    Returns
    -------
    dict
        ``MA``, ``ASR``, ``TPR``, ``FPR`` (%) and ``LOI`` (the target's layer of interest).
    """
    return {"MA": main_accuracy(benign_predicted, benign_labels) * 100,
            "ASR": attack_success_rate(poisoned_predicted, target) * 100,
            "TPR": true_positive_rate(detector.flag_scores(poisoned_scores, poisoned_predicted)) * 100,
            "FPR": false_positive_rate(detector.flag_scores(benign_scores, benign_predicted)) * 100,
            "LOI": int(detector.loi_[target])}


class LayerwiseExplorer:
    """Precomputed layer-wise similarities, scores and rates of one attacked model.

    Parameters
    ----------
    model : the (possibly attacked) classifier.
    detector : a :class:`LayerwiseDetector` fitted with :meth:`~LayerwiseDetector.fit`
        on this model (so that it knows the layers' module paths).
    benign_test : benign evaluation images with their true labels.
    poisoned_test : the poisoned evaluation images (trigger applied).
    target : the attack's target class (the default class of the curves).
    batch_size : inputs per forward pass while precomputing.

    Attributes (all NumPy, computed once in ``__init__``): ``classes`` (the detector's
    classes), ``benign_similarity`` ``[Nb, L, C]`` and ``poisoned_similarity``
    ``[Np, L, C]`` (cosine similarity of input i at layer l+1 to the centroid of
    ``classes[c]``), ``benign_predicted`` / ``poisoned_predicted`` ``[N]`` and
    ``benign_scores`` / ``poisoned_scores`` ``[N]`` (the detector's score of each input,
    against its predicted class).
    """

    def __init__(
        self,
        model: nn.Module,
        detector: LayerwiseDetector,
        benign_test: LabeledImages,
        poisoned_test: LabeledImages,
        target: int,
        batch_size: int = 256,
    ) -> None:
        if not isinstance(detector, LayerwiseDetector):
            raise TypeError(f"detector: expected a LayerwiseDetector, got {type(detector).__name__}")
        if not hasattr(detector, "mu_") or getattr(detector, "layer_names_", None) is None:
            raise ValueError("detector: expected a detector fitted with fit(model, reference), got an unfitted one "
                             "or one fitted with fit_features (it does not know the model's layers)")
        for name, data in (("benign_test", benign_test), ("poisoned_test", poisoned_test)):
            if not isinstance(data, LabeledImages):
                raise TypeError(f"{name}: expected LabeledImages, got {type(data).__name__}")
            if len(data) == 0:
                raise ValueError(f"{name}: got no images")
        self.model, self.detector = model, detector
        self.classes: list[int] = detector.classes_.tolist()
        self.target = self._check_class(target, "target")
        self.n_layers: int = detector.n_layers_
        self.layer_names: list[str] = list(detector.layer_names_)
        self.benign_labels = benign_test.y.numpy().astype(np.int64)
        self.benign_similarity, self.benign_predicted, self.benign_scores = self._precompute(benign_test, batch_size)
        self.poisoned_similarity, self.poisoned_predicted, self.poisoned_scores = self._precompute(
            poisoned_test, batch_size)

    # ------------------------------------------------------------------ precomputation
    def _precompute(self, data: LabeledImages, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One forward pass: similarity to every class ``[N, L, C]``, predicted class ``[N]``, score ``[N]``.

        Same numbers as :meth:`LayerwiseDetector.layerwise_similarity_features` for each class
        (Definition 2, float64, zero vectors give 0), computed for all classes with one
        matrix product per layer.
        """
        centroids = [torch.stack([self.detector.centroids_[c][i].cpu() for c in self.classes])
                     for i in range(self.n_layers)]  # per layer [C, D_l], float64
        centroid_norms = [c.norm(dim=1) for c in centroids]
        similarity, predicted, scores = [], [], []
        for feats, logits in iter_features(self.model, data, self.layer_names, batch_size):
            batch_predicted = logits.argmax(1).cpu().numpy()
            batch = np.empty((len(logits), self.n_layers, len(self.classes)))
            for i, f in enumerate(feats):
                f64 = f.cpu().to(torch.float64)
                norms = f64.norm(dim=1, keepdim=True) * centroid_norms[i][None, :]
                batch[:, i, :] = (f64 @ centroids[i].T / norms.clamp_min(EPS)).numpy()
            similarity.append(batch)
            predicted.append(batch_predicted)
            if self.detector.metric == "cosine" and self.detector.score == "sum":  # a sum of the similarities above
                scores.append(self._cosine_scores(batch, batch_predicted))
            else:
                scores.append(self.detector.score_features(feats, batch_predicted))
        return np.concatenate(similarity), np.concatenate(predicted), np.concatenate(scores)

    def _cosine_scores(self, similarity: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """The cosine detector's scores ``[N]`` from similarities ``[N, L, C]``: summed over the predicted class's scored layers.

        The same sum :meth:`LayerwiseDetector.score_features` computes (tested); NaN for a class
        without reference samples, as there.
        """
        scores = np.full(len(predicted), np.nan)
        for column, class_ in enumerate(self.classes):
            rows = np.flatnonzero(predicted == class_)
            layers = [layer - 1 for layer in self.detector.score_layers_[class_]]
            scores[rows] = similarity[rows][:, layers, column].sum(1)
        unknown = ~np.isin(predicted, self.classes)
        if unknown.any() and self.detector.unknown_class == "raise":
            self.detector.flag_scores(scores[unknown][:1], predicted[unknown][:1])  # raises the detector's message
        return scores

    # ------------------------------------------------------------------ checks
    def _check_class(self, class_: int, name: str = "class_") -> int:
        if isinstance(class_, bool) or not isinstance(class_, (int, np.integer)) or int(class_) not in self.classes:
            raise ValueError(f"{name}: expected one of the detector's classes {self.classes}, got {class_!r}")
        return int(class_)

    def _check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= self.n_layers:
            raise ValueError(f"layer: expected an integer in 1..{self.n_layers}, got {layer!r}")
        return int(layer)

    @staticmethod
    def _check_tau(tau: float) -> float:
        return check_tau(tau)

    # ------------------------------------------------------------------ plain data
    def curves(self, class_: int) -> tuple[np.ndarray, np.ndarray]:
        """``(benign [Nb, L], poisoned [Np, L])`` cosine similarities to ``class_``'s centroids, layer 1..L.

        Both are the inputs the model classifies as ``class_`` (paper, Sec. 3).
        """
        column = self.classes.index(self._check_class(class_))
        benign = self.benign_similarity[self.benign_predicted == class_, :, column]
        return benign, self.poisoned_similarity[self.poisoned_predicted == class_, :, column]

    def histogram_data(self, layer: int, class_: int) -> tuple[np.ndarray, np.ndarray]:
        """``(benign [Nb], poisoned [Np])``: column ``layer`` (1-indexed) of :meth:`curves`."""
        layer = self._check_layer(layer)
        benign, poisoned = self.curves(class_)
        return benign[:, layer - 1], poisoned[:, layer - 1]

    def rates(self, tau: float | None = None) -> dict[str, float | int]:
        """The detector's TPR and FPR at threshold ``tau`` (fractions), from the precomputed scores.

        ``tau`` None: the detector's own threshold (``calibrated_tau_`` with ``target_fpr``, else ``tau``;
        :func:`analysis.operating_point.detector_tau`), flagged by the detector itself, as ``predict`` flags.

        As :meth:`LayerwiseDetector.detect` flags them: every input is scored against
        its predicted class; TPR over all poisoned inputs, FPR over all benign ones.
        Also returns the counts ``flagged_poisoned`` / ``n_poisoned`` and ``flagged_benign`` / ``n_benign``.
        """
        tau = None if tau is None else self._check_tau(tau)
        on_poisoned = self.detector.flag_scores(self.poisoned_scores, self.poisoned_predicted, tau)
        on_benign = self.detector.flag_scores(self.benign_scores, self.benign_predicted, tau)
        return {"tau": detector_tau(self.detector) if tau is None else tau, "tau_label": tau_label(self.detector, tau),
                "tpr": float(on_poisoned.mean()), "fpr": float(on_benign.mean()),
                "flagged_poisoned": int(on_poisoned.sum()), "n_poisoned": len(on_poisoned),
                "flagged_benign": int(on_benign.sum()), "n_benign": len(on_benign)}

    def summary(self, tau: float | None = None) -> dict[str, object]:
        """MA and ASR of the model, the target's LOI and scored layers, and :meth:`rates` at ``tau``.

        ``tau`` defaults to the detector's own threshold (calibrated with ``target_fpr``). MA: benign predictions
        equal to the labels; ASR: poisoned inputs predicted as the target (fractions).
        """
        return {"ma": main_accuracy(self.benign_predicted, self.benign_labels),
                "asr": attack_success_rate(self.poisoned_predicted, self.target),
                "target": self.target, "loi": int(self.detector.loi_[self.target]),
                "score_layers": list(self.detector.score_layers_[self.target]), **self.rates(tau)}

    def summary_text(self, tau: float | None = None) -> str:
        """:meth:`summary` as a few lines of plain text (percentages with one decimal, and counts)."""
        s = self.summary(tau)
        loi = s["loi"]
        return "\n".join([
            f"benign / poisoned evaluation images: {s['n_benign']} / {s['n_poisoned']}",
            f"MA {100 * s['ma']:.1f} %   ASR {100 * s['asr']:.1f} %",
            f"LOI of the target class {s['target']}: layer {loi} of {self.n_layers} ({self.layer_names[loi - 1]}); "
            f"scored layers {s['score_layers']}",
            f"{s['tau_label']}: TPR {100 * s['tpr']:.1f} % ({s['flagged_poisoned']}/{s['n_poisoned']} poisoned "
            f"inputs flagged), FPR {100 * s['fpr']:.1f} % ({s['flagged_benign']}/{s['n_benign']} benign inputs flagged)",
        ])

    def threshold_sweep(self, taus: Sequence[float | None]) -> pd.DataFrame:
        """:func:`threshold_sweep` (Fig. 5) on the precomputed scores: columns ``tau``, ``TPR``, ``FPR`` (%)."""
        return threshold_sweep(self.detector, self.benign_scores, self.benign_predicted, self.poisoned_scores,
                               self.poisoned_predicted, taus)

    def rates_table(self, taus: Sequence[float]) -> pd.DataFrame:
        """TPR and FPR in percent for each threshold in ``taus`` (index: tau): :meth:`threshold_sweep` indexed by tau."""
        sweep = self.threshold_sweep(taus)
        return pd.DataFrame({"TPR %": sweep.TPR.to_numpy(), "FPR %": sweep.FPR.to_numpy()},
                            index=pd.Index(sweep.tau, name="tau"))

    def model_rates(self) -> dict[str, float | int]:
        """:func:`model_rates` (a row of Tables 4 and 7) on the precomputed arrays: MA, ASR, TPR, FPR (%) and LOI."""
        return model_rates(self.detector, self.target, self.benign_labels, self.benign_predicted, self.benign_scores,
                           self.poisoned_predicted, self.poisoned_scores)

    def layer_table(self, class_: int) -> pd.DataFrame:
        """Per layer (index 1..L): module path, mean benign and poisoned similarity to ``class_``, their gap, LOI marks."""
        benign, poisoned = self.curves(class_)
        loi = self.detector.loi_[int(class_)]
        marks = {loi: "LOI", loi - 1: "LOI-1", loi - 2: "LOI-2"}
        table = pd.DataFrame({
            "module": self.layer_names,
            "benign": benign.mean(0),
            "poisoned": poisoned.mean(0),
            "gap": benign.mean(0) - poisoned.mean(0),
            "mark": [marks.get(layer, "") for layer in range(1, self.n_layers + 1)],
        }, index=pd.RangeIndex(1, self.n_layers + 1, name="layer"))
        return table

    def threshold(self, class_: int, tau: float | None = None) -> float:
        """The score beyond which an input predicted as ``class_`` is flagged at ``tau`` (mu - tau sigma for cosine).

        ``tau`` None: the detector's own threshold, as in :meth:`rates`."""
        return self.detector.thresholds(None if tau is None else self._check_tau(tau))[self._check_class(class_)]

    def score_distribution(self, class_: int) -> tuple[np.ndarray, np.ndarray]:
        """``(benign [Nb], poisoned [Np])`` detector scores of the inputs predicted as ``class_`` (Fig. 6)."""
        return score_distribution(self.benign_scores, self.benign_predicted, self.poisoned_scores,
                                  self.poisoned_predicted, self._check_class(class_))

    def roc(self) -> dict[str, np.ndarray | float]:
        """ROC curve over all benign vs all poisoned inputs: ``fpr``, ``tpr`` (fractions), ``auroc``.

        The score is the detector's :meth:`~LayerwiseDetector.suspicion_from_scores` (the raw score standardised
        per predicted class), so the detector's operating point at any tau lies on this curve.
        """
        benign = self.detector.suspicion_from_scores(self.benign_scores, self.benign_predicted)
        poisoned = self.detector.suspicion_from_scores(self.poisoned_scores, self.poisoned_predicted)
        fpr, tpr = roc_points(benign, poisoned)
        return {"fpr": fpr, "tpr": tpr, "auroc": auroc(benign, poisoned)}

    def single_layer_table(self, tau: float | None = None) -> pd.DataFrame:
        """TPR and FPR (%) when the detector scores on one layer only, per layer, and with the LOI rule (Table 6).

        Each single-layer detector is :meth:`LayerwiseDetector.with_score_layers` ``([l])`` (same reference
        samples and centroids, its own mu and sigma); its score of an input is the explorer's
        precomputed similarity to the predicted class's centroid at layer ``l``. Index: ``1..L`` and ``"LOI rule"``.
        """
        if self.detector.metric != "cosine" or self.detector.score != "sum":
            raise ValueError(f"single_layer_table: defined for the paper's cosine sum, this detector uses metric "
                             f"{self.detector.metric!r} and score {self.detector.score!r}")
        tau = None if tau is None else self._check_tau(tau)  # None: each detector's own threshold
        column_of = {c: i for i, c in enumerate(self.classes)}
        rows = {}
        for layer in range(1, self.n_layers + 1):
            single = self.detector.with_score_layers([layer])
            rates = []
            for similarity, predicted in ((self.poisoned_similarity, self.poisoned_predicted),
                                          (self.benign_similarity, self.benign_predicted)):
                known = np.isin(predicted, self.classes)
                scores = np.full(len(predicted), np.nan)
                scores[known] = similarity[np.flatnonzero(known), layer - 1,
                                           [column_of[int(c)] for c in predicted[known]]]
                rates.append(100 * float(single.flag_scores(scores, predicted, tau).mean()))
            rows[layer] = rates
        overall = self.rates(tau)
        rows["LOI rule"] = [100 * overall["tpr"], 100 * overall["fpr"]]
        return pd.DataFrame.from_dict(rows, orient="index", columns=["TPR %", "FPR %"]).rename_axis("layer")

    # ------------------------------------------------------------------ figures
    def curve_figure(self, class_: int, selected_layer: int | None = None) -> go.Figure:
        """Fig. 2 for ``class_``: mean ± std similarity per layer, LOI-2..LOI shaded, LOI circled, a layer marked."""
        benign, poisoned = self.curves(class_)
        if selected_layer is not None:
            selected_layer = self._check_layer(selected_layer)
        role = " (attack target)" if class_ == self.target else ""
        fig = layerwise_curve_figure(
            benign, poisoned, self.detector.loi_[int(class_)], self.detector.score_layers_[int(class_)],
            title=f"Cosine similarity to class {class_}{role}'s benign centroids", selected_layer=selected_layer,
        )
        if len(benign):
            fig.data[0].name = f"benign, class {class_} (n={len(benign)})"
        fig.update_layout(height=420, margin=dict(t=60, b=40))
        return fig

    def histogram_figure(self, layer: int, class_: int) -> go.Figure:
        """Histograms of the similarity to ``class_``'s centroid at ``layer``, benign vs poisoned."""
        benign, poisoned = self.histogram_data(layer, class_)
        fig = histogram_figure(
            benign, poisoned, f"Layer {layer} ({self.layer_names[layer - 1]}): similarity to class {class_}'s centroid",
            "cosine similarity",
        )
        fig.data[0].name = f"benign, class {class_} (n={len(benign)})"
        fig.update_layout(height=360, margin=dict(t=60, b=40))
        return fig

    def readout(self, tau: float | None = None) -> str:
        """HTML line with TPR and FPR at ``tau`` (percentages and counts); None: the detector's own threshold."""
        r = self.rates(tau)
        return (f"<b>{tau_label(self.detector, tau, '&tau;')}</b>: TPR {100 * r['tpr']:.1f} % "
                f"({r['flagged_poisoned']}/{r['n_poisoned']} poisoned inputs flagged), "
                f"FPR {100 * r['fpr']:.1f} % ({r['flagged_benign']}/{r['n_benign']} benign inputs flagged)")



__all__ = ["LayerwiseExplorer", "model_rates", "score_distribution", "threshold_sweep"]
