"""An AutoTrainer restart's ``attempt-N/`` folder is part of its sweep job, not another run of the sweep;
a sweep over something other than the LR is drawn against the run, as ``plot_sweep`` says."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
from helpers import run_cli

from diag.sweep import read_run, summarize, sweep_figure


def test_an_autotrainer_restart_is_one_run_of_the_sweep_drawn_by_run(tmp_path: Path):
    sweep = tmp_path / "sw"
    proc = run_cli(
        [
            "-m",
            "autotrainer=default",
            "model.bias_init=-5,0",  # -5: the AutoTrainer restarts job 0 as attempt-1
            "trainer.max_epochs=2",
            "data.subset=300",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (sweep / "0" / "attempt-1" / "report.json").is_file()
    assert f"sweep {sweep}: 2 runs" in proc.stdout
    assert "attempt-1" not in proc.stdout.split("sweep ", 1)[1]

    summary = summarize(sweep, write=False)
    assert [r["name"] for r in summary["runs"]] == ["0", "1"]
    # the job's row carries its final attempt's numbers: its own report.json holds them
    job = json.loads((sweep / "0" / "report.json").read_text())
    attempt = json.loads((sweep / "0" / "attempt-1" / "report.json").read_text())
    assert job["autotrainer"]["final_attempt"] == "attempt-1"
    row = summary["runs"][0]
    assert row["best_val_loss"] == job["metrics"]["best_val_loss"]
    assert row["best_val_loss"] == attempt["metrics"]["best_val_loss"]
    assert row["test_acc"] == attempt["metrics"]["test_acc"]
    assert summary["common_overrides"]  # no attempt row with other overrides empties them

    # both jobs at the config's LR: the x axis is the run, each tick naming what it varies
    runs = [read_run(sweep / name) for name in ("0", "1")]
    assert runs[0].lr == runs[1].lr
    ax = sweep_figure(runs, None).axes[1]
    assert ax.get_xscale() == "linear"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["0\nmodel.bias_init=-5", "1\nmodel.bias_init=0"]
    line = next(line for line in ax.get_lines() if line.get_label() == "best val loss")
    assert list(line.get_xdata()) == [0, 1]  # one x per run, not both at lr 1e-3
    image = matplotlib.image.imread(sweep / "sweep.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
