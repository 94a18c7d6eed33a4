"""The paper's reported numbers, as data, so reports can print ours beside them.

All values are percentages, transcribed from the paper's Tables 1-8 (CIFAR-10 = ResNet-18,
GTSRB = MobileNetV2). Keys use this toolkit's names: attacks ``badnets, blended, lc,
wanet, issba, iad``; defenses ``rs, shrinkpad, fp, ac, strip, scan, layerwise``.
"""
from __future__ import annotations

__all__ = ["ADAPTIVE_BETAS", "ATTACKS", "BENCHMARKS", "COLUMNS", "DEFENSES", "RATES", "TABLE1_CIFAR10",
           "TABLE2_GTSRB", "TABLE3", "TABLE4_RATES", "TABLE5_FEATURES", "TABLE6_SINGLE_LAYER",
           "TABLE7_ADAPTIVE", "TABLE7_BETAS", "TABLE8_METRICS", "TABLE8_TAUS", "adaptive_row",
           "paper_columns", "paper_value"]

ATTACKS = ("badnets", "blended", "lc", "wanet", "issba", "iad")

#: Poisoning rate per attack (Sec. 5.1).
RATES = {"badnets": 0.05, "blended": 0.05, "lc": 0.05, "wanet": 0.10, "issba": 0.05, "iad": 0.10}


