"""No module of the package is over 450 lines (issue 32): a module that long does more than one job.

Modules still over the limit are listed in ``KNOWN`` with the issue that splits them. An entry goes once its
module is split (the second test fails until it does), so the list cannot hide a module that grows back.
"""
from pathlib import Path

LIMIT = 450
PACKAGE = Path(__file__).resolve().parents[1] / "analysis"
#: module (relative to ``analysis/``) -> the issue that splits it
KNOWN: dict[str, str] = {}


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_the_limit():
    over = {path.relative_to(PACKAGE).as_posix(): lines(path) for path in sorted(PACKAGE.rglob("*.py"))
            if lines(path) > LIMIT}
    unexpected = {name: count for name, count in over.items() if name not in KNOWN}
    assert not unexpected, f"modules over {LIMIT} lines (split them by job): {unexpected}"


def test_every_known_exception_is_still_over_the_limit():
    split = {name: lines(PACKAGE / name) if (PACKAGE / name).exists() else None for name in KNOWN
             if not (PACKAGE / name).exists() or lines(PACKAGE / name) <= LIMIT}
    assert not split, f"no longer over {LIMIT} lines (or gone), remove from KNOWN: {split}"
