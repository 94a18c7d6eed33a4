"""The apps (``analysis/apps``) sit beside the batch layer, not on top of it: none imports it.

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
