"""A sweep value without -m (``optimizer=adam,sgd``) is one line that says to add -m (--multirun), the
fix Hydra gives on a line the one-line rewrite used to drop; that fix runs the sweep."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli

TINY = ["trainer.max_epochs=1", "data.subset=300", "diag=off"]


def test_a_sweep_value_without_multirun_says_to_add_m_and_with_it_the_sweep_runs(tmp_path: Path):
    proc = run_cli(["optimizer=adam,sgd", *TINY], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: optimizer=adam,sgd lists several values")
    assert "add -m (--multirun) to sweep over it" in lines[0]
    assert "python -m runner -m optimizer=adam,sgd" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started

    sweep = tmp_path / "sw"
    fixed = run_cli(["-m", "optimizer=adam,sgd", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert (sweep / "0" / "report.json").is_file() and (sweep / "1" / "report.json").is_file()
