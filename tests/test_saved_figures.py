"""A notebook run live and saved keeps a picture of every figure, and no object repr or widget dump in its outputs."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Text that must never be a saved output: a default object repr, a FigureWidget's (or any widget's) text dump.
JUNK = re.compile(r"<[\w.]+ (object )?at 0x[0-9a-fA-F]+>|^\s*FigureWidget\(|'bdata'")


def _texts(cell):
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            yield output.text
        else:
            yield output.get("data", {}).get("text/plain", "")


def _snapshot_cells(notebook):
    """The cells whose last line shows a snapshot: ``app.snapshot()`` or ``Snapshot(figure)``."""
    return [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()
            and re.fullmatch(r"\w+\.snapshot\(\)|Snapshot\(\w+\)", cell.source.strip().splitlines()[-1])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_keep_a_picture_and_no_object_dump(path):
    notebook = nbformat.read(path, as_version=4)
    assert "widgets" not in notebook.metadata  # committed without widget state
    for cell in notebook.cells:
        for text in _texts(cell):
            assert not JUNK.search(text), f"{path.name}: cell {cell.source[:60]!r} saved {text[:80]!r}"
    snapshots = _snapshot_cells(notebook)
    assert snapshots, f"{path.name}: no snapshot cell"
    for cell in snapshots:
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), f"{path.name}: snapshot without a picture"


LIVE = [
    "import ipywidgets as widgets, plotly.graph_objects as go\n"
    "from analysis.apps.base import App\n"
    "class Bars(App):\n"
    "    def __init__(self):\n"
    "        super().__init__({'height': widgets.IntSlider(value=3, min=0, max=9)})\n"
    "    def draw(self, height):\n"
    "        return go.Figure(go.Bar(y=[height]), layout=dict(title=f'height {height}')), f'height {height}'\n"
    "app = Bars()\n"
    "app",
    "app.set(height=5)\n"
    "app.snapshot()",
]


def test_a_notebook_run_live_and_saved_keeps_the_snapshot_as_a_png(tmp_path, monkeypatch):
    """As a student's Run All and save: a fresh kernel, no environment variable set, the file written and read back."""
    pytest.importorskip("kaleido", reason="PNG snapshots need kaleido (pip install -e '.[static]')")
    from nbclient import NotebookClient

    monkeypatch.delenv("LAYERWISE_SNAPSHOT_PNG", raising=False)
    path = tmp_path / "live.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in LIVE])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   store_widget_state=False).execute()
    nbformat.write(notebook, path)
    saved = nbformat.read(path, as_version=4)
    (snapshot,) = _snapshot_cells(saved)
    bundles = [out.data for out in snapshot.outputs if "data" in out]
    if bundles and "image/png" not in bundles[0] and "no static picture" in bundles[0].get("text/plain", ""):
        pytest.skip("plotly cannot render a PNG here (Chromium missing)")
    assert len(bundles) == 1 and bundles[0]["text/plain"] == "[figure: height 5]"
    assert bundles[0]["image/png"]  # base64 PNG, shown by GitHub, nbviewer and a reopened file
    for cell in saved.cells:
        for text in _texts(cell):
            assert not JUNK.search(text), text[:80]
