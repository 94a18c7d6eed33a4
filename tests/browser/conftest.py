"""Fixtures for the browser tests: JupyterLab and Voila on loopback, headless Chromium driven by Playwright.

The notebooks are copied into a temporary folder per session and served from there, so saving a
notebook in the browser (which stores widget state) never touches the committed ones. The servers
get temporary config, data, runtime, settings and workspace folders and a random token; the
browser is Debian's ``chromium`` (Playwright's own browser download is not used).

Without chromium or the ``playwright`` package the browser tests are skipped with a one-line
reason, except under ``CI=true``, where that is a failure.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from analysis.classroom import TEMPLATE, voila_environment

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
#: Chromium flags that keep a headless run local and quiet (no sync, no component or field-trial downloads).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: JupyterLab user settings for the test server: widget state saved with the notebook (so a reload after a
#: save restores the current widgets), and no news or update check (the page must not fetch from outside).
LAB_SETTINGS = {
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
SERVER_START_TIMEOUT = 120.0


def chromium_path() -> str | None:
    """Debian's chromium (``$CHROMIUM`` overrides), or None when it is not installed."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing() -> str | None:
    """Why the browser tests cannot run here (one line), or None when they can."""
    missing = []
    if chromium_path() is None:
        missing.append("chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append('playwright (pip install -e ".[test]")')
    try:
        import voila  # noqa: F401
    except ImportError:
        missing.append('voila (pip install -e ".[test]")')
    return f"browser tests need {' and '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def browser_tools() -> str:
    """The chromium executable; skips (or fails under ``CI=true``) when chromium or playwright is missing."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
        pytest.skip(reason)
    return chromium_path()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A Jupyter-family server process on loopback."""

    base: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path
    started_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def url(self, path: str, **query: str) -> str:
        query = {"token": self.token, **query}
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}" + "&".join(f"{k}={v}" if v != "" else k for k, v in query.items())

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _start(command: list[str], *, root: Path, env: dict, log: Path, port: int, token: str, ready_path: str) -> Server:
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", token, root, process, log)
    deadline = started + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2]} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            urllib.request.urlopen(server.url(ready_path), timeout=5).read()
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                _stop(process)
                raise RuntimeError(f"{command[2]} did not answer within {SERVER_START_TIMEOUT:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.5)
    server.started_s = time.monotonic() - started
    return server


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def served(tmp_path_factory, browser_tools) -> Path:
    """A temporary copy of ``notebooks/`` (without outputs folders or checkpoints): what the servers serve."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns("results", ".ipynb_checkpoints", "__pycache__"))
    return root


def _jupyter_env(base: Path) -> dict:
    """Environment with temporary Jupyter config/data/runtime/settings/workspace folders under ``base``."""
    folders = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
               "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JUPYTER_TOKEN", None)
    for name, folder in folders.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        env[name] = str(base / folder)
    for name, settings in LAB_SETTINGS.items():
        path = base / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return env


@pytest.fixture(scope="session")
def lab(tmp_path_factory, served) -> Server:
    """One JupyterLab server for the whole session, serving the temporary copy of the notebooks."""
    base = tmp_path_factory.mktemp("lab")
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={served}", "--LabApp.news_url=None", f"--VoilaConfiguration.template={TEMPLATE}"]
    server = _start(command, root=served, env=voila_environment(_jupyter_env(base)), log=base / "lab.log", port=port,
                    token=token, ready_path="/api/status")
    yield server
    _stop(server.process)


@pytest.fixture(scope="session")
def voila_server(tmp_path_factory, served) -> Server:
    """The classroom app as ``python -m analysis classroom`` serves it (Voila, template ``layerwise``), on loopback."""
    from analysis.classroom import voila_command

    base = tmp_path_factory.mktemp("voila")
    port, token = free_port(), secrets.token_hex(16)
    command = voila_command(served / "notebooks" / "00_tour.ipynb", port, "127.0.0.1", 0,
                            ["--Voila.port_retries=0", f"--Voila.token={token}"])
    server = _start(command, root=served, env=voila_environment(_jupyter_env(base)), log=base / "voila.log",
                    port=port, token=token, ready_path="/voila/static/voila.js")
    yield server
    _stop(server.process)


@pytest.fixture(scope="session")
def chromium(browser_tools):
    """Headless Debian chromium under Playwright, one for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_tools, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageProblems:
    """Console errors, uncaught page errors, failed requests and requests that leave loopback."""

    local_prefix: str
    errors: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)

    def _console(self, message) -> None:
        if message.type == "error":
            location = message.location or {}
            self.errors.append(f"console.error: {message.text} ({location.get('url', '')})")

    def _request(self, request) -> None:
        if not request.url.startswith((self.local_prefix, "data:", "blob:", "about:")):
            self.errors.append(f"request leaves the machine: {request.method} {request.url}")

    def _failed(self, request) -> None:
        failure = request.failure or ""
        # A request cut short by a navigation (page reload) is not an error of the page.
        if "ERR_ABORTED" not in failure:
            self.errors.append(f"request failed: {request.method} {request.url} ({failure})")


#: ``LAYERWISE_BROWSER_CPU_THROTTLE=6``: every page runs its JavaScript 6 times slower (Chromium's CPU throttling), as on
#: a slow laptop or a loaded Binder machine; unset or 1: full speed.
CPU_THROTTLE_ENV = "LAYERWISE_BROWSER_CPU_THROTTLE"


@pytest.fixture
def open_page(chromium):
    """``open_page(server)`` -> ``(page, problems)``: a fresh browser context watched for errors."""
    contexts = []

    def opener(server: Server):
        context = chromium.new_context(viewport={"width": 1280, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        throttle = float(os.environ.get(CPU_THROTTLE_ENV, "1") or 1)
        if throttle != 1:  # a slow laptop: Chromium runs its JavaScript this many times slower
            context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": throttle})
        problems = PageProblems(server.base)
        problems.watch(page)
        return page, problems

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def start_voila(tmp_path_factory, served):
    """``start_voila(extra=(), without=())`` -> a fresh Voila server on the tour, as ``python -m analysis classroom``
    serves it, plus the Voila options ``extra`` and less those in ``without``; every server started is stopped after
    the test."""
    from analysis.classroom import voila_command

    started = []

    def start(extra=(), without=()) -> Server:
        base = tmp_path_factory.mktemp("voila-fresh")
        port, token = free_port(), secrets.token_hex(16)
        command = voila_command(served / "notebooks" / "00_tour.ipynb", port, "127.0.0.1", 0,
                                ["--Voila.port_retries=0", f"--Voila.token={token}", *extra])
        missing = set(without) - set(command)
        assert not missing, f"not in the command: {sorted(missing)}"
        command = [part for part in command if part not in without]
        server = _start(command, root=served, env=voila_environment(_jupyter_env(base)), log=base / "voila.log",
                        port=port, token=token, ready_path="/voila/static/voila.js")
        started.append(server)
        return server

    yield start
    for server in started:
        _stop(server.process)
