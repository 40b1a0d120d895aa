"""summary.png and sweep.png draw what a person needs: start of a blow-up, an LR of 0, shared LRs."""

from __future__ import annotations

import json
import math

import matplotlib.image
import yaml

from diag.series import RunSeries
from diag.summary_plot import plot_summary
from diag.sweep import render_text, summarize


def _run(job, lr, best, diverged=False):
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optimizer.lr={lr}"]))
    issues = (
        [{"code": "LOSS_EXPLOSION", "severity": "critical", "first_step": 5, "evidence": "x"}]
        if diverged
        else []
    )
    report = {
        "status": "critical" if diverged else "healthy",
        "issues": issues,
        "metrics": {"best_val_loss": best, "final_val_loss": best, "epochs": 3},
    }
    (job / "report.json").write_text(json.dumps(report))


def test_a_sweep_whose_jobs_share_an_lr_is_summarised_and_plotted(tmp_path):
    _run(tmp_path / "0", 1e-3, 0.30)
    _run(tmp_path / "1", 1e-3, 0.25)
    _run(tmp_path / "2", 1.0, 1e20, diverged=True)
    summary = summarize(tmp_path, write=True)
    assert summary["best"]["name"] == "1"
    assert [r["diverged"] for r in summary["runs"]] == [False, False, True]
    image = matplotlib.image.imread(tmp_path / "sweep.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05
    # the blown-up loss reads as 1e+20 in the printed table and sweep.md, not as a 21-digit number
    text = render_text(summary) + (tmp_path / "sweep.md").read_text()
    assert "| 1e+20 |" in text and "  1e+20  " in text and "100000000000000000000" not in text


def test_summary_of_a_blow_up_and_an_lr_that_reaches_zero_is_drawn(tmp_path):
    s = RunSeries(num_classes=10)
    s.initial_loss = 2.3
    s.step = [10, 20, 30, 40]
    s.loss = [4e27, 1e28, math.nan, 2e28]
    s.grad_norm = [1e18, 2e18, math.nan, 1e18]
    s.lr = [1.0, 0.5, 0.1, 0.0]
    s.epoch_step = [20, 40]
    s.epoch_val_loss = [1e23, 1e23]
    s.epoch_train_acc = [0.1, 0.1]
    s.epoch_val_acc = [0.1, 0.1]
    path = plot_summary(s, tmp_path / "summary.png")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 500 and image[..., :3].std() > 0.05
