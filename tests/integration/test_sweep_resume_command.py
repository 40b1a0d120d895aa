"""Ctrl-C in a multirun prints the command that continues the whole sweep, and it does.

It printed the interrupted job's own command (``hydra.run.dir`` of the job, no ``-m``): run, that finished
the one job and left the jobs after it unrun, with no sweep summary.
"""

from __future__ import annotations

import json
import os
import shlex

from helpers import ROOT, run_cli

WITH_HELPERS = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
SIGNAL = "+callbacks.zz_signal._target_=helpers.signals.SignalAtValidation"


def test_the_resume_command_of_an_interrupted_sweep_job_finishes_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 is refused at once (a negative LR); job 1 gets a Ctrl-C at its first validation; job 2 waits
    args = ["-m", "optimizer.lr=-1,3e-3,1e-3", "trainer.max_epochs=3", "data.subset=256"]
    hook = [
        SIGNAL,
        "+callbacks.zz_signal.epoch=0",
        "+callbacks.zz_signal.when_env=RUNNER_TEST_SIGNAL",
    ]
    res = run_cli(
        [*args, *hook, f"hydra.sweep.dir={sweep}"],
        tmp_path,
        env={**WITH_HELPERS, "RUNNER_TEST_SIGNAL": "1"},
    )
    assert res.returncode == 130, res.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    line = next(x for x in res.stderr.splitlines() if "resume with: " in x)
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:4] == ["python", "-m", "runner", "-m"], command
    assert "optimizer.lr=-1,3e-3,1e-3" in command and "trainer.resume=auto" in command
    assert f"hydra.sweep.dir={sweep}" in command or f'hydra.sweep.dir="{sweep}"' in command
    # run as printed (the signal hook disarmed: its variable unset)
    again = run_cli(command[3:], tmp_path, extra=False, env=WITH_HELPERS)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout + again.stderr
    assert (sweep / "2" / "report.json").is_file() and (sweep / "sweep.md").is_file()
    job1 = json.loads((sweep / "1" / "report.json").read_text())
    assert job1["completed"] is True and job1["metrics"]["epochs"] == 3
