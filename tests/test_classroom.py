"""`python -m analysis classroom`: the Voila command line and the offline template it serves with."""
import os
import signal
import sys
import time

import pytest

from analysis.classroom import JUPYTER_DATA, TEMPLATE, voila_command, voila_environment


def test_the_template_extends_voilas_lab_template_and_drops_its_cdn_links():
    folder = JUPYTER_DATA / "voila" / "templates" / TEMPLATE
    assert (folder / "conf.json").read_text().strip() == '{"base_template": "lab"}'
    template = (folder / "index.html.j2").read_text()
    assert "extends 'lab/index.html.j2'" in template
    # each stylesheet link that Voila's lab template fetches from a CDN is removed by a replace filter
    from voila.paths import collect_template_paths

    lab_file = next(os.path.join(p, "index.html.j2") for p in collect_template_paths(["voila"], "lab")
                    if os.path.isfile(os.path.join(p, "index.html.j2")) and p.endswith("lab"))
    links = [line.strip() for line in open(lab_file) if "<link" in line and "https://" in line]
    assert links and all(f"replace('{link}', '')" in template for link in links)


def test_voila_finds_the_template_through_the_environment(monkeypatch):
    from voila.paths import collect_template_paths

    env = voila_environment({"JUPYTER_PATH": "/elsewhere", "HOME": os.environ.get("HOME", "/")})
    assert env["JUPYTER_PATH"].split(os.pathsep) == [str(JUPYTER_DATA), "/elsewhere"]
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    paths = collect_template_paths(["voila", "nbconvert"], TEMPLATE)
    assert paths[0] == str(JUPYTER_DATA / "voila" / "templates" / TEMPLATE)
    assert any(p.endswith(os.path.join("voila", "templates", "lab")) for p in paths)  # its base template


def test_voila_command(tmp_path):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text("{}")
    command = voila_command(notebook, 9000, cull_idle_s=300)
    assert command[:4] == [sys.executable, "-m", "voila", str(notebook)]
    assert "--template=layerwise" in command and "--port=9000" in command
    assert "--MappingKernelManager.cull_idle_timeout=300" in command
    assert not any("cull" in part for part in voila_command(notebook, cull_idle_s=0))
    with pytest.raises(FileNotFoundError, match="notebook"):
        voila_command(tmp_path / "missing.ipynb")
    with pytest.raises(ValueError, match="port"):
        voila_command(notebook, port=-1)
    with pytest.raises(ValueError, match="cull_idle_s"):
        voila_command(notebook, cull_idle_s=-5)


def test_voila_command_lets_a_left_page_shut_its_kernel_down_and_renders_progressively(tmp_path):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text("{}")
    command = voila_command(notebook)
    # the page's shutdown request carries no _xsrf cookie (Voila never sets it): without this, 403 and a kernel left behind
    assert command[command.index("--Voila.tornado_settings") + 1] == "disable_check_xsrf=True"
    assert "--VoilaConfiguration.progressive_rendering=True" in command


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="process tree read from /proc (Linux)")


@needs_proc
def test_descendants_finds_children_and_grandchildren():
    import subprocess

    from analysis.classroom import descendants

    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        for _ in range(50):
            found = descendants(shell.pid)
            if len(found) == 2:
                break
            time.sleep(0.1)
        assert len(found) == 2 and all(open(f"/proc/{pid}/cmdline").read().startswith("sleep") for pid in found)
        assert descendants(os.getpid()) and shell.pid in descendants(os.getpid())
    finally:
        shell.kill()
        shell.wait()
        for pid in found:
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl+C"])
def test_stopping_classroom_stops_voila_and_every_kernel_it_started(tmp_path, signum):
    """``python -m analysis classroom`` with a visitor's kernel running, then SIGTERM or SIGINT: no child survives."""
    import subprocess
    import urllib.request

    import nbformat

    from analysis.classroom import _alive, descendants

    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), notebook)
    port = _port()
    cli = subprocess.Popen([sys.executable, "-m", "analysis", "classroom", str(notebook), "--port", str(port)],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        page = None
        while page is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, "Voila did not answer within 120 s"
        kernels = []
        while not kernels and time.monotonic() < deadline:  # the visitor's kernel
            kernels = [pid for pid in descendants(cli.pid) if b"ipykernel" in open(f"/proc/{pid}/cmdline", "rb").read()]
            time.sleep(0.2)
        assert kernels, "no kernel started for the page"
        started = descendants(cli.pid)
        cli.send_signal(signum)
        assert cli.wait(timeout=60) == 128 + signum
        left = [pid for pid in started if _alive(pid)]
        assert left == [], f"still running after the classroom stopped: {left}"
    finally:
        if cli.poll() is None:
            cli.kill()
