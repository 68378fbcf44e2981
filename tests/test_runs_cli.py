"""Shared run-directory / resume logic (clcae.training.runs) and the script helpers (clcae.cli)."""
from __future__ import annotations

import argparse
import json
import os
import signal

import pytest

from clcae import cli
from clcae.training import runs
from clcae.training.errors import ConfigError
from clcae.training.state import RunDirError


def test_merge_resume_options_lists_every_forbidden_change():
    saved = {"lr": 0.002, "batch": 8, "out": "a", "gone": 1}
    merged = runs.merge_resume_options(saved, {"out": "b"}, known={"lr", "batch", "out"}, may_change={"out"},
                                       source="ck.pt")
    assert merged == {"lr": 0.002, "batch": 8, "out": "b"}  # 'gone' (no longer an option) dropped
    with pytest.raises(KeyError) as e:  # any exception class: a plain message
        runs.merge_resume_options(saved, {"lr": 0.001, "batch": 4}, known={"lr", "batch"}, may_change=(),
                                  source="ck.pt", error=KeyError)
    msg = str(e.value)
    assert "lr: checkpoint has 0.002, you passed 0.001" in msg and "batch" in msg and "ck.pt" in msg
    assert "--" not in msg  # the library names options, not flags
    with pytest.raises(ConfigError) as e:  # an error about an option: the command line names the flags
        runs.merge_resume_options(saved, {"lr": 0.001, "batch": 4}, known={"lr", "batch"}, may_change=(),
                                  source="ck.pt")
    assert e.value.option == "resume" and "--" not in str(e.value)
    msg = cli.command_line_message(e.value)
    assert msg.startswith("--resume ck.pt: ") and "--lr: checkpoint has 0.002, you passed 0.001" in msg
    assert "--batch: checkpoint has 8" in msg and msg.endswith("start a new run with --out NEW_DIR")


def test_resolve_run_dir_new_resume_and_fork(tmp_path):
    with pytest.raises(RunDirError, match="^out is required") as e:
        runs.resolve_run_dir("", None)
    assert cli.command_line_message(e.value).startswith("--out is required")
    assert runs.resolve_run_dir(tmp_path / "new", None) == (tmp_path / "new", False)
    run = tmp_path / "run"
    ck = runs.make_run_dir(run, in_place=False)
    (run / "options.json").write_text("{}")
    (ck / "latest.pt").write_bytes(b"x")
    assert runs.resolve_run_dir("", ck / "latest.pt") == (run.resolve(), True)
    assert runs.resolve_run_dir(str(run), ck / "latest.pt")[1] is True
    assert runs.resolve_run_dir(tmp_path / "fork", ck / "latest.pt") == (tmp_path / "fork", False)
    with pytest.raises(ValueError, match="not empty|exists"):
        runs.resolve_run_dir(run, None, error=ValueError)  # an existing non-empty directory is never reused
    with pytest.raises(ConfigError) as e:
        runs.resolve_run_dir(run, None, error=ConfigError)  # the same error, in the caller's type
    assert e.value.option == "out" and "choose a new --out, or continue that run with --resume" in \
        cli.command_line_message(e.value)
    loose = tmp_path / "loose.pt"
    loose.write_bytes(b"x")
    with pytest.raises(RunDirError, match="not inside a run directory"):
        runs.resolve_run_dir("", loose)


def test_options_records_are_never_overwritten(tmp_path):
    p0 = runs.write_options_record(tmp_path, {"a": 1}, in_place=False)
    p1 = runs.write_options_record(tmp_path, {"a": 2}, in_place=True)
    p2 = runs.write_options_record(tmp_path, {"a": 3}, in_place=True)
    assert [p.name for p in (p0, p1, p2)] == ["options.json", "options-resume-1.json", "options-resume-2.json"]
    assert json.loads(p0.read_text()) == {"a": 1}


@pytest.mark.parametrize("sigint_before", ["default", "ignored"])
def test_stop_on_signals_requests_a_stop_then_aborts(sigint_before):
    # SIGINT's handler on entry is whatever the shell gave: Python's default, or SIG_IGN in a background job
    outer = signal.signal(signal.SIGINT, signal.default_int_handler if sigint_before == "default" else signal.SIG_IGN)
    try:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        reasons, logs = [], []
        with runs.stop_on_signals(reasons.append, logs.append, stopping=lambda: bool(reasons)):
            os.kill(os.getpid(), signal.SIGTERM)
            assert reasons == ["SIGTERM"] and "saving a checkpoint" in logs[0]
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts
                os.kill(os.getpid(), signal.SIGINT)
        assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers restored, whatever they were
    finally:
        signal.signal(signal.SIGINT, outer)


def test_cli_types_and_exit_statuses(capsys):
    assert cli.positive_int("3") == 3 and cli.non_negative_int("0") == 0
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.positive_int(bad)

    @cli.exit_statuses(usage=(ValueError,), failure=(RuntimeError,), interrupted="stopped")
    def main(exc):
        if exc is not None:
            raise exc
        return 0

    assert main(None) == 0
    assert main(ValueError("bad flag")) == 2 and "error: bad flag" in capsys.readouterr().err
    assert main(RuntimeError("nan")) == 1
    assert main(KeyboardInterrupt()) == 130 and "stopped" in capsys.readouterr().err
    assert cli.stop_exit_status("SIGTERM") == 143 and cli.stop_exit_status(None) == 0
    assert cli.summary_exit_status({"interrupted": False, "failed": 2, "done": 0, "skipped": 0}) == 1
    assert cli.summary_exit_status({"interrupted": False, "failed": 2, "done": 1, "skipped": 0}) == 0


def test_errors_about_an_option_are_told_with_flags_on_the_command_line(capsys):
    """The library names its options; clcae.cli names the flags, of the option and of the options it mentions,
    whatever the error's type (callers keep catching their own types)."""
    from clcae.errors import AboutOption
    from clcae.jobs import JobError
    from clcae.training.errors import OptionError

    e = OptionError("batch", "must be >= 2 with stage align; got 1", mentions=("stage",))
    assert str(e) == "batch must be >= 2 with stage align; got 1" and isinstance(e, ConfigError)
    assert cli.command_line_message(e) == "--batch must be >= 2 with --stage align; got 1"
    e = JobError.about("lpips_weights", ": /data/stage/lpips_weights.pth: no such file; or pass perceptual none",
                       mentions=("perceptual", "stage", "lpips_weights"))
    assert isinstance(e, JobError) and isinstance(e, AboutOption) and e.option == "lpips_weights"
    assert str(e) == "lpips_weights: /data/stage/lpips_weights.pth: no such file; or pass perceptual none"
    # names inside paths and file names stay as they are
    assert cli.command_line_message(e) == ("--lpips-weights: /data/stage/lpips_weights.pth: no such file; or pass "
                                           "--perceptual none")
    assert cli.command_line_message(JobError("plain words")) == "plain words"
    assert cli.report_error(e) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"error: {cli.command_line_message(e)}\n"
