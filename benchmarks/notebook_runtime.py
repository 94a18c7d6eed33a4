"""Wall time of every notebook under ``pytest --nbval`` (what CI runs), one notebook per pytest process.

    python benchmarks/notebook_runtime.py [--out docs/results/notebook_runtime.md] [NOTEBOOK ...]

Each notebook runs in a fresh pytest process with the project's nbval settings (pyproject.toml),
so the time includes the kernel's start and the notebook's imports, as in CI. Prints a Markdown
table (seconds per notebook, their sum, the torch thread count and the machine's cores) and the
pass/fail status; ``--out`` also writes it. Times depend on machine load: run it alone.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(notebook: Path) -> tuple[float, bool]:
    """Seconds of ``pytest NOTEBOOK`` and whether it passed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", str(notebook.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    import torch

    rows, total, failed = [], 0.0, []
    for notebook in notebooks:
        seconds, passed = run(notebook)
        total += seconds
        rows.append(f"| `{notebook.name}` | {seconds:.0f} | {'pass' if passed else 'FAIL'} |")
        print(rows[-1], flush=True)
        if not passed:
            failed.append(notebook.name)
    table = "\n".join([
        "| notebook | nbval seconds | result |", "|---|---|---|", *rows,
        f"| **total** | **{total:.0f}** ({total / 60:.1f} min) | {len(notebooks) - len(failed)}/{len(notebooks)} passed |",
        "", f"`python benchmarks/notebook_runtime.py`: one pytest process per notebook, torch threads "
            f"{torch.get_num_threads()}, {os.cpu_count()} CPU cores.",
    ])
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
