"""Serve a notebook as a Voila app for a classroom: ``python -m analysis classroom``.

Voila renders a notebook's outputs without its code, with live widgets. The toolkit ships a Voila
template, ``layerwise`` (``analysis/jupyter/voila/templates/layerwise``): Voila's ``lab`` template
without the two Font Awesome stylesheets that it links from a CDN, so that the page fetches nothing
from the internet and logs no console error on a machine without network (Voila's JavaScript
bundles Font Awesome already). :func:`voila_environment` makes Jupyter find the template;
:func:`voila_command` is the command line that serves a notebook with it, and :func:`serve` runs it
so that SIGTERM or Ctrl+C stops Voila and every kernel it started.

The command also lets a page's kernel be shut down when the page is left or reloaded: Voila's page
asks for that with a form field copied from an ``_xsrf`` cookie that Voila itself never sets, so the
request was refused (403, "_xsrf argument missing") and the kernel ran until the idle cull. The
command turns that check off (``disable_check_xsrf``). It protects cookie-authenticated requests;
Voila serves without any authentication, so anyone who reaches the port can already do whatever
the check would stop. And it renders progressively (``progressive_rendering``): the page and each
cell's output appear as the cells run, so the app is on screen before the notebook's last cells ran.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: The folder Jupyter searches for ``voila/templates/layerwise`` (prepended to ``JUPYTER_PATH``).
JUPYTER_DATA = Path(__file__).resolve().parent / "jupyter"
#: The template's name, as ``voila --template`` takes it.
TEMPLATE = "layerwise"
#: The notebook a class opens by default.
DEFAULT_NOTEBOOK = Path("notebooks") / "00_tour.ipynb"


def voila_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with :data:`JUPYTER_DATA` first in ``JUPYTER_PATH``."""
    env = dict(os.environ if base is None else base)
    paths = [str(JUPYTER_DATA)] + [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def voila_command(notebook: str | Path = DEFAULT_NOTEBOOK, port: int = 8866, ip: str = "127.0.0.1",
                  cull_idle_s: int = 600, extra: list[str] | None = None) -> list[str]:
    """The Voila command line serving ``notebook`` with the ``layerwise`` template.

    ``cull_idle_s``: seconds after which a visitor's idle kernel is shut down (Voila keeps one
    kernel per open page; 0 = never). ``extra``: further Voila options.
    """
    notebook = Path(notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise FileNotFoundError(f"notebook: expected an existing .ipynb file, got {str(notebook)!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an integer in 0..65535, got {port!r}")
    if isinstance(cull_idle_s, bool) or not isinstance(cull_idle_s, int) or cull_idle_s < 0:
        raise ValueError(f"cull_idle_s: expected an integer >= 0 (seconds), got {cull_idle_s!r}")
    command = [sys.executable, "-m", "voila", str(notebook), f"--template={TEMPLATE}", "--no-browser",
               f"--port={port}", f"--Voila.ip={ip}", "--Voila.tornado_settings", "disable_check_xsrf=True",
               "--VoilaConfiguration.progressive_rendering=True"]
    if cull_idle_s:
        command += [f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
                    "--MappingKernelManager.cull_interval=60"]
    return command + list(extra or [])


def descendants(pid: int) -> list[int]:
    """The process ids of every live descendant of ``pid`` (children, their children, ...), from ``/proc``.

    Empty where there is no ``/proc`` (not Linux).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile, or not readable
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (name) state": the parent's id
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _Stop(Exception):
    """Raised in :func:`serve` by SIGTERM or SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state[state.rindex(")") + 2] != "Z"  # a zombie has ended; only its exit status is left


def serve(command: list[str], env: dict[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run the server ``command`` until it exits, or until this process gets SIGTERM or SIGINT (Ctrl+C).

    On a signal the server gets SIGTERM (Voila then shuts its kernels down) and ``grace_s`` seconds
    to exit; whatever it started that still runs then (kernels included, found through ``/proc``
    before the server was stopped) is killed. Returns the server's exit status, or 128 + the
    signal's number. The server runs in its own session, so Ctrl+C reaches this process only
    (Voila would otherwise ask "Shutdown this Voila server (y/[n])?").
    """
    def stop(signum, frame):
        raise _Stop(signum)

    process = subprocess.Popen(command, env=env, start_new_session=True)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            return process.wait()
        except _Stop as signalled:
            for sig in previous:  # the cleanup below is bounded (2 x grace_s): a second Ctrl+C must not cut it short
                signal.signal(sig, signal.SIG_IGN)
            started = descendants(process.pid)
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            deadline = time.monotonic() + grace_s
            while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in started:
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            return 128 + signalled.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["DEFAULT_NOTEBOOK", "JUPYTER_DATA", "TEMPLATE", "descendants", "serve", "voila_command", "voila_environment"]
