"""BEHIND_SWEEP on real curves: the weak trials of recorded 12-point digits grids stop at the early grace,
no trial within 2 points of its grid's best is ever stopped against any finished trial of its grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import run_cli
from torch import nn

from diag.hooks import EventLog, FitState
from hydra_plugins.runner_sweeper import middle_out
from runner.behind_sweep import Curve, beaten_by, finished_trials, judge, read_curve
from runner.stop_on import StopOnDiagnosis

# 12-point grids (1e-5 .. 10, 20 epochs of 20 steps) recorded without early stopping on the tuning seeds
# 0 and 1 of bench/lr_sweep_stop.py (and the spent held-out seed 2): per trial its LR and, per epoch, the step, val loss and accuracy and
# the epoch's mean training loss
CURVES = json.loads((Path(__file__).parent / "data" / "sweep_curves.json").read_text())
HEALTHY = 0.02  # within 2 points of the grid's best final val accuracy
GRACE, UNTIL = (
    2,
    10,
)  # the epochs stop_on judges a trial against the sweep: its early grace to half its run


def curve(grid: str, job: str) -> Curve:
    t = CURVES[grid][job]
    # a training curve with a non-finite epoch is no training curve (as read_curve reads a trial)
    train = t["train_loss"] if all(v is not None for v in t["train_loss"]) else None
    return Curve(job, t["step"], t["val_loss"], t["val_acc"], train)


def history(c: Curve, epochs: int) -> list[dict]:
    """The trial's epoch history (as the loop keeps it) after ``epochs`` epochs."""
    train = c.train_losses or [math.nan] * len(c.steps)  # a non-finite one is left out by judge
    return [
        {"step": c.steps[i], "val/loss": c.losses[i], "val/acc": c.accs[i], "train/loss": train[i]}
        for i in range(epochs)
    ]


def finite(c: Curve) -> bool:
    return all(v is not None and math.isfinite(v) for v in c.losses)


def verdicts(grid: str, job: str, ref: str) -> list[dict | None]:
    c, r = curve(grid, job), curve(grid, ref)
    return [
        judge(history(c, k), c.steps[k - 1], c.max_steps, r, 10) for k in range(GRACE, UNTIL + 1)
    ]


def test_no_trial_within_2_points_of_the_best_is_ever_stopped_against_any_trial_of_its_grid():
    judged = 0
    for grid, trials in CURVES.items():
        best = max(t["val_acc"][-1] for t in trials.values())
        healthy = [j for j, t in trials.items() if t["val_acc"][-1] >= best - HEALTHY]
        for job in healthy:
            for ref in trials:
                if ref == job or not finite(curve(grid, ref)):
                    continue
                for v in verdicts(grid, job, ref):
                    judged += v is not None
                    assert v is None or not v["stop"], (grid, job, ref, v)
    assert judged > 500  # the property was checked, not skipped


def test_a_healthy_trial_is_not_stopped_even_at_half_the_default_pace():
    """The margin under behind_pace=2: no trial within 2 points of its grid's best would be stopped
    against any trial of its grid even if granted only its own pace (1x), from the early grace to
    three quarters of its run (the highest pace that stops one is 0.85x: CNN Adam at 0.00152)."""
    judged = 0
    for grid, trials in CURVES.items():
        best = max(t["val_acc"][-1] for t in trials.values())
        for job, t in trials.items():
            if t["val_acc"][-1] < best - HEALTHY:
                continue
            c = curve(grid, job)
            for ref in trials:
                r = curve(grid, ref)
                if ref == job or not finite(r):
                    continue
                for k in range(GRACE, 16):
                    v = judge(history(c, k), c.steps[k - 1], c.max_steps, r, 10, pace=1.0)
                    judged += v is not None
                    assert v is None or not v["stop"], (grid, job, ref, k, v)
    assert judged > 1000


@pytest.mark.parametrize(
    "grid, job, ref, by_epoch, final",
    [
        ("mlp_sgd/seed0", "4", "7", 2, 0.833),  # SGD 0.00152 against 0.0658 (0.986)
        ("mlp_sgd/seed1", "4", "7", 2, 0.812),
        ("mlp_adam/seed1", "2", "6", 2, 0.924),  # Adam 1.2e-4 against 0.0187 (0.986)
        ("cnn_sgd/seed0", "3", "8", 2, 0.882),  # CNN SGD 4.3e-4 against 0.231 (1.000)
        # at behind_pace=2 (3 before): CNN Adam 1.2e-4 against 0.0658 (1.000) from epoch 2, not 9
        ("cnn_adam/seed0", "2", "7", 2, 0.931),
        ("cnn_adam/seed2", "2", "7", 7, 0.903),  # seed 2's, from epoch 7 (at 3: only at epoch 10)
    ],
)
def test_a_trial_that_learns_but_stays_weak_stops_early(grid, job, ref, by_epoch, final):
    assert curve(grid, job).final_acc == pytest.approx(
        final, abs=1e-3
    )  # where it ended, trained out
    first = next(
        k for k, v in zip(range(GRACE, UNTIL + 1), verdicts(grid, job, ref)) if v and v["stop"]
    )
    assert first <= by_epoch
    v = verdicts(grid, job, ref)[first - GRACE]
    assert v is not None and v["trial"] == ref and v["projected_val_acc"] < v["bar"]


