"""A multirun's exit code through the real CLI: non-zero when no job succeeded, 0 when some did (the
summary lists the ones that failed)."""

from __future__ import annotations

import json

SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["trainer.max_epochs=1", "diag=off", "data.subset=256"]


def test_a_sweep_in_which_every_job_failed_exits_1(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "optimizer.lr=-1,-2", f"hydra.sweep.dir={sweep}", *TINY, env=SINGLE_THREAD)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "failed: 0, 1" in proc.stdout  # the summary still printed and written
    assert (sweep / "sweep.md").is_file()
    for job in ("0", "1"):
        assert json.loads((sweep / job / "report.json").read_text())["status"] == "failed"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no job of the sweep succeeded (failed: 0, 1)"), proc.stderr
    assert "Traceback" not in proc.stderr
    # the figure places the jobs by run, not on a log LR axis they cannot sit on (matplotlib warned)
    assert "Warning" not in proc.stderr and (sweep / "sweep.png").is_file()


def test_a_sweep_with_one_failed_and_one_finished_job_exits_0(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "optimizer.lr=-1,1e-3", f"hydra.sweep.dir={sweep}", *TINY, env=SINGLE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed: 0" in proc.stdout and "best run: 1" in proc.stdout
    assert "no job of the sweep succeeded" not in proc.stderr
