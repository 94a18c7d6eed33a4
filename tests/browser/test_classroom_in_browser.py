"""The classroom under Voila in a real browser: the time to the first figure, and no kernel left by a reload.

``LAYERWISE_VOILA_BASELINE=1`` also times Voila without progressive rendering (the command before issue 34),
for docs/classroom.md; the timings go to ``tests/browser/screenshots/timings.txt``.
"""
from __future__ import annotations

import os
import time

import pytest

from analysis.classroom import descendants

from .pages import read_figure

TIMEOUT_S = 240.0


def kernels(server) -> list[int]:
    """The process ids of the kernels the Voila server runs (one per open page)."""
    found = []
    for pid in descendants(server.process.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"ipykernel" in cmdline.read():
                    found.append(pid)
        except OSError:
            pass
    return sorted(found)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


#: Text of the tour's last output (the adaptive attack's table, computed after the app's cell).
LAST_OUTPUT = "MA %  ASR %  TPR %"


def first_figure_s(page, server) -> tuple[float, float]:
    """Seconds from opening the page to the app's figure drawn on it, and to the notebook's last output shown."""
    started = time.monotonic()
    page.goto(server.url("/"), timeout=TIMEOUT_S * 1000, wait_until="commit")
    wait_until(lambda: read_figure(page), TIMEOUT_S, "the app's figure")
    figure = time.monotonic() - started
    wait_until(lambda: LAST_OUTPUT in page.inner_text("body"), TIMEOUT_S, "the notebook's last output")
    return figure, time.monotonic() - started


def record(screenshots, line: str) -> None:
    with open(screenshots / "timings.txt", "a") as out:
        out.write(line + "\n")
    print(line)


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="kernels found through /proc (Linux)")


def test_voila_shows_the_app_fast_and_a_reload_or_a_closed_page_leaves_no_kernel(start_voila, open_page, screenshots):
    server = start_voila()
    page, problems = open_page(server)
    first, last = first_figure_s(page, server)
    (kernel,) = wait_until(lambda: kernels(server), 60, "the page's kernel")
    started = time.monotonic()
    page.reload(wait_until="commit")
    wait_until(lambda: read_figure(page), TIMEOUT_S, "the app's figure after a reload")
    reloaded = time.monotonic() - started
    # the old page's kernel is shut down on unload (Voila refused that request with 403 before): one kernel left
    (new,) = wait_until(lambda: kernels(server) if kernel not in kernels(server) else None, 30,
                        "the reloaded page's old kernel to be shut down")
    page.goto("about:blank")  # leaving the page, as closing its tab does
    wait_until(lambda: not kernels(server), 30, "the closed page's kernel to be shut down")
    record(screenshots, f"voila first figure: {first:.1f} s, last output {last:.1f} s, after a reload {reloaded:.1f} s "
                        "(progressive rendering)")
    # the app is on screen while the notebook's later cells still run (before: all at once, after the last cell)
    assert first < last - 2.0, f"first figure after {first:.1f} s, last output after {last:.1f} s"
    assert not [e for e in problems.errors if "403" in e], problems.errors


@pytest.mark.skipif(os.environ.get("LAYERWISE_VOILA_BASELINE") != "1", reason="LAYERWISE_VOILA_BASELINE=1 times the old command")
def test_baseline_first_figure_without_progressive_rendering(start_voila, open_page, screenshots):
    server = start_voila(without=["--VoilaConfiguration.progressive_rendering=True"])
    page, _ = open_page(server)
    first, last = first_figure_s(page, server)
    record(screenshots, f"voila first figure: {first:.1f} s, last output {last:.1f} s (baseline: without progressive "
                        "rendering)")
