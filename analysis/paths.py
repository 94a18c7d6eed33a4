"""Where the toolkit's own files live (no heavy imports: the command line's ``--help`` reads it).

Both folders belong to a source checkout (a clone, installed with ``pip install -e .``): a wheel installed
from an index ships neither, and code that reads them says so where a file is missing.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_CHECKPOINTS", "RESULTS_DIR"]

_CHECKOUT = Path(__file__).resolve().parent.parent

#: The checkpoint zoo shipped with the repository (``checkpoints/``).
DEFAULT_CHECKPOINTS = _CHECKOUT / "checkpoints"

#: The committed results of ``python -m analysis reproduce`` and the benchmarks (``docs/results/``), which the
#: notebooks' apps show beside their live numbers.
RESULTS_DIR = _CHECKOUT / "docs" / "results"
