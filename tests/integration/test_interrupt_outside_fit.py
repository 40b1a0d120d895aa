"""Ctrl-C outside the training loop: while the run finishes (test pass, figures, report) and during its
set-up. Each used to end in a traceback of KeyboardInterrupt, the finishing one with no report."""

from __future__ import annotations

import json
import os
import shlex

from helpers import ROOT, run_cli

TINY = ["trainer.max_epochs=2", "data.subset=256"]
# the test helpers (hooks that send a real signal) importable by the run
WITH_HELPERS = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
AT_FIT_END = "+callbacks.zz_signal._target_=helpers.signals.SignalAtFitEnd"


def test_a_signal_while_the_run_finishes_lets_it_finish(tmp_path):
    run = tmp_path / "run"
    res = run_cli([*TINY, AT_FIT_END], tmp_path, run_dir=run, env=WITH_HELPERS)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True and report["metrics"]["test_acc"] is not None
    assert (run / "summary.png").is_file() and "test accuracy" in res.stdout


def test_a_second_signal_while_the_run_finishes_stops_it_in_one_line_and_it_resumes(tmp_path):
    run = tmp_path / "run"
    res = run_cli(
        [*TINY, AT_FIT_END, "+callbacks.zz_signal.times=2"], tmp_path, run_dir=run, env=WITH_HELPERS
    )
    assert res.returncode == 130, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    assert line.startswith("interrupted by SIGINT; its last checkpoint is kept: resume with: ")
    assert not (run / "report.json").is_file()  # stopped before its report was written
    # the printed command (without the signal hook) completes the run: it tests and reports
    command = shlex.split(line.split("resume with: ", 1)[1])  # as a shell reads it
    assert command[:3] == ["python", "-m", "runner"] and "trainer.resume=auto" in command
    overrides = [a for a in command[3:] if "zz_signal" not in a and not a.startswith("paths.")]
    again = run_cli(overrides, tmp_path, extra=False, env=WITH_HELPERS)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True and report["metrics"]["test_acc"] is not None


def test_a_signal_during_set_up_is_one_line_and_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    res = run_cli(
        [*TINY, "+callbacks.zz_signal._target_=helpers.signals.interrupt_at_build"],
        tmp_path,
        run_dir=run,
        env=WITH_HELPERS,
    )
    assert res.returncode == 130
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    assert line.startswith("interrupted by SIGINT before the run started: nothing kept")
    assert not run.exists()


def test_a_signal_as_an_attempt_ends_for_a_guided_restart_stops_before_the_next_one(tmp_path):
    """Dead units at set-up: attempt 0 stops for a restart; a Ctrl-C then does not start attempt-1."""
    run = tmp_path / "run"
    sick = [*TINY, "autotrainer=default", "model.bias_init=-5"]
    res = run_cli([*sick, AT_FIT_END], tmp_path, run_dir=run, env=WITH_HELPERS)
    assert res.returncode == 130, res.stderr[-2000:]
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    assert line.startswith(
        "interrupted by SIGINT as attempt 0 ended for a guided restart; resume with: "
    )
    assert not (run / "attempt-1").exists()
    again = run_cli([*sick, "trainer.resume=auto"], tmp_path, run_dir=run)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert [a["dir"] for a in report["autotrainer"]["attempts"]] == [".", "attempt-1"]
    assert report["metrics"]["test_acc"] is not None
