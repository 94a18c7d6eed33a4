"""Module boundaries: the apps do not import the batch layer, and no module imports another's private names.

The apps (``analysis/apps``) sit beside the batch layer, not on top of it: none imports it.

The batch layer is what ``python -m analysis reproduce`` runs: the experiment functions
(``analysis.experiments``), the runner (``analysis.reproduce``) and its backends (``analysis.backends``). A
computation that an app needs too (Table 5, the trigger's PSNR) lives in a lower module that both import.
Imports inside functions count as well: they run as soon as the app calls them.
"""
import ast
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parent.parent / "analysis" / "apps"
BATCH = ("analysis.experiments", "analysis.reproduce", "analysis.backends")


def _imported(path: Path) -> set[str]:
    """Every module that ``path`` (a module of ``analysis.apps``) imports, anywhere in it, as an absolute name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # analysis.apps.NAME: level 1 is analysis.apps, level 2 is analysis
            base = ["analysis", "apps"][: max(0, 3 - node.level)] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)  # from .. import experiments
    return found


def _batch_imports(path: Path) -> list[str]:
    return sorted(m for m in _imported(path) if any(m == b or m.startswith(b + ".") for b in BATCH))


@pytest.mark.parametrize("path", sorted(APPS.glob("*.py")), ids=lambda p: p.name)
def test_no_app_imports_the_batch_layer(path):
    assert _batch_imports(path) == [], f"{path.name} imports the batch layer; move what it needs below it"


def test_the_check_sees_relative_absolute_and_lazy_imports(tmp_path):
    for source in ("from ..experiments import trigger_psnr", "from .. import reproduce",
                   "import analysis.backends", "def f():\n    from analysis.experiments import table5_features\n"):
        path = tmp_path / "app.py"
        path.write_text(source)
        assert _batch_imports(path), source
    (tmp_path / "app.py").write_text("from ..metrics import trigger_psnr\nfrom .base import App\n")
    assert _batch_imports(tmp_path / "app.py") == []


PACKAGE = APPS.parent


def _private_imports(path: Path) -> list[str]:
    """``module.name`` for every private name (one leading underscore) that ``path`` imports from another module."""
    return sorted(f"{node.module or '.'}.{alias.name}"
                  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                  if isinstance(node, ast.ImportFrom) and node.module != "__future__"
                  for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__"))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_private_name_of_another(path):
    assert _private_imports(path) == [], (f"{path.relative_to(PACKAGE)} imports private names; make them public "
                                          "(numpydoc docstring) or move the code that needs them")


def test_the_private_name_check_sees_one_underscore_not_dunders(tmp_path):
    path = tmp_path / "module.py"
    path.write_text("from .comparison import _base, paper_key\nfrom __future__ import annotations\n"
                    "from .x import __version__\n")
    assert _private_imports(path) == ["comparison._base"]
