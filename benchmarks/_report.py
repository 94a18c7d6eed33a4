"""What every benchmark does with its Markdown report: print it, and write it to ``--out`` unless that is empty."""
from __future__ import annotations

from pathlib import Path


def publish(text: str, out: str | Path | None) -> None:
    """Print ``text`` and, when ``out`` is given, write it there (folders created)."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
