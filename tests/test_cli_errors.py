"""The command line answers a bad argument or input with one line on stderr and exit status 2, never a traceback."""
import os

import pytest

import analysis.pipeline
import analysis.reproduce
from analysis.cli import build_parser, main


def _refuse_to_run(*args, **kwargs):
    raise AssertionError("the command started its work despite a bad argument")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(("argv", "option", "expected"), [
    (["reproduce", "--epochs", "0"], "--epochs", "an integer >= 1, got 0"),
    (["demo", "--epochs", "-3"], "--epochs", "an integer >= 1, got -3"),
    (["reproduce", "--train-subset", "0"], "--train-subset", "an integer >= 1, got 0"),
    (["reproduce", "--runs", "five"], "--runs", "an integer >= 1, got 'five'"),
    (["reproduce", "--batch-size", "0"], "--batch-size", "an integer >= 1, got 0"),
    (["reproduce", "--max-eval", "-1"], "--max-eval", "an integer >= 0, got -1"),
    (["reproduce", "--defense-samples", "-1"], "--defense-samples", "an integer >= 0, got -1"),
    (["demo", "--threads", "-1"], "--threads", "an integer >= 0, got -1"),
    (["zoo", "verify", "--threads", "-1"], "--threads", "an integer >= 0, got -1"),
    (["zoo", "verify", "--tolerance", "nan"], "--tolerance", "a finite number >= 0, got nan"),
    (["zoo", "verify", "--tolerance", "inf"], "--tolerance", "a finite number >= 0, got inf"),
    (["zoo", "verify", "--tolerance", "-0.01"], "--tolerance", "a finite number >= 0, got -0.01"),
    (["demo", "--tau", "nan"], "--tau", "a finite number >= 0, got nan"),
    (["demo", "--tau", "2,5"], "--tau", "a finite number >= 0, got '2,5'"),
    (["demo", "--seed", "-1"], "--seed", "an integer >= 0, got -1"),
    (["classroom", "--port", "0"], "--port", "an integer from 1 to 65535, got 0"),
    (["classroom", "--port", "65536"], "--port", "an integer from 1 to 65535, got 65536"),
    (["classroom", "--cull-idle", "-1"], "--cull-idle", "an integer >= 0, got -1"),
])
def test_an_out_of_range_option_is_one_line_and_exit_status_2(capsys, argv, option, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    command = argv[0]
    assert _one_line(capsys) == f"python -m analysis {command}: error: {option}: expected {expected}"


@pytest.mark.parametrize(("argv", "attribute", "value"), [
    (["reproduce", "--max-eval", "0"], "max_eval", 0),  # 0 keeps its meaning: all inputs
    (["reproduce", "--defense-samples", "0"], "defense_samples", 0),
    (["zoo", "verify", "--tolerance", "0"], "tolerance", 0.0),
    (["demo", "--threads", "0"], "threads", 0),
    (["classroom", "--port", "65535"], "port", 65535),
])
def test_the_limits_themselves_are_accepted(argv, attribute, value):
    assert getattr(build_parser().parse_args(argv), attribute) == value


def test_a_missing_npz_file_is_one_line_and_exit_status_2(capsys):
    assert main(["reproduce", "npz", "/no/such/file.npz"]) == 2
    assert _one_line(capsys) == "python -m analysis reproduce: error: path: no such file: /no/such/file.npz"


def test_layerwise_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("LAYERWISE_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no such file"):
        main(["reproduce", "npz", "/no/such/file.npz"])


def test_a_key_error_is_printed_without_its_quotes(monkeypatch, capsys):
    def unknown(dataset, path):
        raise KeyError("name: no checkpoint 'x'")

    monkeypatch.setattr(analysis.reproduce, "load_for_reproduce", unknown)
    assert main(["reproduce"]) == 2
    assert _one_line(capsys) == "python -m analysis reproduce: error: name: no checkpoint 'x'"


def test_an_internal_error_is_not_swallowed(monkeypatch):
    def broken(dataset, path):
        raise RuntimeError("CUDA error: an internal failure")

    monkeypatch.setattr(analysis.reproduce, "load_for_reproduce", broken)
    with pytest.raises(RuntimeError, match="internal failure"):
        main(["reproduce"])


def test_demo_out_under_a_regular_file_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(analysis.pipeline, "attacked_model", _refuse_to_run)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    assert main(["demo", "--out", str(tmp_path / "notes.txt" / "report.html"), "--no-progress"]) == 2
    line = _one_line(capsys)
    assert line.startswith("python -m analysis demo: error: --out: expected a folder that can be created and written")
    assert "notes.txt" in line


def test_demo_out_that_is_a_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(analysis.pipeline, "attacked_model", _refuse_to_run)
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    assert _one_line(capsys).endswith(f"--out: expected the HTML report's file path, got the folder {tmp_path}")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into a read-only folder")
@pytest.mark.parametrize("inside", [False, True], ids=["the folder", "a folder inside it"])
def test_reproduce_out_in_a_read_only_folder_fails_before_any_work(tmp_path, monkeypatch, capsys, inside):
    monkeypatch.setattr(analysis.reproduce, "load_for_reproduce", _refuse_to_run)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["reproduce", "--out", str(locked / "results" if inside else locked)]) == 2
    finally:
        locked.chmod(0o755)
    assert "python -m analysis reproduce: error: --out: expected a folder that can be created and written" in (
        _one_line(capsys))


def test_reproduce_out_where_writing_fails_is_named(tmp_path, monkeypatch, capsys):
    """The same check as the read-only folder above, with the refusal simulated (it runs as root too)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(analysis.reproduce, "load_for_reproduce", _refuse_to_run)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert main(["reproduce", "--out", str(tmp_path)]) == 2
    assert _one_line(capsys) == (f"python -m analysis reproduce: error: --out: expected a folder that can be created "
                                 f"and written to, got {tmp_path} (Permission denied)")
