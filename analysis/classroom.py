"""Serve a notebook as a Voila app for a classroom: ``python -m analysis classroom``.

Voila renders a notebook's outputs without its code, with live widgets. The toolkit ships a Voila
template, ``layerwise`` (``analysis/jupyter/voila/templates/layerwise``): Voila's ``lab`` template
without the two Font Awesome stylesheets that it links from a CDN, so that the page fetches nothing
from the internet and logs no console error on a machine without network (Voila's JavaScript
bundles Font Awesome already). :func:`voila_environment` makes Jupyter find the template;
:func:`voila_command` is the command line that serves a notebook with it.
"""
from __future__ import annotations

import os
import sys
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
               f"--port={port}", f"--Voila.ip={ip}"]
    if cull_idle_s:
        command += [f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
                    "--MappingKernelManager.cull_interval=60"]
    return command + list(extra or [])


__all__ = ["DEFAULT_NOTEBOOK", "JUPYTER_DATA", "TEMPLATE", "voila_command", "voila_environment"]
