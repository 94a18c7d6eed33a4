"""`reproduce` on a tiny budget: files written, paper numbers beside ours, interrupted runs resume."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import experiments, reproduce as rep
from analysis.data import DatasetSplits


@pytest.fixture(scope="module")
def tiny(digits):
    keep = np.arange(0, len(digits.train), 9)  # 120 training images
    return DatasetSplits("digits", digits.train.subset(keep), digits.reference, digits.test, 10)


def test_smoke_run_writes_tables_figures_and_report(tmp_path, tiny):
    report = rep.reproduce(tiny, tmp_path, only=["table3", "fig5", "curves"], archs=["resnet18"], runs=2,
                           progress=False, epochs=1, attacks=["badnets"])
    table3 = pd.read_csv(tmp_path / "table3.csv").set_index("attack")
    assert table3.index.tolist() == ["clean", "badnets"]  # the clean model is the MA reference
    assert table3.loc["badnets", "paper_ASR"] == 97.20  # CIFAR-10 ResNet-18 BadNets, beside ours
    assert table3.loc["badnets", "MA_vs_clean"] == pytest.approx(table3.loc["badnets", "MA"] - table3.loc["clean", "MA"])
    # Table 3 and the curves reload the same cached model and fit on the same reference split: the same LOI
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert set(curves.loi) == {table3.loc["badnets", "LOI"]}
    fig5 = pd.read_csv(tmp_path / "fig5.csv")
    assert sorted(fig5.tau.unique()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert (tmp_path / "fig5_threshold.html").is_file() and (tmp_path / "curves_resnet18_badnets.html").is_file()
    page = (tmp_path / "fig5_threshold.html").read_text()
    assert 'src="plotly.min.js"' in page and "http" not in "".join(re.findall(r"<script[^>]*>", page))
    assert str(tmp_path) not in page  # no absolute local path: the folder can move
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000  # plotly.js, once, beside the pages
    text = report.read_text()
    assert "Table 3" in text and "| resnet18 | badnets |" in text
    assert (tmp_path / "models" / "manifest.json").is_file()  # trained models are cached for resumption


def test_interrupted_runs_resume(tmp_path, tiny, monkeypatch):
    rep.reproduce(tiny, tmp_path, only=["table3"], archs=["resnet18"], runs=1, progress=False, epochs=1,
                  attacks=["badnets"])

    def must_not_run(study):
        raise AssertionError("table3 was finished already")

    monkeypatch.setitem(rep.EXPERIMENTS, "table3", rep.EXPERIMENTS["table3"].using(must_not_run))
    calls = []
    original = experiments.table6_single_layers

    def spy(study):
        calls.append(study)
        return original(study)

    monkeypatch.setitem(rep.EXPERIMENTS, "table6", rep.EXPERIMENTS["table6"].using(spy))
    rep.reproduce(tiny, tmp_path, only=["table3", "table6"], archs=["resnet18"], runs=1, progress=False, epochs=1,
                  attacks=["badnets"])
    assert len(calls) == 1
    assert set(json.loads((tmp_path / "progress.json").read_text())["done"]) == {"table3", "table6"}


def test_redo_runs_a_finished_experiment_again_and_each_keeps_its_command(tmp_path, tiny, monkeypatch):
    common = dict(archs=["resnet18"], runs=1, progress=False, epochs=1, attacks=["badnets"])
    rep.reproduce(tiny, tmp_path, only=["table3", "table6"], command="first", **common)
    calls = []
    original = experiments.table6_single_layers
    monkeypatch.setitem(rep.EXPERIMENTS, "table6",
                        rep.EXPERIMENTS["table6"].using(lambda study: calls.append(study) or original(study)))
    rep.reproduce(tiny, tmp_path, only=["table3", "table6"], command="again", **common)
    assert calls == []  # done: resumed, not rerun
    report = rep.reproduce(tiny, tmp_path, only=["table6"], redo=["table6"], command="fixed", **common)
    assert len(calls) == 1
    done = json.loads((tmp_path / rep.PROGRESS).read_text())["done"]
    assert (done["table3"]["command"], done["table6"]["command"]) == ("first", "fixed")
    text = report.read_text()
    assert "Command: `fixed`" in text  # the latest; table3's own command is named under its table
    assert "(`first`)" in text and text.index("(`first`)") > text.index("Table 3")
    with pytest.raises(ValueError, match=r"redo: \['table3'\] are not among the experiments selected by only"):
        rep.reproduce(tiny, tmp_path, only=["table6"], redo=["table3"], **common)


def test_a_folder_from_before_commands_were_recorded_takes_its_reports_command(tmp_path):
    (tmp_path / rep.PROGRESS).write_text(json.dumps({"done": {"table3": {"seconds": 1.0, "figures": []}}}))
    (tmp_path / "REPORT.md").write_text("# Reproduction on digits\n\nCommand: `python -m analysis reproduce x`\n")
    assert rep._read_progress(tmp_path)["done"]["table3"]["command"] == "python -m analysis reproduce x"


def test_results_of_other_settings_are_not_mixed(tmp_path, tiny):
    rep.reproduce(tiny, tmp_path, only=["table6"], archs=["resnet18"], runs=1, progress=False, epochs=1,
                  attacks=["badnets"])
    with pytest.raises(ValueError, match="holds results of other settings"):
        rep.reproduce(tiny, tmp_path, only=["table6"], archs=["resnet18"], runs=2, progress=False, epochs=1,
                      attacks=["badnets"])


def test_bad_arguments(tmp_path, tiny):
    with pytest.raises(ValueError, match=r"only: unknown experiments \['table99'\]"):
        rep.reproduce(tiny, tmp_path, only=["table99"])
    with pytest.raises(ValueError, match="attacks: \\['nope'\\] not available"):
        rep.reproduce(tiny, tmp_path, only=["table3"], attacks=["nope"])
    with pytest.raises(ValueError, match="profile: expected one of"):
        rep.reproduce(tiny, tmp_path, profile="fast")
    with pytest.raises(ValueError, match="max_eval: expected a positive integer or None, got 0"):
        rep.reproduce(tiny, tmp_path, max_eval=0)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer or None, got 0"):
        rep.reproduce(tiny, tmp_path, batch_size=0)
    for betas in ([], [1.0], [0.5, 0.5], [-0.1]):
        with pytest.raises(ValueError, match=r"betas: expected distinct numbers in \[0, 1\)"):
            rep.reproduce(tiny, tmp_path, only=["table7"], betas=betas)
    assert not (tmp_path / rep.PROGRESS).exists()  # refused before anything was written


def test_batch_size_overrides_the_profile_and_bypasses_the_zoo(tmp_path, tiny):
    study = experiments.Study(tiny, batch_size=16)
    assert study.config("resnet18").batch_size == 16 and study.config("mobilenetv2").batch_size == 16
    assert experiments.Study(tiny).config("mobilenetv2").batch_size == 128  # the cpu profile's
    rep.reproduce(tiny, tmp_path, only=["table3"], archs=["resnet18"], runs=1, progress=False, epochs=1,
                  attacks=["badnets"], batch_size=64)
    assert json.loads((tmp_path / rep.PROGRESS).read_text())["settings"]["batch_size"] == 64
    assert "1 epochs; batch size 64" in (tmp_path / "REPORT.md").read_text()
    entries = json.loads((tmp_path / "models" / "manifest.json").read_text())["entries"]
    assert sorted(entries) == ["digits-resnet18-badnets", "digits-resnet18-clean"]  # trained, not the zoo's
    assert all(entry["config"]["train"]["batch_size"] == 64 for entry in entries.values())


def test_profiles_set_the_tables12_budget(tmp_path, tiny):
    """The cpu profile caps Tables 1/2 (50 inputs per set, 20 RS/STRIP samples); paper uses everything."""
    assert rep.PROFILE_BUDGETS["cpu"] == {"max_eval": 50, "defense_samples": 20}
    assert rep.PROFILE_BUDGETS["paper"] == {"max_eval": None, "defense_samples": None}
    rep.reproduce(tiny, tmp_path, only=["table6"], archs=["resnet18"], runs=1, progress=False, epochs=1,
                  attacks=["badnets"])
    settings = json.loads((tmp_path / rep.PROGRESS).read_text())["settings"]
    assert (settings["max_eval"], settings["defense_samples"]) == (50, 20)
    assert "RS and STRIP with 20 neighbours/blends per input" in (tmp_path / "REPORT.md").read_text()


def test_markdown_table():
    frame = pd.DataFrame({"a": ["x"], "b": [1.23456], "c": [float("nan")]})
    assert rep.markdown_table(frame) == "| a | b | c |\n|---|---|---|\n| x | 1.23 |  |"


def test_pages_written_with_a_cdn_link_are_made_to_open_offline(tmp_path):
    from analysis.cli import main

    cdn = '<html><head><script charset="utf-8" src="https://cdn.plot.ly/plotly-4.1.1.min.js"></script></head></html>'
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.html").write_text(cdn)
    (tmp_path / "b.html").write_text("<html>no plotly here</html>")
    assert main(["offline-html", str(tmp_path)]) == 0
    assert (tmp_path / "sub" / "a.html").read_text() == cdn.replace("https://cdn.plot.ly/plotly-4.1.1.min.js",
                                                                    "../plotly.min.js")
    assert (tmp_path / "plotly.min.js").is_file() and not (tmp_path / "sub" / "plotly.min.js").exists()  # once
    assert (tmp_path / "b.html").read_text() == "<html>no plotly here</html>"
    assert main(["offline-html", str(tmp_path / "b.html")]) == 2  # one line naming the folder, not a traceback


def test_results_folders_under_one_folder_share_its_plotly_js(tmp_path):
    """A new reproduce folder under docs/results carries its own plotly.min.js: offline-html points its pages
    at the shared copy and deletes the duplicate; a copy of another plotly.js is left with its pages."""
    import plotly.graph_objects as go

    from analysis.cli import main
    from analysis.plotting import write_figure_html

    write_figure_html(go.Figure(), tmp_path / "old" / "a.html")
    (tmp_path / "old" / "plotly.min.js").rename(tmp_path / "plotly.min.js")  # the shared copy
    (tmp_path / "old" / "a.html").write_text((tmp_path / "old" / "a.html").read_text().replace(
        'src="plotly.min.js"', 'src="../plotly.min.js"'))
    new_page = write_figure_html(go.Figure(), tmp_path / "new" / "b.html")
    other = write_figure_html(go.Figure(), tmp_path / "other" / "c.html")
    (tmp_path / "other" / "plotly.min.js").write_text("/* another plotly.js */")
    before = {p: p.read_text() for p in (new_page, other, tmp_path / "old" / "a.html")}
    assert main(["offline-html", str(tmp_path)]) == 0
    assert new_page.read_text() == before[new_page].replace('src="plotly.min.js"', 'src="../plotly.min.js"')
    assert not (tmp_path / "new" / "plotly.min.js").exists()  # the duplicate is gone, the shared one stays
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert other.read_text() == before[other] and (tmp_path / "other" / "plotly.min.js").is_file()
    assert (tmp_path / "old" / "a.html").read_text() == before[tmp_path / "old" / "a.html"]


def test_betas_choose_table7_models_and_are_part_of_the_settings(tmp_path, tiny, monkeypatch):
    """``betas`` replaces Table 7's default betas (0, 0.5, 0.9, 0.95) in the study, the Ray plan and the
    folder's settings: a folder made with other betas is not resumed."""
    from analysis import model_plan

    seen = []

    def spy(study):
        seen.append(study.adaptive_betas)
        return pd.DataFrame([{"beta": b} for b in study.adaptive_betas]), []

    monkeypatch.setitem(rep.EXPERIMENTS, "table7", rep.EXPERIMENTS["table7"].using(spy))
    rep.reproduce(tiny, tmp_path, only=["table7"], archs=["resnet18"], runs=1, progress=False, betas=[0.5, 0.9])
    assert seen == [(0.5, 0.9)]
    assert json.loads((tmp_path / rep.PROGRESS).read_text())["settings"]["betas"] == [0.5, 0.9]
    with pytest.raises(ValueError, match="holds results of other settings"):
        rep.reproduce(tiny, tmp_path, only=["table7"], archs=["resnet18"], runs=1, progress=False)
    plan = model_plan.plan_models(["table7"], "digits", ["resnet18"], [], betas=(0.5, 0.9))
    assert [(m.name, m.settings) for m in plan] == [("digits-resnet18-adaptive-b0.5", {"beta": 0.5}),
                                                    ("digits-resnet18-adaptive-b0.9", {"beta": 0.9})]
    default = model_plan.plan_models(["table7"], "digits", ["resnet18"], [])
    assert [m.settings["beta"] for m in default] == [0.0, 0.5, 0.9, 0.95]
