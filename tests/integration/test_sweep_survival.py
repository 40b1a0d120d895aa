"""Sweeps that survive: a job with a bad value is recorded as failed and the sweep goes on; a killed grid
sweep relaunched into its directory skips the jobs that finished; a killed Optuna study continues from
its SQLite storage. Real multiruns in subprocesses, killed with SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import cli_fork, run_cli

TINY = ["trainer.max_epochs=1", "diag=off", "data.subset=256"]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}


def _report(job: Path) -> dict:
    return json.loads((job / "report.json").read_text())


def _start(args: list[str], tmp_path: Path) -> cli_fork.Forked | subprocess.Popen:
    """The sweep to kill: forked, as ``run_cli`` runs (a process of its own all the same)."""
    cmd = [
        sys.executable,
        "-m",
        "runner",
        *args,
        f"paths.log_dir={tmp_path}",
        "trainer.progress=false",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **SINGLE_THREAD}
    return cli_fork.start(cmd, tmp_path, env=env)


def _kill_when(proc: cli_fork.Forked | subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_a_job_with_a_bad_value_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(
        ["-m", "optimizer.lr=1e-3,-1,2e-3", f"hydra.sweep.dir={sweep}", *TINY],
        tmp_path,
        env=SINGLE_THREAD,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "error: optimizer.lr=-1 is not valid" in res.stderr
    failed = _report(sweep / "1")
    assert failed["status"] == "failed" and failed["completed"] is False
    assert failed["error"].startswith("optimizer.lr=-1 is not valid")
    for job in ("0", "2"):
        assert _report(sweep / job)["completed"] is True
    assert "failed: 1" in res.stdout  # the end-of-multirun summary


def _grid(sweep: Path, lrs: str) -> list[str]:
    return ["-m", f"optimizer.lr={lrs}", f"hydra.sweep.dir={sweep}", "trainer.resume=auto", *TINY]


def _digests(job: Path) -> dict[str, str]:
    """The job folder's own files (its lock aside) with their sha256."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in job.glob("*.*")
        if p.is_file() and p.name != ".lock"
    }


@dataclass
class Relaunched:
    """A grid sweep killed once job 0 had finished and job 1 had started, then relaunched as it was."""

    tmp_path: Path
    sweep: Path
    job_2_reported_at_kill: bool
    job_0_at_kill: dict[str, str]
    job_0_after: dict[str, str]
    completed_after: dict[str, bool]  # jobs 1 and 2's report.json "completed" after the relaunch
    relaunch: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def relaunched(tmp_path_factory: pytest.TempPathFactory) -> Relaunched:
    """One grid sweep (``trainer.resume=auto``, lr=1e-3,2e-3,3e-3) killed with SIGKILL mid-sweep and
    relaunched with the same command: what the relaunch changed is recorded here, before any test
    launches into the sweep again."""
    tmp_path = tmp_path_factory.mktemp("grid")
    sweep = tmp_path / "sweep"
    args = _grid(sweep, "1e-3,2e-3,3e-3")
    proc = _start(args, tmp_path)
    _kill_when(proc, lambda: (sweep / "0" / "report.json").is_file() and (sweep / "1").is_dir())
    reported = (sweep / "2" / "report.json").exists()
    at_kill = _digests(sweep / "0")
    again = run_cli(args, tmp_path, env=SINGLE_THREAD)
    completed = {
        job: (sweep / job / "report.json").is_file() and _report(sweep / job)["completed"] is True
        for job in ("1", "2")
    }
    return Relaunched(tmp_path, sweep, reported, at_kill, _digests(sweep / "0"), completed, again)


@pytest.mark.slow
def test_a_killed_grid_sweep_relaunched_skips_the_jobs_that_finished(relaunched):
    sweep = relaunched.sweep
    assert not relaunched.job_2_reported_at_kill
    again = relaunched.relaunch
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"job 0 already finished ({sweep / '0'}/report.json): skipped" in again.stdout
    assert relaunched.job_0_after == relaunched.job_0_at_kill
    assert relaunched.completed_after == {"1": True, "2": True}
    summary = json.loads(
        run_cli(
            ["sweep", str(sweep), "--json", "--no-write"], relaunched.tmp_path, module="diag"
        ).stdout
    )
    assert [r["name"] for r in summary["runs"]] == ["0", "1", "2"] and not summary["skipped"]


@pytest.mark.slow
def test_a_sweep_relaunched_with_other_values_is_refused_before_a_job_changes(relaunched):
    """``trainer.resume=auto`` with an edited value list gave job 1 a new LR: Hydra rewrote its config,
    its resume was refused and the failed job's report replaced the finished run's."""
    tmp_path, sweep = relaunched.tmp_path, relaunched.sweep
    assert relaunched.relaunch.returncode == 0  # the sweep finished: lr=1e-3,2e-3,3e-3
    files = {p.relative_to(sweep): p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    # a value inserted in the list: every job from 1 on would get another LR
    edited = run_cli(_grid(sweep, "1e-3,1.5e-3,2e-3,3e-3"), tmp_path)
    assert edited.returncode == 2 and "Traceback" not in edited.stderr
    (line,) = edited.stderr.strip().splitlines()
    assert line == (
        f"error: hydra.sweep.dir={sweep}: job 1 holds a run made with optimizer.lr=0.002, where this "
        "sweep's job 1 has optimizer.lr=0.0015: relaunch with the sweep's own values to continue it, "
        "or choose another hydra.sweep.dir (nothing was changed)"
    )
    assert {p.relative_to(sweep): p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == files
    same = run_cli(_grid(sweep, "1e-3,2e-3,3e-3"), tmp_path)
    assert same.returncode == 0 and same.stdout.count("already finished") == 3, same.stderr[-2000:]


def _study(optuna, storage: str, sweep: Path):
    """The sweep directory's own study (its default name: ``lr_search@<absolute sweep dir>``)."""
    return optuna.load_study(study_name=f"lr_search@{sweep.resolve()}", storage=storage)


@pytest.mark.slow
def test_a_killed_optuna_study_continues_from_its_sqlite_storage(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=lr_optuna", f"hydra.sweep.dir={sweep}", *TINY]
    proc = _start([*args, "hydra.sweeper.n_trials=5"], tmp_path)
    # job 2 starts once the sweeper told the study trials 0 and 1
    _kill_when(proc, lambda: (sweep / "2" / ".hydra").is_dir())
    storage = f"sqlite:///{tmp_path / 'optuna' / 'lr_search.db'}"
    done = [
        t
        for t in _study(optuna, storage, sweep).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    assert len(done) >= 2
    again = run_cli([*args, "hydra.sweeper.n_trials=1"], tmp_path, env=SINGLE_THREAD)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _study(optuna, storage, sweep).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(done) + 1  # the earlier trials kept, one more run
    assert [t.params for t in complete[: len(done)]] == [t.params for t in done]
