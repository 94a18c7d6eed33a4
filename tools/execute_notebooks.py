"""Execute notebooks in place and commit-ready: outputs kept, widget state dropped.

    python tools/execute_notebooks.py notebooks/01_layerwise_cosine.ipynb [...]
    python tools/execute_notebooks.py --all

Each notebook runs in ``notebooks/`` (as under nbval and JupyterLab) with a fresh kernel. Widget
state is not stored (``metadata.widgets`` removed): committed notebooks carry printed numbers and
static snapshots, and widgets come alive when the notebook runs. Install the ``static`` extra
(kaleido, and Chromium on the machine) first, so that snapshot cells hold PNG pictures that GitHub
and nbviewer show; without it they are empty.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import os

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, timeout: int = 900) -> float:
    """Run ``path`` top to bottom, write it back without widget state; returns the seconds taken."""
    os.environ["LAYERWISE_SNAPSHOT_PNG"] = "1"  # the kernel inherits it: snapshots become PNGs
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   store_widget_state=False).execute()
    seconds = time.perf_counter() - started
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebook in notebooks/")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("*.ipynb")) if args.all else args.notebooks
    if not paths:
        parser.error("give notebooks or --all")
    for path in paths:
        print(f"{path.name}: {execute(path.resolve()):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
