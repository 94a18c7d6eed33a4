"""``reproduce --backend ray``: the same files as the local backend, resumes, plans models without training.

Needs the ``cluster`` extra (``pip install -e ".[cluster]"``, which the README's test command and CI install);
the whole file is skipped without Ray.
"""
import functools
import inspect
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray")

from analysis import backends, experiments, model_plan, reproduce as rep  # noqa: E402
from analysis.cli import main  # noqa: E402
from analysis.data import DatasetSplits  # noqa: E402
from analysis.experiment_registry import EXPERIMENTS  # noqa: E402
from analysis.study import default_attacks  # noqa: E402

ONLY = ["table3", "tables12"]
SETTINGS = dict(only=ONLY, archs=["resnet18"], runs=1, progress=False, epochs=1, attacks=["badnets", "blended"],
                max_eval=10, defense_samples=2)


def _timing(column: str) -> bool:
    """Columns that measure time (they differ between any two runs)."""
    return "seconds" in column or column.endswith("_s")


@pytest.fixture(scope="module")
def tiny(digits):
    train, test = np.arange(0, len(digits.train), 9), np.arange(0, len(digits.test), 3)  # 120 and 180 images
    return DatasetSplits("digits", digits.train.subset(train), digits.reference, digits.test.subset(test), 10)


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny):
    """The same tiny run with each backend (epochs=1: trained into the folders, not taken from the zoo).

    Tables 1/2 run three detectors (ours and the two randomised ones, seeded per run) instead of all
    thirteen, to keep the test short; the Ray backend runs the driver's function, so the partial travels.
    """
    torch.set_num_threads(2)
    local, on_ray = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    few = functools.partial(experiments.tables12_detection, defenses=("layerwise", "rs", "strip"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(rep.EXPERIMENTS, "tables12", rep.EXPERIMENTS["tables12"].using(few))
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no usage report attempted from a test
        # Ray starts its workers at niceness 15: beside the other pytest-xdist worker they got a fraction of a
        # core and this fixture took minutes (it looked hung in CI); at 0 they share the CPU fairly
        patch.setenv("RAY_worker_niceness", "0")
        rep.reproduce(tiny, local, **SETTINGS)
        ray.init(num_cpus=2, include_dashboard=False)  # reproduce uses a Ray this process started, and leaves it
        try:
            rep.reproduce(tiny, on_ray, backend="ray", **SETTINGS)
            assert ray.is_initialized()
            FAILED.update(_failing_task(tiny, on_ray / "models"))
        finally:
            ray.shutdown()
    return local, on_ray


FAILED: dict = {}


def _failing_task(tiny, models_dir) -> dict:
    """An experiment task that raises (an unknown detector), its models cached already: what the driver reports."""
    study = experiments.Study(tiny, archs=("resnet18",), models_dir=models_dir, epochs=1, progress=False)
    study.attacks = ("badnets",)
    recorded = []
    broken = functools.partial(experiments.tables12_detection, defenses=("nope",))
    try:
        backends.run_on_ray(study, ["tables12"], lambda *args: recorded.append(args), functions={"tables12": broken},
                            progress=False)
    except Exception as error:  # noqa: BLE001 - the test below looks at it
        return {"error": error, "recorded": recorded}
    return {"error": None, "recorded": recorded}


def test_ray_writes_the_local_backends_tables(both):
    local, on_ray = both
    for name in ONLY:
        a, b = pd.read_csv(local / f"{name}.csv"), pd.read_csv(on_ray / f"{name}.csv")
        assert list(a.columns) == list(b.columns)
        timing = [c for c in a.columns if _timing(c)]
        assert timing  # train_s, seconds: measured, so left out of the comparison
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    done = [json.loads((folder / rep.PROGRESS).read_text()) for folder in (local, on_ray)]
    assert list(done[0]["done"]) == list(done[1]["done"]) == ONLY
    assert done[0]["settings"] == done[1]["settings"]  # so either backend resumes the other's folder
    assert [done[0]["done"][n]["figures"] for n in ONLY] == [done[1]["done"][n]["figures"] for n in ONLY]
    assert sorted(p.name for p in local.glob("*.html")) == sorted(p.name for p in on_ray.glob("*.html"))
    assert "| resnet18 | blended |" in (on_ray / "REPORT.md").read_text()


def test_ray_trains_each_planned_model_once_with_the_same_bytes(both, tiny):
    local, on_ray = both
    manifests = [json.loads((folder / "models" / "manifest.json").read_text())["entries"] for folder in both]
    planned = [m.name for m in model_plan.plan_models(ONLY, "digits", ["resnet18"], ["badnets", "blended"])]
    assert sorted(manifests[0]) == sorted(manifests[1]) == sorted(planned)  # the plan is what the local run loads
    # same thread count, same seed: bit-identical weights whichever backend trained them
    assert {n: e["sha256"] for n, e in manifests[0].items()} == {n: e["sha256"] for n, e in manifests[1].items()}
    assert not (on_ray / "models" / backends.STAGING).exists()  # every staged checkpoint was adopted
    study = experiments.Study(tiny, archs=("resnet18",), models_dir=on_ray / "models", epochs=1, progress=False)
    study.attacks = ("badnets", "blended")
    specs = model_plan.plan_models(ONLY, "digits", study.archs, study.attacks)
    assert backends.models_to_train(study, specs) == []  # cached: a rerun trains nothing


def test_a_second_ray_run_does_no_work(both, tiny, monkeypatch):
    _, on_ray = both

    def refuse(*args, **kwargs):
        raise AssertionError("a finished folder started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "remote", refuse)
    before = {p.name: p.stat().st_mtime_ns for p in on_ray.glob("*.csv")}
    progress = (on_ray / rep.PROGRESS).read_text()
    rep.reproduce(tiny, on_ray, backend="ray", **SETTINGS)
    assert {p.name: p.stat().st_mtime_ns for p in on_ray.glob("*.csv")} == before
    assert (on_ray / rep.PROGRESS).read_text() == progress


def test_a_failed_task_raises_its_own_error_in_the_driver(both):
    assert isinstance(FAILED["error"], ValueError)  # what the local backend raises: the CLI makes it one line
    assert "unknown detector 'nope'" in str(FAILED["error"])
    assert FAILED["recorded"] == []  # nothing written for it: a rerun runs it again


def test_a_task_never_trains_a_model_the_plan_missed(tmp_path, tiny):
    study = backends._TaskStudy(tiny, archs=("resnet18",), models_dir=tmp_path, epochs=1, progress=False,
                                experiment="table3")
    with pytest.raises(RuntimeError, match=r"needs model 'digits-resnet18-badnets'.*EXPERIMENTS\['table3'\]\.models"):
        study.model("resnet18", "badnets")
    with pytest.raises(RuntimeError, match="needs model 'digits-resnet18-clean'"):
        study.clean("resnet18")
    assert not (tmp_path / "manifest.json").exists()


def test_every_registered_experiment_resolves_and_plans_its_models():
    """The one registry: every entry has a function, a title and a plan that the Ray backend can read."""
    archs, attacks = ("resnet18", "mobilenetv2"), tuple(default_attacks())
    for name, entry in EXPERIMENTS.items():
        assert callable(entry.resolve()) and entry.title
        for study_attacks in (attacks, ("badnets",), ("blended", "lc"), ("toy",)):
            specs = model_plan.experiment_models(name, "digits", archs, study_attacks)
            assert {spec.arch for spec in specs} <= set(archs)
            # an experiment loads the study's attacks, the clean model, or the fixed attack of its own table
            assert {spec.attack for spec in specs} <= {*study_attacks, "clean", "badnets", "adaptive"}, name
            assert len({spec.name for spec in specs}) == len(specs), name  # each model once


def test_the_attack_rules_that_experiments_and_their_plans_share():
    """Each rule is written once (analysis.model_plan); the experiment and its registry entry both call it."""
    attacks = list(default_attacks())
    assert model_plan.every_attack(attacks) == attacks
    assert model_plan.fig1_attacks(attacks) == ["badnets", "blended"] and model_plan.fig1_attacks(["lc"]) == []
    assert model_plan.wanet_and_iad(attacks) == ["wanet", "iad"] and model_plan.wanet_and_iad(["badnets"]) == []
    assert model_plan.iad_else_badnets(attacks) == ["iad"] and model_plan.iad_else_badnets(["blended"]) == ["badnets"]
    assert model_plan.badnets_and_wanet_else_first(attacks) == ["badnets", "wanet"]
    assert model_plan.badnets_and_wanet_else_first(["blended", "lc"]) == ["blended"]
    assert model_plan.lc_and_badnets_else_first(attacks) == ["lc", "badnets"]  # LC, else BadNets: both planned
    assert model_plan.badnets_only(["blended"]) == ["badnets"]


def test_the_plans_read_their_settings_from_the_experiment_and_the_study():
    """Table 4's rates are its function's default; Table 7's betas the study's; runs neither Ray nor training."""
    archs, attacks = ["resnet18", "mobilenetv2"], list(default_attacks())
    rates = inspect.signature(experiments.table4_rates).parameters["rates"].default
    table4 = model_plan.experiment_models("table4", "digits", archs, attacks)
    assert [m.settings for m in table4] == [{"rate": r} for r in rates] and {m.arch for m in table4} == {"resnet18"}
    assert "digits-resnet18-badnets" in [m.name for m in table4]  # 5 %: the plain BadNets checkpoint
    table7 = model_plan.experiment_models("table7", "digits", archs, attacks, betas=(0.5,))
    assert [(m.name, m.settings) for m in table7] == [(f"digits-{arch}-adaptive-b0.5", {"beta": 0.5}) for arch in archs]
    plan = model_plan.plan_models(["table3", "tables12", "curves"], "digits", archs, attacks)
    assert [m.name for m in plan] == [m.name for m in model_plan.experiment_models("table3", "digits", archs, attacks)]
    with pytest.raises(ValueError, match=r"experiment: no experiment 'table99' in .*EXPERIMENTS"):
        model_plan.plan_models(["table99"], "digits", archs, attacks)


def test_connect_starts_a_local_ray_only_when_none_runs():
    class FakeRay:
        def __init__(self, initialized):
            self.initialized, self.calls = initialized, []

        def is_initialized(self):
            return self.initialized

        def init(self, **kwargs):
            self.calls.append(kwargs)
            if kwargs.get("address") == "nowhere:6379":
                raise ConnectionError("could not connect")

    fresh = FakeRay(False)
    assert backends._connect(fresh, None) is True  # started here: shut down at the end
    assert fresh.calls == [{"include_dashboard": False}]  # no runtime_env: workers import the installed package
    assert backends._connect(FakeRay(False), "auto") is True
    running = FakeRay(True)
    assert backends._connect(running, None) is False and running.calls == []
    with pytest.raises(ValueError, match="address: Ray is already initialised"):
        backends._connect(running, "ray://head:10001")
    with pytest.raises(ValueError, match="address: no Ray cluster could be reached at 'nowhere:6379'"):
        backends._connect(FakeRay(False), "nowhere:6379")


def test_bad_backend_arguments(tmp_path, tiny):
    with pytest.raises(ValueError, match=r"backend: expected one of \['local', 'ray'\], got 'spark'"):
        rep.reproduce(tiny, tmp_path, backend="spark")
    with pytest.raises(ValueError, match="address: only used with backend='ray'"):
        rep.reproduce(tiny, tmp_path, address="auto")
    with pytest.raises(ValueError, match="gpus_per_task: expected a number >= 0, got -1"):
        rep.reproduce(tiny, tmp_path, backend="ray", gpus_per_task=-1)
    assert not (tmp_path / rep.PROGRESS).exists()


def _refuse_to_run(*args, **kwargs):
    raise AssertionError("the command started its work despite a bad argument")


def test_cli_backend_ray_without_ray_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError, as without the extra
    monkeypatch.setattr(rep, "load_for_reproduce", _refuse_to_run)
    assert main(["reproduce", "--backend", "ray", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("python -m analysis reproduce: error: --backend: 'ray' needs Ray, which is not installed")
    assert 'pip install -e ".[cluster]"' in err


def test_cli_ray_options_need_backend_ray(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rep, "load_for_reproduce", _refuse_to_run)
    assert main(["reproduce", "--address", "auto", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("python -m analysis reproduce: error: --address: only used with --backend ray, "
                                       "got --address auto with --backend local\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--backend", "dask"])
    assert exit_info.value.code == 2
