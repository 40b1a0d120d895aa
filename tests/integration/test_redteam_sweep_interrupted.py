"""A sweep job interrupted by SIGTERM is shown as interrupted by ``diag sweep`` and is never its best run:
its numbers are those of a shorter run (the red-team sweep named such a job, "healthy", as its best)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

# job 0 is refused (lr=-1: a failed job, the sweep goes on); job 1 gets SIGTERM at its first validation
# of two epochs: before the fix it was the only candidate and the summary named it the best run
SIGTERM_AT_FIRST_VALIDATION = [
    "+callbacks.zz_signal._target_=helpers.signals.SignalAtValidation",
    "+callbacks.zz_signal.epoch=0",
    "+callbacks.zz_signal.signum=15",
]


def test_a_job_interrupted_by_sigterm_is_listed_as_interrupted_and_never_the_best(tmp_path: Path):
    sweep = tmp_path / "sw"
    proc = run_cli(
        [
            "-m",
            "optimizer.lr=-1,3e-3",
            *SIGTERM_AT_FIRST_VALIDATION,
            "trainer.max_epochs=2",
            "data.subset=300",
            "diag=off",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 143, proc.stderr[-2000:]
    report = json.loads((sweep / "1" / "report.json").read_text())
    assert report["completed"] is False and report["interrupted"] == "SIGTERM"
    assert (
        report["metrics"]["best_val_loss"] is not None
    )  # it has a loss: only its state rules it out

    text = run_cli(["sweep", str(sweep)], tmp_path, module="diag")
    assert text.returncode == 0, text.stderr
    row = next(line for line in text.stdout.splitlines() if line.startswith("1 "))
    assert "interrupted (SIGTERM)" in row and "healthy" not in row
    assert "best run: none" in text.stdout
    assert "interrupted (not finished, never the best run): 1" in text.stdout
    assert "trainer.resume=auto" in text.stdout

    summary = json.loads(
        run_cli(["sweep", str(sweep), "--json", "--no-write"], tmp_path, module="diag").stdout
    )
    assert summary["best"] is None
    assert [r["interrupted"] for r in summary["runs"]] == [None, "SIGTERM"]
    assert "Interrupted (not finished, never the best run): 1" in (sweep / "sweep.md").read_text()