def test_a_batchnorm_cnn_validating_above_chance_early_is_not_judged_then_and_never_stopped():
    # CNN/SGD at 0.811: val loss 15.0 and 3.05 (above ln 10) at its first two validations, 0.97 at the end
    c = curve("cnn_sgd/seed0", "9")
    assert c.losses[1] > math.log(10) and c.final_acc > 0.97
    assert verdicts("cnn_sgd/seed0", "9", "8")[0] is None
    for ref in ("5", "6", "7", "8"):
        assert not any(v and v["stop"] for v in verdicts("cnn_sgd/seed0", "9", ref))


def test_a_trial_of_another_budget_is_no_reference():
    c, r = curve("mlp_sgd/seed0", "4"), curve("mlp_sgd/seed0", "7")
    assert judge(history(c, 3), c.steps[2], c.max_steps * 2, r, 10) is None


def _write_trial(job: Path, c: Curve, **report) -> None:
    job.mkdir(parents=True)
    assert c.train_losses is not None
    (job / "report.json").write_text(json.dumps({"completed": True, "stopped": False, **report}))
    for name, losses in (("val", c.losses), ("train", c.train_losses)):
        rows = [
            {"epoch": i, "step": s, "loss": v, "accuracy": a}
            for i, (s, v, a) in enumerate(zip(c.steps, losses, c.accs))
        ]
        (job / f"{name}_diagnostics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_only_finished_unstopped_trials_of_the_sweep_are_references(tmp_path):
    ref = curve("mlp_sgd/seed0", "7")
    _write_trial(tmp_path / "7", ref)
    _write_trial(tmp_path / "3", curve("mlp_sgd/seed0", "3"), stopped=True)
    _write_trial(tmp_path / "5", curve("mlp_sgd/seed0", "5"), completed=False)
    (tmp_path / "4").mkdir()  # this trial, running
    read = read_curve(tmp_path / "7")
    assert read is not None and read.losses == ref.losses and read.train_losses == ref.train_losses
    assert [c.name for c in finished_trials(tmp_path, tmp_path / "4")] == ["7"]
    assert finished_trials(tmp_path, tmp_path / "7") == []  # a trial is no reference for itself


def _state(run_dir: Path, c: Curve, epochs: int) -> FitState:
    state = FitState(model=nn.Linear(2, 2), step=c.steps[epochs - 1], max_steps=c.max_steps)
    state.run_dir, state.num_classes = run_dir, 10
    state.events = EventLog(run_dir / "events.jsonl")
    state.history = history(c, epochs)
    return state


def test_the_hook_stops_a_weak_trial_and_records_whom_it_was_compared_with(tmp_path):
    _write_trial(tmp_path / "7", curve("mlp_sgd/seed0", "7"))
    (tmp_path / "4").mkdir()
    hook = StopOnDiagnosis(level="critical", sweep_dir=tmp_path)
    state = _state(tmp_path / "4", curve("mlp_sgd/seed0", "4"), 1)
    hook.on_fit_start(state)
    hook.on_epoch_end(state)  # one validation: before the early grace, nothing to judge
    assert not state.stop_training
    state = _state(tmp_path / "4", curve("mlp_sgd/seed0", "4"), 2)
    hook.on_epoch_end(state)
    state.events.close()
    assert state.stop_training and hook.stopped is not None
    assert hook.stopped["code"] == "BEHIND_SWEEP" and hook.stopped["step"] == 40
    assert hook.stopped["compared_with"]["trial"] == "7"
    assert "BEHIND_SWEEP at step 40" in state.stop_reason and "#7" in state.stop_reason
    events = [
        json.loads(line) for line in (tmp_path / "4" / "events.jsonl").read_text().splitlines()
    ]
    assert events[-1]["kind"] == "stopped" and events[-1]["compared_with"]["trial"] == "7"


def test_the_reference_is_the_best_finished_trial_of_the_same_budget(tmp_path):
    ref = curve("mlp_sgd/seed0", "7")
    halved = [v / 2 for v in ref.losses]
    longer = Curve("9", [s * 2 for s in ref.steps], halved, ref.accs, ref.train_losses)
    _write_trial(tmp_path / "7", ref)
    _write_trial(tmp_path / "9", longer)
    (tmp_path / "4").mkdir()
    hook = StopOnDiagnosis(level="critical", sweep_dir=tmp_path)
    state = _state(tmp_path / "4", curve("mlp_sgd/seed0", "4"), 2)
    hook.on_fit_start(state)
    hook.on_epoch_end(state)
    assert len(hook.references) == 2  # the lower loss of #9 (twice the steps) is not this budget's
    assert hook.stopped is not None and hook.stopped["compared_with"]["trial"] == "7"


@pytest.mark.parametrize("kwargs", [{"behind_sweep": False}, {"level": None}, {"sweep_dir": None}])
def test_the_rule_is_off_without_its_switch_stop_on_or_a_sweep(tmp_path, kwargs):
    _write_trial(tmp_path / "7", curve("mlp_sgd/seed0", "7"))
    (tmp_path / "4").mkdir()
    hook = StopOnDiagnosis(**{"level": "critical", "sweep_dir": tmp_path, **kwargs})
    state = _state(tmp_path / "4", curve("mlp_sgd/seed0", "4"), 2)
    hook.on_fit_start(state)
    hook.on_epoch_end(state)
    assert not state.stop_training and hook.references == []


def test_a_grid_runs_from_its_middle_out():
    assert middle_out(12) == [6, 5, 7, 4, 8, 3, 9, 2, 10, 1, 11, 0]
    assert middle_out(2) == [1, 0] and middle_out(1) == [0] and middle_out(0) == []
    assert sorted(middle_out(7)) == list(range(7))


def test_a_bad_behind_value_is_one_line_and_a_nonzero_exit(tmp_path):
    # a new interpreter (~1 s: a refused start imports no torch), not the forked runs' server, whose
    # start-up (~5 s of imports) a fast-tier worker would otherwise pay for this test alone
    proc = run_cli(["callbacks.stop_on.behind=5"], tmp_path, fresh=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "behind" in line]
    assert len(lines) == 1 and "callbacks.stop_on.behind=5 is not valid" in lines[0]


def _finished(job: Path, best: float, completed: bool = True, codes=(), stopped=False) -> None:
    """A job directory as the runner leaves it, as far as the sweep summary reads it."""
    job.mkdir(parents=True)
    issues = [{"code": c, "severity": "critical"} for c in codes]
    metrics = {"best_val_loss": best, "final_val_loss": best, "final_train_loss": best, "epochs": 3}
    report = {"status": "healthy", "completed": completed, "metrics": metrics, "issues": issues}
    (job / "report.json").write_text(json.dumps(report))
    event = {"kind": "stopped", "code": "BEHIND_SWEEP", "step": 40, "max_steps": 400}
    (job / "events.jsonl").write_text(json.dumps(event) + "\n" if stopped else "")


def test_a_trial_is_beaten_only_by_a_finished_trial_the_summary_could_pick_as_best(tmp_path):
    _finished(tmp_path / "1", 0.10)
    _finished(tmp_path / "2", 0.05, stopped=True)  # stopped: never the sweep's best
    _finished(tmp_path / "3", 0.01, codes=["LOSS_EXPLOSION"])  # diverged: never the best
    _finished(tmp_path / "4", 0.02, completed=False)  # interrupted: it may still do otherwise
    _finished(tmp_path / "6", 0.08)
    (tmp_path / "5").mkdir()  # this trial
    assert beaten_by(tmp_path, tmp_path / "5", 0.2) == {"trial": "6", "best_val_loss": 0.08}
    assert beaten_by(tmp_path, tmp_path / "5", 0.09) == {"trial": "6", "best_val_loss": 0.08}
    assert beaten_by(tmp_path, tmp_path / "5", 0.08) is None  # a tie: it may be the best
    assert beaten_by(tmp_path, tmp_path / "5", math.nan) is None
    assert beaten_by(tmp_path, tmp_path / "6", 0.09) is None  # never by itself


@pytest.mark.slow  # a real two-job sweep of 3 epochs each
@pytest.mark.parametrize("plot", [False, True])
def test_a_trial_a_finished_trial_beat_is_tested_but_not_drawn(tmp_path, plot):
    """A real two-job grid: run from its middle out, the better LR (job 1) finishes first; job 0 is
    beaten by it: tested (test accuracy in the table), no figures, and says why, unless plot_beaten."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "model=mlp",
            "optimizer=adam",
            "optimizer.lr=0.0003,0.003",
            "trainer.max_epochs=3",
            "stop_on=critical",
            f"callbacks.stop_on.plot_beaten={str(plot).lower()}",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    best, beaten = sweep / "1", sweep / "0"
    assert (best / "summary.png").is_file() and (best / "confusion_matrix.png").is_file()
    report = json.loads((beaten / "report.json").read_text())
    assert not report["stopped"] and report["metrics"]["test_acc"] is not None
    assert (beaten / "summary.png").is_file() == plot
    assert (beaten / "confusion_matrix.png").is_file() == plot
    events = [json.loads(line) for line in (beaten / "events.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e["kind"] == "not_drawn"]
    if plot:
        assert "not_drawn" not in report and skipped == []
    else:
        assert "trial #1 of the sweep finished with a lower best val loss" in report["not_drawn"]
        assert skipped[0]["beaten_by"]["trial"] == "1"
        assert "Figures not drawn" in (beaten / "report.md").read_text()
