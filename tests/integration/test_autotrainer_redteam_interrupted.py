"""A run killed during an AutoTrainer restart (attempt-1), launched without ``hydra.run.dir``.

Red-team findings: its top ``report.json`` is the first attempt's and says completed, so the analyzer read
attempt 0's stale verdict and ``trainer.resume=auto`` started a brand-new run. The kill is a real SIGKILL
once attempt-1 has a checkpoint and an epoch in its JSONL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_fork, run_cli

from diag.after_repair import attempt_note, awaits_attempt, final_attempt_dir
from runner.checkpoint import load_checkpoint

SICK = [
    "autotrainer=default",
    "optimizer=sgd",
    "optimizer.lr=1e-5",
    "trainer.max_epochs=4",
    "callbacks.checkpoint.every_n_steps=20",
]


def _fit_starts(events: Path) -> list[tuple[bool, int]]:
    return [
        (e["resumed"], e["step"])
        for e in map(json.loads, events.read_text().splitlines())
        if e["kind"] == "fit_start"
    ]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The log folder of a run SIGKILLed while attempt-1 trains (attempt-1: a checkpoint, epochs, no
    report); the run directory is the one folder under ``runs/``."""
    log_dir = tmp_path_factory.mktemp("killed")
    cmd = [sys.executable, "-m", "runner", *SICK, f"paths.log_dir={log_dir}"]
    proc = cli_fork.start([*cmd, "trainer.progress=false"], log_dir, env={**os.environ})
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, "the run ended before attempt-1 could be killed"
            assert time.time() < deadline, "attempt-1 never saved a checkpoint"
            found = [
                a
                for a in log_dir.glob("runs/*/attempt-1")
                if (a / "checkpoints" / "last.pt").is_file()
                and (a / "train_diagnostics.jsonl").is_file()
                and (a / "train_diagnostics.jsonl").read_text().count("\n") >= 1
            ]
            if found:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    (run,) = log_dir.glob("runs/*")
    assert not (run / "attempt-1" / "report.json").exists()
    return log_dir


def _run(log_dir: Path) -> Path:
    (run,) = log_dir.glob("runs/*")
    return run


def test_the_analyzer_reads_the_unfinished_attempt_not_the_first_attempts_stale_report(killed):
    run = _run(killed)
    top = json.loads((run / "report.json").read_text())
    assert top["completed"] is True and top["status"] == "critical"  # attempt 0's, stale
    assert awaits_attempt(top)
    assert final_attempt_dir(run, top) == run / "attempt-1"
    note = attempt_note(run, run / "attempt-1", top)
    assert "attempt-1 is an unfinished attempt" in note

    res = run_cli(["analyze", "--json", str(run)], killed, module="diag")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["input"]["path"] == str(run / "attempt-1")
    assert "(the run's own report.json says" not in res.stdout + res.stderr
    # attempt-1's series: trained at the raised LR, not attempt 0's 1e-5
    human = run_cli(["analyze", str(run)], killed, module="diag")
    assert human.returncode == 0, human.stderr[-2000:]
    lr_section = human.stdout.split("LEARNING RATE", 1)[1].split("LOSS", 1)[0]
    assert "0.103" in lr_section and "1e-05" not in lr_section
    assert "the run's own report.json says" not in human.stdout


def test_the_analyzer_says_the_attempt_it_reads_is_unfinished(killed):
    run = _run(killed)
    res = run_cli(["analyze", str(run)], killed, module="diag")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "attempt-1 is an unfinished attempt" in res.stdout


def test_resume_auto_without_a_run_dir_continues_attempt_1_from_its_checkpoint(killed, tmp_path):
    log_dir = tmp_path / "logs"
    shutil.copytree(killed, log_dir, symlinks=True)
    run = _run(log_dir)
    killed_at = load_checkpoint(run / "attempt-1" / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 80

    again = run_cli([*SICK, "trainer.resume=auto"], log_dir)  # the same command, resume=auto
    said = again.stdout + again.stderr
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"trainer.resume=auto: continuing {run}" in said
    assert f"resumed from {run / 'attempt-1' / 'checkpoints' / 'last.pt'}" in said
    # no new run trained: this launch's directory keeps only its Hydra config and log
    assert [r for r in log_dir.glob("runs/*") if (r / "checkpoints").exists()] == [run]
    # attempt 0 was not trained again from step 0; attempt-1 went on from its checkpoint
    assert _fit_starts(run / "events.jsonl") == [(False, 0), (True, 80)]
    assert _fit_starts(run / "attempt-1" / "events.jsonl") == [(False, 0), (True, killed_at)]
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True and report["autotrainer"]["final_attempt"] == "attempt-1"
    restarts = [a for a in report["autotrainer"]["actions"] if a["action"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["attempt"] == 0
    assert report["metrics"]["steps"] == 80 and report["metrics"]["test_acc"] > 0.9
