"""Keep N processes busy for S seconds: load the machine on purpose, e.g. to try the browser tests under load.

    python tools/busy_cpu.py 3 200 & pytest tests/browser -k voila

(3 busy processes on this 2-core machine made anywidget's 2 s start-up deadline fire on every Voila render;
see ``ALLOWED_CONSOLE`` in ``tests/browser/test_notebooks_in_browser.py``.)
"""
from __future__ import annotations

import multiprocessing
import sys
import time


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tools/busy_cpu.py PROCESSES SECONDS", file=sys.stderr)
        return 2
    processes, seconds = int(argv[0]), float(argv[1])
    workers = [multiprocessing.Process(target=burn, args=(seconds,)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
