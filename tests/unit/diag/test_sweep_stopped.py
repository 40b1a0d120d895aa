"""The sweep summary tells a trial stop_on ended untested from one that diverged."""

from __future__ import annotations

import json
from pathlib import Path

from diag.sweep import read_run, summarize

METRICS = {
    "best_val_loss": 0.5,
    "final_val_loss": 0.6,
    "final_val_acc": 0.8,
    "final_train_loss": 0.4,
    "test_loss": 0.61,
    "test_acc": 0.79,
    "epochs": 20,
}


def _job(sweep: Path, name: str, lr: float, report: dict, stopped: dict | None = None) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n")
    (job / "report.json").write_text(json.dumps(report))
    if stopped:
        (job / "events.jsonl").write_text(json.dumps({"kind": "stopped", **stopped}) + "\n")
    return job


def test_a_stopped_untested_trial_is_stopped_not_diverged(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "0", 0.01, {"status": "healthy", "issues": [], "metrics": METRICS})
    stuck = {"code": "SLOW_CONVERGENCE", "step": 100, "saved_steps": 300, "max_steps": 400}
    untested = {**METRICS, "best_val_loss": 2.3, "final_val_acc": 0.2, "epochs": 5}
    untested.update(test_loss=None, test_acc=None)  # not tested: both null in report.json
    issues = [{"code": "SLOW_CONVERGENCE", "severity": "critical"}]
    _job(sweep, "1", 1e-5, {"status": "critical", "issues": issues, "metrics": untested}, stuck)
    # a trial that was tested and whose test loss went non-finite did diverge
    nan_test = {**METRICS, "test_loss": None, "test_acc": 0.1}
    _job(sweep, "2", 3.0, {"status": "healthy", "issues": [], "metrics": nan_test})
    runs = {name: read_run(sweep / name) for name in ("0", "1", "2")}
    assert not runs["0"].diverged and runs["0"].stopped is None
    assert not runs["1"].diverged and runs["1"].stopped == stuck
    assert runs["1"].test_acc is None
    assert runs["2"].diverged
    summary = summarize(sweep, write=True)
    assert summary["best"]["name"] == "0"
    md = (sweep / "sweep.md").read_text()
    assert "Diverged: 2 (marked" in md
    assert "Stopped early by stop_on: 1 (SLOW_CONVERGENCE at step 100)" in md


def test_a_trial_stopped_on_its_projection_says_where_it_would_have_ended(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, "0", 0.02, {"status": "healthy", "issues": [], "metrics": METRICS})
    projection = {"projected_val_loss": 2.1675, "chance_loss": 2.3026, "need": 0.75}
    slow = {"code": "SLOW_CONVERGENCE", "step": 100, "saved_steps": 300, "max_steps": 400}
    untested = {**METRICS, "best_val_loss": 2.29, "test_loss": None, "test_acc": None, "epochs": 5}
    issues = [{"code": "SLOW_CONVERGENCE", "severity": "warning"}]
    report = {"status": "warning", "issues": issues, "metrics": untested}
    _job(sweep, "1", 1e-4, report, {**slow, "projection": projection})
    assert read_run(sweep / "1").stopped == {**slow, "projection": projection}
    summary = summarize(sweep, write=True)
    assert summary["best"]["name"] == "0"
    md = (sweep / "sweep.md").read_text()
    assert (
        "Stopped early by stop_on: 1 (SLOW_CONVERGENCE at step 100, projected to end at val loss "
        "2.17); 300 steps not trained (38% of the sweep's steps)." in md
    )
