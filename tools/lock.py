"""Write ``requirements/lock.txt``: the versions of the current (fresh, passing) virtualenv.

Run it in a brand-new virtualenv after the README's two Quickstart commands passed there::

    python tools/lock.py

It records ``pip freeze --exclude-editable`` under a header that says where and how it was made, and marks
the packages that only PyPI's Linux x86_64 torch wheel pulls in (CUDA libraries, triton) with that platform.
"""
from __future__ import annotations

import datetime
import platform
import re
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
LINUX_X86_ONLY = re.compile(r"^(nvidia-[\w.\-]+|triton)==")
MARKER = ' ; sys_platform == "linux" and platform_machine == "x86_64"'

HEADER = """\
# Known-good versions: every package of a fresh virtualenv in which the README's two Quickstart commands passed
# (`pip install -e ".[test,cluster]"`, then `pip freeze --exclude-editable`), on {system} {machine}, Python {python}, {date}.
# To reproduce the committed results with exactly these versions:
#     python -m venv .venv && . .venv/bin/activate
#     pip install -r requirements/lock.txt && pip install --no-deps -e .
# The NVIDIA and triton lines are what PyPI's Linux x86_64 torch wheel pulls in; elsewhere they are skipped.
# pyproject.toml keeps ranges (users install the library into their own environments);
# tests/test_packaging.py checks that every locked version lies in those ranges and in environment.yml's.
# Regenerate with: python tools/lock.py (in a fresh venv where the README's commands passed).
"""


def main() -> None:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    lines = [line + MARKER if LINUX_X86_ONLY.match(line) else line
             for line in frozen if line and not line.startswith(("-e ", "#")) and " @ " not in line]
    header = HEADER.format(system=platform.system(), machine=platform.machine(),
                           python=".".join(platform.python_version_tuple()[:2]), date=datetime.date.today())
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {LOCK} ({len(lines)} packages)")


if __name__ == "__main__":
    main()
