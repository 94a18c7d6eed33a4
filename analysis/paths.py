"""Where the toolkit's own files live (no heavy imports: the command line's ``--help`` reads it)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_CHECKPOINTS"]

#: The checkpoint zoo shipped with the repository (``checkpoints/``).
DEFAULT_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
