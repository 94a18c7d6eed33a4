"""What every benchmark does with its Markdown report: print it, and write it to ``--out`` unless that is empty."""
from __future__ import annotations

import os
from pathlib import Path


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none), for a report's conditions line."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def publish(text: str, out: str | Path | None) -> None:
    """Print ``text`` and, when ``out`` is given, write it there (folders created)."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
