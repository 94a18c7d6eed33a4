"""Every notebook in a real browser (JupyterLab, headless Chromium), and the classroom notebook under Voila.

For each notebook tested (:data:`MOVES`; which ones: :func:`notebooks_to_test`): open it in
JupyterLab, Run All, wait for its app's figure, move each control listed for it and check that the
figure (its data, shapes or titles) and, where the control should change it, the readout change;
save, reload the page and check that the figure shows the state from just before the reload (not
the figure the app was built with); move the last control back after the reload and check that the
figure follows; and check that the page logged no JavaScript error and fetched nothing from
outside the machine. A screenshot of each app is written to ``tests/browser/screenshots/``, with
the seconds of each phase in ``timings.txt``.

nbval runs the same notebooks' kernels but renders no widget; these tests catch a FigureWidget that
shows stale data after a reload, a control that moves nothing and a JavaScript error in the page.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, Server
from .pages import APP, move_control, wait_for_figure

#: Per notebook, the controls moved in the browser, in order: ``(label, readout_changes)``. Each move must
#: change the figure; ``readout_changes`` says whether the readout must change too (False where the readout
#: describes the model, not the control: e.g. the class whose curves are drawn). The last control is moved
#: back after the reload, so it is one whose move has no side effect on other controls (a slider or toggle).
MOVES = {
    "00_tour.ipynb": [("architecture", True), ("attack", True), ("τ", True)],
    "01_layerwise_cosine.ipynb": [("architecture", True), ("attack", True), ("class", False), ("layer", False), ("τ", True)],
    "02_pca.ipynb": [("architecture", False), ("attack", True), ("PCA fitted on", True), ("layer", True)],
    "03_attacks.ipynb": [("architecture", False), ("attack", True), ("image", True), ("difference ×", False)],
    "04_threshold.ipynb": [("architecture", True), ("metric", True), ("τ", True)],
    "05_score_distributions.ipynb": [("architecture", True), ("attack", True), ("τ", True)],
    "06_defenses.ipynb": [("architecture", False), ("detector", True), ("committed", False), ("attack", True)],
    "07_poisoning_rate.ipynb": [("poisoning rate", True)],
    "08_single_layers.ipynb": [("architecture", True), ("attack", True), ("τ", True)],
    "09_adaptive.ipynb": [("architecture", False), ("β", True)],
    "10_stability.ipynb": [("architecture", False), ("τ", True), ("reference redraws", True)],
    "11_runtime.ipynb": [("architecture", False), ("repeats (median)", True)],
    "12_your_model.ipynb": [("class", False), ("layer", False), ("τ", True)],
}
#: ``LAYERWISE_BROWSER=few``: one notebook per family of apps, for a quicker local run. A plain ``pytest`` (and CI)
#: opens every notebook; run in parallel (``pytest -n 2``) the whole suite stays under CI's 20 minutes on 2 cores
#: (README, "In a browser: JupyterLab, Binder and Voila").
FEW_NOTEBOOKS = ("00_tour.ipynb", "01_layerwise_cosine.ipynb", "06_defenses.ipynb", "12_your_model.ipynb")
VOILA_NOTEBOOK = "00_tour.ipynb"


def notebooks_to_test() -> list[str]:
    """Every notebook (:data:`MOVES`), or :data:`FEW_NOTEBOOKS` with ``LAYERWISE_BROWSER=few``."""
    choice = os.environ.get("LAYERWISE_BROWSER", "all")
    if choice not in ("all", "few"):
        raise ValueError(f"LAYERWISE_BROWSER: expected 'all' or 'few', got {choice!r}")
    return sorted(MOVES) if choice == "all" else list(FEW_NOTEBOOKS)


def test_every_notebook_has_moves_listed():
    """A new notebook must say which of its controls the browser test moves."""
    on_disk = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(MOVES), "notebooks/ and MOVES differ: list the new notebook's controls in MOVES"
    assert set(FEW_NOTEBOOKS) <= set(MOVES) and VOILA_NOTEBOOK in MOVES
#: Console messages that are not errors of this project and cannot be avoided, with the reason.
#: JupyterLab and Voila as served by the fixtures log no other error.
ALLOWED_CONSOLE = {
    r"^pageerror: \[anywidget\] Failed to initialize model\.$": (
        "anywidget (0.9-0.11) rejects a model's readiness when the widget's JavaScript has not initialised within a "
        "hard-coded 2 s (AbortSignal.timeout(2000) in its runtime) and then drops every message to that model. "
        "plotly's FigureWidget module is 5 MB; its figure arrived in such messages, so a slow page showed an empty, "
        "dead figure (a CI run: no traces, no title, before and after a move). The apps' LiveFigure "
        "(analysis/apps/live_figure.py) opens its comm with the whole figure and initialises a few-line loader at "
        "once; under a CPU hog (python tools/busy_cpu.py 3 200, on 2 cores) the message no longer appeared. It is "
        "still allowed because the deadline is the browser's wall clock: a page starved long enough can miss it "
        "even so. Every test asserts after it that the figure shows the app's state and follows the controls."),
}
RUN_ALL_TIMEOUT = 420.0  # notebook 06 ran all in 65 s alone on 2 cores before its 1 % FPR ROC cell (four detectors
# on every benign evaluation input, about a minute more), 95 s in a loaded CI run, over 150 s beside a 2-thread job
MOVE_TIMEOUT = 240.0


def _allowed(message: str) -> bool:
    return any(re.search(pattern, message) for pattern in ALLOWED_CONSOLE)


def _record(screenshots: Path, name: str, phases: dict[str, float]) -> None:
    """Append one line of phase timings to ``screenshots/timings.txt`` (kept by CI with the screenshots)."""
    line = f"{name}: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in phases.items())
    with open(screenshots / "timings.txt", "a") as out:
        out.write(line + "\n")
    print(line)


def _session(server: Server, path: str) -> dict | None:
    sessions = [s for s in server.api("/api/sessions") if s.get("path") == path]
    return sessions[0] if sessions else None


def wait_for_stable_kernel(server: Server, path: str, *, stable_s: float = 3.0, timeout: float = 120.0) -> str:
    """The id of the notebook's kernel once it has stayed the same for ``stable_s`` seconds.

    JupyterLab sometimes starts a kernel and replaces it at once; cells run on the first one are lost.
    """
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            session = _session(server, path)
            kernel = session["kernel"]["id"] if session and session.get("kernel") else None
        except (OSError, ValueError):  # the server answers 500 while the kernel starts
            kernel = None
        if kernel != last:
            last, since = kernel, time.monotonic()
        elif kernel and time.monotonic() - since >= stable_s:
            return kernel
        time.sleep(0.3)
    raise AssertionError(f"no stable kernel for {path} within {timeout:.0f} s:\n{server.log_tail()}")


def run_all(page) -> None:
    """Run > Run All Cells, from the menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_for_run_all(page, server: Server, kernel: str, code_cells: int) -> None:
    """Until every code cell shows an execution count and the kernel is idle (stable for 1 s)."""
    deadline = time.monotonic() + RUN_ALL_TIMEOUT
    since = None
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
        done = sum(bool(re.fullmatch(r"\s*\[\d+\]:\s*", p)) for p in prompts)
        state = server.api(f"/api/kernels/{kernel}").get("execution_state")
        if done == code_cells and state == "idle":
            since = since or time.monotonic()
            if time.monotonic() - since >= 1.0:
                return
        else:
            since = None
        page.wait_for_timeout(300)
    raise AssertionError(f"Run All did not finish within {RUN_ALL_TIMEOUT:.0f} s ({done}/{code_cells} cells run, "
                         f"kernel {state}; prompts {prompts})")