def _rows(table: dict[str, tuple[float, ...]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{defense: (TPR, FPR) × 6 attacks}`` -> ``{defense: {attack: (TPR, FPR)}}``."""
    out = {}
    for defense, values in table.items():
        out[defense] = {attack: (values[2 * i], values[2 * i + 1]) for i, attack in enumerate(ATTACKS)}
    return out


#: Table 1: CIFAR-10 (ResNet-18), TPR and FPR per defense and attack.
TABLE1_CIFAR10 = _rows({
    "rs": (9.84, 8.00, 7.35, 5.76, 9.21, 7.52, 98.48, 10.00, 8.83, 8.72, 13.28, 6.36),
    "shrinkpad": (94.28, 13.31, 49.72, 12.89, 69.87, 13.18, 36.25, 17.69, 95.22, 5.50, 42.74, 7.56),
    "fp": (96.10, 17.13, 96.23, 16.16, 94.76, 17.31, 96.01, 18.64, 98.98, 19.53, 97.08, 22.52),
    "ac": (99.52, 31.14, 100.00, 30.69, 100.00, 31.16, 99.18, 32.44, 99.94, 34.22, 82.99, 31.32),
    "strip": (68.70, 11.70, 65.20, 11.70, 66.00, 12.80, 7.90, 12.30, 56.20, 11.40, 2.10, 14.00),
    "scan": (96.60, 0.77, 100.00, 0.00, 0.02, 5.05, 98.55, 1.06, 99.89, 2.61, 84.19, 0.13),
    "layerwise": (99.38, 1.35, 100.00, 1.59, 100.00, 1.20, 91.04, 1.48, 98.97, 1.17, 99.12, 1.26),
})

#: The defenses of the paper's Tables 1/2, in its order: the keys a detector's ``paper`` entry in
#: :data:`analysis.defenses.REGISTRY` can name.
DEFENSES = tuple(TABLE1_CIFAR10)

#: Table 2: GTSRB (MobileNetV2), TPR and FPR per defense and attack.
TABLE2_GTSRB = _rows({
    "rs": (13.20, 22.10, 10.12, 20.40, 9.23, 19.15, 10.10, 17.20, 8.61, 16.98, 17.70, 17.60),
    "shrinkpad": (94.97, 12.16, 11.58, 10.68, 96.16, 10.60, 66.11, 14.81, 95.92, 8.26, 31.07, 16.10),
    "fp": (89.05, 18.80, 30.56, 3.70, 94.71, 50.02, 67.12, 3.24, 94.22, 7.05, 94.37, 5.75),
    "ac": (0.30, 8.84, 0.00, 5.67, 4.83, 5.42, 0.42, 25.87, 99.06, 17.48, 43.85, 10.73),
    "strip": (32.00, 9.00, 80.40, 10.80, 7.40, 11.00, 34.20, 11.40, 13.00, 13.60, 6.60, 10.60),
    "scan": (46.05, 2.57, 46.02, 4.03, 30.45, 11.39, 54.07, 1.88, 96.85, 0.17, 0.09, 19.41),
    "layerwise": (99.99, 6.23, 100.00, 6.72, 100.00, 5.95, 100.00, 6.49, 100.00, 5.43, 100.00, 4.67),
})

#: Table 3: MA and ASR per attack.
TABLE3 = {
    "cifar10-resnet18": {
        "badnets": (91.45, 97.20), "blended": (92.19, 100.0), "lc": (91.98, 99.96),
        "wanet": (91.13, 99.04), "issba": (94.74, 100.0), "iad": (94.42, 99.66),
    },
    "gtsrb-mobilenetv2": {
        "badnets": (97.00, 95.49), "blended": (97.27, 100.0), "lc": (97.45, 100.0),
        "wanet": (96.09, 91.82), "issba": (98.43, 100.0), "iad": (98.81, 99.63),
    },
}

#: Table 4: BadNets on CIFAR-10 ResNet-18 at several poisoning rates: (MA, ASR, TPR, FPR).
TABLE4_RATES = {0.01: (91.52, 94.15, 99.64, 1.25), 0.03: (92.28, 96.31, 99.32, 1.32),
                0.05: (91.45, 97.20, 99.36, 1.35), 0.10: (91.45, 97.56, 99.83, 1.62)}

#: Table 5: BadNets on GTSRB MobileNetV2, latent vs critical features: (TPR latent, TPR critical, FPR latent, FPR critical).
TABLE5_FEATURES = {"ac": (0.3, 96.32, 8.84, 7.67), "scan": (46.05, 86.19, 2.57, 1.96),
                   "layerwise": (1.31, 99.99, 4.93, 6.23)}

#: Table 6: CIFAR-10 ResNet-18, scoring on a single layer 1..10 vs the LOI rule ("ours"): (TPR, FPR) per layer.
TABLE6_SINGLE_LAYER = {
    "wanet": {"loi": 9, "tpr": (0.00, 0.10, 0.05, 0.00, 0.01, 0.00, 68.82, 98.08, 59.82, 0.00), "ours_tpr": 91.04,
              "fpr": (0.09, 0.82, 0.24, 0.20, 0.21, 0.04, 2.06, 1.52, 2.06, 0.65), "ours_fpr": 1.48},
    "iad": {"loi": 8, "tpr": (19.32, 34.03, 6.44, 30.49, 61.09, 78.65, 88.81, 99.65, 99.10, 2.36), "ours_tpr": 99.12,
            "fpr": (1.65, 1.38, 1.44, 1.60, 2.27, 1.70, 1.29, 1.13, 1.09, 1.24), "ours_fpr": 1.26},
}

#: Table 7: adaptive attack (BadNets, CIFAR-10 ResNet-18) per penalty beta.
TABLE7_BETAS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.91, 0.92, 0.95)
TABLE7_ADAPTIVE = {
    "ma": (91.45, 92.96, 92.06, 92.65, 92.63, 90.33, 79.97, 69.13, 10.0),
    "asr": (97.20, 96.72, 96.93, 96.63, 96.29, 96.88, 96.41, 97.36, 100.0),
    "ac_tpr": (99.52, 99.20, 99.16, 45.69, 26.26, 26.22, 23.81, 13.38, 0.00),
    "ac_fpr": (31.14, 29.46, 28.85, 8.21, 7.72, 6.21, 0.25, 7.80, 0.00),
    "scan_tpr": (96.60, 96.55, 96.60, 72.80, 56.19, 0.00, 0.00, 0.00, 0.00),
    "scan_fpr": (0.77, 1.38, 4.60, 1.14, 0.10, 0.00, 0.00, 0.00, 0.00),
    "layerwise_tpr": (99.38, 99.41, 98.18, 97.43, 97.52, 94.20, 24.20, 0.00, 0.00),
    "layerwise_fpr": (1.35, 1.96, 1.44, 1.15, 0.53, 1.40, 4.17, 0.00, 0.00),
}

#: The betas this toolkit trains and ships (zoo) for Table 7: the paper's range ends (0, 0.95), its
#: last beta with the detector still working (0.9) and one in between (0.5). The other columns cost
#: a model each and are available through ``table7_adaptive(study, betas=...)``.
ADAPTIVE_BETAS = (0.0, 0.5, 0.9, 0.95)

#: Table 8: IAD on CIFAR-10 ResNet-18, Euclidean vs cosine per tau: (TPR, FPR) means.
TABLE8_TAUS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
TABLE8_METRICS = {
    "euclidean": ((99.98, 24.77), (97.12, 13.64), (95.73, 8.67), (70.84, 4.69), (53.13, 3.21), (15.71, 1.56)),
    "cosine": ((100.00, 33.65), (99.99, 18.74), (99.91, 8.71), (99.76, 3.89), (99.12, 0.17), (95.99, 0.40)),
}


def adaptive_row(beta: float) -> dict[str, float] | None:
    """Table 7's column for ``beta`` (None when the paper has no such column)."""
    if beta not in TABLE7_BETAS:
        return None
    i = TABLE7_BETAS.index(beta)
    return {key: values[i] for key, values in TABLE7_ADAPTIVE.items()}


# ---------------------------------------------------------------------- one lookup for every experiment
#: The paper's benchmark beside each architecture where it has two (Tables 1/2 and 3).
BENCHMARKS = {"resnet18": "cifar10-resnet18", "mobilenetv2": "gtsrb-mobilenetv2"}

#: What :func:`paper_value` returns per table, in this order (percentages).
COLUMNS: dict[str, tuple[str, ...]] = {
    "tables12": ("TPR", "FPR"),
    "table3": ("MA", "ASR"),
    "table4": ("MA", "ASR", "TPR", "FPR"),
    "table5": ("TPR", "FPR"),
    "table6": ("TPR", "FPR"),
    "table7": tuple(TABLE7_ADAPTIVE),
    "table8": ("TPR", "FPR"),
}


def _cell(table: str, arch: str, attack: str, detector: str | None, at) -> tuple[float, ...] | None:
    """The paper's cell, or None where it has none."""
    if table == "tables12":
        rows = {"resnet18": TABLE1_CIFAR10, "mobilenetv2": TABLE2_GTSRB}.get(arch, {})
        return rows.get(detector, {}).get(attack)
    if table == "table3":
        return TABLE3.get(BENCHMARKS.get(arch, ""), {}).get(attack)
    if table == "table4":
        return TABLE4_RATES.get(at) if attack == "badnets" else None
    if table == "table5":
        p = TABLE5_FEATURES.get(detector) if attack == "badnets" else None
        return None if p is None else {"latent": (p[0], p[2]), "critical": (p[1], p[3])}.get(at)
    if table == "table6":
        p = TABLE6_SINGLE_LAYER.get(attack)
        if p is None:
            return None
        if at == "ours":
            return p["ours_tpr"], p["ours_fpr"]
        if arch != "resnet18":  # its layer l is ResNet-18's layer l: no cell of another architecture's layer l
            return None
        return (p["tpr"][at - 1], p["fpr"][at - 1]) if isinstance(at, int) and 1 <= at <= len(p["tpr"]) else None
    if table == "table7":
        row = adaptive_row(at) if attack == "adaptive" else None
        return None if row is None else tuple(row[key] for key in COLUMNS["table7"])
    # table8: ``detector`` is the layer-wise detector's metric, ``at`` the threshold tau
    values = TABLE8_METRICS.get(detector) if attack == "iad" else None
    return None if values is None or at not in TABLE8_TAUS else values[TABLE8_TAUS.index(at)]


def paper_value(table: str, arch: str, attack: str, detector: str | None = None, at=None) -> tuple[float, ...]:
    """The paper's numbers for one cell of ``table``: :data:`COLUMNS` ``[table]`` in order, NaN where it has none.

    An attack, detector, rate, layer, beta or tau the paper does not report gives NaNs, never a
    KeyError, so a new attack or defense runs through every experiment with empty paper columns.
    ``arch`` picks the benchmark where the paper has two (``tables12`` and ``table3``: ResNet-18 beside
    CIFAR-10, MobileNetV2 beside GTSRB, other architectures NaN); Tables 4-8 have one benchmark each,
    shown beside every architecture. ``detector``: the defense (``tables12``, ``table5``; a variant
    such as ``ac-ref`` is looked up by its base defense by the caller) or, for ``table8``, the metric
    (``"cosine"``, ``"euclidean"``). ``at``: the poisoning rate (``table4``), ``"latent"`` or
    ``"critical"`` (``table5``), the layer 1.. or ``"ours"`` (``table6``), beta (``table7``), tau (``table8``).
    """
    if table not in COLUMNS:
        raise ValueError(f"table: expected one of {sorted(COLUMNS)}, got {table!r}")
    found = _cell(table, arch, attack, detector, at)
    return tuple(float(v) for v in found) if found is not None else (float("nan"),) * len(COLUMNS[table])


def paper_columns(table: str, arch: str, attack: str, detector: str | None = None, at=None) -> dict[str, float]:
    """:func:`paper_value` as row entries ``{"paper_" + column: value}`` (e.g. ``paper_MA``, ``paper_TPR``)."""
    return {f"paper_{column}": value
            for column, value in zip(COLUMNS[table], paper_value(table, arch, attack, detector, at))}
