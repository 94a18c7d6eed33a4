"""The install paths agree: pyproject.toml (pip), requirements/lock.txt, environment.yml (conda), binder/ (Binder), .ci/run (CI).

conda cannot be run here, so these files are compared as text: the same packages with the
same version bounds, ``torch`` being ``pytorch-cpu`` on conda-forge.
"""
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PIP_TO_CONDA = {"torch": "pytorch-cpu"}
CONDA_ONLY = {"python", "pip"}


def _spec(requirement: str) -> tuple[str, str]:
    """``"Name >= 1.0"`` -> ``("name", ">=1.0")`` (no extras or markers are used in this project)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert match and not re.search(r"[\[;]", requirement), f"unexpected requirement syntax: {requirement!r}"
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    specs = dict(_spec(r) for r in requirements)
    assert len(specs) == len(requirements), "a package is listed twice in pyproject.toml"
    return {PIP_TO_CONDA.get(name, name): version for name, version in specs.items()}


def _environment(path: Path) -> tuple[dict[str, str], list[str]]:
    """The conda packages (name -> version bound) and pip lines of an environment file.

    A minimal reader for the layout these files use: a top-level ``dependencies:`` list of
    ``- name<bound>`` items and at most one ``- pip:`` item with its own list.
    """
    conda, pip, section = {}, [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            section = line.split(":")[0]
            continue
        item = re.fullmatch(r"(\s*)- (.+?)\s*", line)
        if section != "dependencies" or not item:
            continue
        if item.group(2) == "pip:":
            continue
        if len(item.group(1)) > 2:
            pip.append(item.group(2))
        else:
            name, version = _spec(item.group(2).replace("=", "==", 1) if re.match(r"^[\w.\-]+=[^=]", item.group(2))
                                  else item.group(2))
            assert name not in conda, f"{path}: {name} listed twice"
            conda[name] = version
    return conda, pip


@pytest.mark.parametrize("relative", ["environment.yml", "binder/environment.yml"])
def test_conda_environment_lists_the_pyproject_dependencies(relative):
    conda, _ = _environment(ROOT / relative)
    assert {k: v for k, v in conda.items() if k not in CONDA_ONLY} == _pyproject_requirements()
    assert set(conda) >= CONDA_ONLY


@pytest.mark.parametrize("relative", ["environment.yml", "binder/environment.yml"])
def test_conda_environment_uses_conda_forge_only_and_a_supported_python(relative):
    text = (ROOT / relative).read_text(encoding="utf-8")
    channels = re.search(r"^channels:\n((?:\s+- .+\n)+)", text, re.M)
    assert channels and [c.strip()[2:] for c in channels.group(1).splitlines()] == ["conda-forge"]
    python = _environment(ROOT / relative)[0]["python"]
    required = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert python.startswith("==") and required.startswith(">=")
    as_tuple = lambda version: tuple(int(p) for p in version.split("."))  # noqa: E731
    assert as_tuple(python[2:]) >= as_tuple(required[2:])


def test_root_environment_installs_the_package_and_binder_leaves_it_to_postbuild():
    assert _environment(ROOT / "environment.yml")[1] == ["-e ."]
    assert _environment(ROOT / "binder/environment.yml")[1] == []  # binder/ paths are not the repository root


def test_binder_postbuild_installs_the_package_without_dependencies():
    lines = [line.strip() for line in (ROOT / "binder/postBuild").read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[0] == "set -e"
    installs = [line.split() for line in commands if line.startswith("pip")]
    assert len(installs) == 1
    assert installs[0][:2] == ["pip", "install"] and "--no-deps" in installs[0] and installs[0][-2:] == ["-e", "."]


def test_ci_runs_the_readme_quickstart_verbatim_in_a_fresh_virtualenv():
    """``.ci/run`` makes a new venv and runs what ``tools/quickstart.py`` reads from the README, nothing else."""
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert any(re.fullmatch(r'python3 -m venv "\$VENV"', line) for line in commands)
    assert 'source "$VENV/bin/activate"' in commands
    assert "mapfile -t QUICKSTART < <(python3 tools/quickstart.py)" in commands
    # no other install or test command: what runs is exactly the README's
    assert not [line for line in commands if re.search(r"\b(pip|pytest)\b", line)]


def test_the_quickstart_is_the_demo_then_the_whole_suite_on_two_workers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "tools" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    commands = quickstart.quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    # two workers: the two cores CI has; the cluster extra (Ray) so that tests/test_ray_backend.py runs, not skips
    assert commands == ["pip install -e . && python -m analysis demo", 'pip install -e ".[test,cluster]" && pytest -n 2']
    with pytest.raises(ValueError, match="one-line bash blocks"):
        quickstart.quickstart_commands("## Quickstart\n```bash\npip install a\npip install b\n```\n## Next\n")


def _locked() -> dict[str, str]:
    lines = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split(";")[0].strip() for line in lines if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", pin) for pin in pins), "the lock holds == pins only"
    return {pin.split("==")[0].lower().replace("_", "-"): pin.split("==")[1] for pin in pins}


def test_the_lock_pins_every_requirement_inside_its_range():
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    locked = _locked()
    for requirement in project["dependencies"] + extras["test"] + extras["cluster"]:
        name, bound = _spec(requirement)
        assert name in locked, f"requirements/lock.txt lacks {name}"
        assert locked[name] in SpecifierSet(bound), f"lock has {name}=={locked[name]}, outside {bound}"


@pytest.mark.parametrize("relative", ["environment.yml", "binder/environment.yml"])
def test_the_lock_satisfies_the_conda_environments(relative):
    from packaging.specifiers import SpecifierSet

    locked = {PIP_TO_CONDA.get(name, name): version for name, version in _locked().items()}
    conda, _ = _environment(ROOT / relative)
    for name, bound in conda.items():
        if name not in CONDA_ONLY:
            assert locked[name] in SpecifierSet(bound), f"{relative}: {name}{bound} excludes the lock's {locked[name]}"


def test_the_lock_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -r requirements/lock.txt && pip install --no-deps -e ." in readme


def test_every_public_module_declares_what_it_exports():
    """``__all__`` lists each module's public API, and every name in it exists (a renamed function fails here)."""
    import importlib
    import pkgutil

    import analysis

    for info in pkgutil.iter_modules(analysis.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"analysis.{info.name}")
        assert hasattr(module, "__all__"), f"analysis.{info.name} has no __all__"
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"analysis.{info.name}.__all__ names {missing}, which it does not define"
