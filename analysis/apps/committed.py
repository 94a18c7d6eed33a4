"""Committed results of ``python -m analysis reproduce`` (``docs/results/<dataset>/``) as the apps read them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import paper_results as paper
from ..paths import RESULTS_DIR


def committed_path(dataset: str, name: str) -> Path:
    """``docs/results/<dataset>/<name>``: a committed result of ``python -m analysis reproduce``."""
    return RESULTS_DIR / dataset / name


def committed_table(dataset: str, name: str) -> pd.DataFrame | None:
    """The committed CSV ``docs/results/<dataset>/<name>`` (None when this dataset has none)."""
    path = committed_path(dataset, name)
    return pd.read_csv(path) if path.exists() else None


def committed_protocol(dataset: str) -> str | None:
    """The protocol line of ``docs/results/<dataset>/REPORT.md`` (runs, inputs, RS/STRIP samples), or None."""
    path = committed_path(dataset, "REPORT.md")
    if not path.exists():
        return None
    return next((line for line in path.read_text().splitlines() if line.startswith("Profile")), None)


def committed_stability(dataset: str, arch: str, defenses=("fp", "ac", "scan", "layerwise")) -> pd.DataFrame | None:
    """Committed std (percentage points) of TPR and FPR over runs per attack and detector (``tables12.csv``).

    Returns a table indexed by attack with columns ``(metric, detector)``, or None without committed results.
    """
    table = committed_table(dataset, "tables12.csv")
    if table is None:
        return None
    part = table[(table.arch == arch) & table.defense.isin(defenses)]
    wide = part.pivot(index="attack", columns="defense", values=["TPR_std", "FPR_std"])
    order = [a for a in paper.ATTACKS if a in wide.index]
    return wide.loc[order, [(m, d) for m in ("TPR_std", "FPR_std") for d in defenses if (m, d) in wide.columns]]



__all__ = ["committed_path", "committed_protocol", "committed_stability", "committed_table"]