def save(page, path: Path, timeout: float = 30.0) -> int:
    """Ctrl+S in the notebook; waits until the file on disk holds widget state. Returns the number of widget models."""
    page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # being written
            saved = {}
        state = saved.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        dirty = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count()
        if state.get("state") and not dirty:
            return len(state["state"])
        page.wait_for_timeout(300)
    raise AssertionError(f"{path.name}: no widget state saved within {timeout:.0f} s (is saveState on?)")


def move_each_control(page, notebook: str, figure):
    """Move the controls of ``MOVES[notebook]`` in turn; each must change the figure (and the readout, where listed).

    Returns ``(before, after, label, move)`` of the last move: the figures around it, its control and the move.
    """
    for label, readout_changes in MOVES[notebook]:
        before = figure
        move = move_control(page, label)
        # 240 s: a move of notebook 06 refits eight detectors live (13 s for its 3 moves on this machine alone,
        # over 60 s while another job held both cores), and notebook 10's architecture switch reruns its five
        # redraws (76 s alone, over 120 s on one thread beside a second pytest worker and another job);
        # a dead control still fails, only later
        figure = wait_for_figure(page, until=lambda f, b=before: f != b and (f.readout != b.readout or not readout_changes),
                                 timeout=MOVE_TIMEOUT, what=f"the figure to change after moving {move}")
        assert figure.state != before.state, f"{notebook}: moving {move} left the figure unchanged"
        if readout_changes:
            assert figure.readout != before.readout, f"{notebook}: moving {move} left the readout unchanged"
    return before, figure, label, move


