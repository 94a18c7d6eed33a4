"""`python -m analysis classroom`: the Voila command line and the offline template it serves with."""
import os
import sys

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
