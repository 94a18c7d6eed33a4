"""Print the README's Quickstart commands, one a line, as they stand in README.md.

``.ci/run`` runs what this prints, verbatim, in a brand-new virtualenv, so CI tests exactly the commands a
newcomer is told to run. The commands are the ``bash`` code blocks of the ``## Quickstart`` section.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_commands(text: str) -> list[str]:
    """The one-line ``bash`` blocks of the ``## Quickstart`` section of a README's text, in order."""
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.M | re.S)
    if section is None:
        raise ValueError("README.md has no '## Quickstart' section")
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    commands = [block.strip() for block in blocks]
    if not commands or any("\n" in command for command in commands):
        raise ValueError(f"the Quickstart needs one-line bash blocks; found {commands!r}")
    return commands


if __name__ == "__main__":
    sys.stdout.write("".join(f"{command}\n" for command in quickstart_commands(README.read_text(encoding="utf-8"))))