def assert_no_page_problems(problems) -> None:
    errors = [e for e in problems.errors if not _allowed(e)]
    assert not errors, "the page logged errors or left the machine:\n" + "\n".join(errors)


@pytest.mark.parametrize("notebook", notebooks_to_test())
def test_notebook_in_jupyterlab(notebook, lab, served, open_page, screenshots):
    path = f"notebooks/{notebook}"
    code_cells = sum(c["cell_type"] == "code" for c in json.loads((served / path).read_text())["cells"])
    page, problems = open_page(lab)
    phases, started = {}, time.monotonic()

    def phase(name):
        nonlocal started
        phases[name] = time.monotonic() - started
        started = time.monotonic()

    try:
        page.goto(lab.url(f"/lab/tree/{path}", reset=""))
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
        kernel = wait_for_stable_kernel(lab, path)
        phase("open")
        run_all(page)
        wait_for_run_all(page, lab, kernel, code_cells)
        phase("run all")
        errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
        assert errors.count() == 0, f"{notebook}: a cell raised:\n{errors.first.inner_text()[-2000:]}"
        assert page.locator(APP).count() == 1, f"{notebook}: expected one app (a VBox with a plotly figure)"
        figure = wait_for_figure(page, what=f"{notebook}'s app after Run All")
        assert figure.traces, f"{notebook}: the app's figure is empty after Run All (its state never reached the page)"

        before, figure, label, move = move_each_control(page, notebook, figure)
        phase(f"{len(MOVES[notebook])} moves")

        models = save(page, served / path)
        page.reload()
        reloaded = wait_for_figure(page, until=lambda f: f == figure, timeout=60,
                                   what=f"the figure after the reload to show the state before it ({move})")
        phase("save+reload")
        # After the reload the widgets must still follow the controls: moving the last control back restores
        # the figure from before that move.
        move_control(page, label, back=move)
        wait_for_figure(page, until=lambda f: f == before,
                        what=f"the figure to follow the control after the reload (moving back: {move})")
        phase("move back")
        page.locator(APP).first.screenshot(path=screenshots / f"lab-{Path(notebook).stem}.png")
        assert reloaded == figure
        assert_no_page_problems(problems)
        assert models > 3, f"{notebook}: only {models} widget models saved"
    except BaseException:
        page.screenshot(path=screenshots / f"FAILED-lab-{Path(notebook).stem}.png")
        raise
    finally:
        try:
            session = _session(lab, path)
            if session:
                lab.api(f"/api/sessions/{session['id']}", method="DELETE")
        except OSError:
            pass
        _record(screenshots, f"lab {notebook}", phases)


def test_tour_in_voila(voila_server, open_page, screenshots):
    page, problems = open_page(voila_server)
    phases, started = {}, time.monotonic()
    page.goto(voila_server.url("/"), timeout=RUN_ALL_TIMEOUT * 1000)
    figure = wait_for_figure(page, timeout=RUN_ALL_TIMEOUT, settle=2.0, what="the Voila app")
    phases["render"] = time.monotonic() - started
    assert page.locator(APP).count() == 1
    assert not page.locator(".jp-CodeCell .jp-InputArea").count(), "Voila shows code cells"
    before, figure, label, move = move_each_control(page, VOILA_NOTEBOOK, figure)
    move_control(page, label, back=move)
    wait_for_figure(page, until=lambda f: f == before, what=f"the figure to follow moving back ({move})")
    phases["total"] = time.monotonic() - started
    page.locator(APP).first.screenshot(path=screenshots / f"voila-{Path(VOILA_NOTEBOOK).stem}.png")
    _record(screenshots, f"voila {VOILA_NOTEBOOK}", phases)
    assert_no_page_problems(problems)


def test_voila_route_of_the_binder_link(lab):
    """Binder's ``?urlpath=voila/render/...`` needs Voila's server extension in JupyterLab: it serves Voila's pages."""
    with urllib.request.urlopen(lab.url("/voila/tree/notebooks"), timeout=30) as response:
        assert response.status == 200
        assert "voila-tree-main" in response.read().decode("utf-8", "replace")
