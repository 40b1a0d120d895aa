"""report.json/report.md say how a run ended, which command made it and the LR to use next time."""

from __future__ import annotations

import json
import logging

import torch
import yaml

from diag.hooks import FitState
from runner.report import print_summary, report_run

BLOWUP = {
    "code": "LOSS_EXPLOSION",
    "severity": "critical",
    "first_step": 10,
    "evidence": "training loss reached 4.09e+27",
    "recommendations": ["Reduce the learning rate by 10-100x (optimizer.lr)"],
}
OVERFIT = {
    "code": "OVERFITTING",
    "severity": "warning",
    "first_step": 40,
    "evidence": "val loss rose",
    "recommendations": ["Add weight decay", "Stop early: use checkpoints/best.pt"],
}


def _state(tmp_path, issues, lr=20.0):
    model = torch.nn.Linear(2, 2)
    state = FitState(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), run_dir=tmp_path
    )
    state.issues = issues
    state.step = 60
    state.metrics = {"train/loss": 2.06e28, "val/loss": 1.56e23, "test/acc": 0.09}
    return state


def _hydra(tmp_path, overrides, lr):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimizer": {"lr": lr}}))


def test_an_early_stop_is_in_both_reports_with_the_command_and_the_next_lr(tmp_path):
    _hydra(tmp_path, ["optimizer=sgd", "optimizer.lr=20"], 20.0)
    state = _state(tmp_path, [BLOWUP])
    state.stop_training = True
    state.stop_reason = "100 consecutive steps had non-finite gradients"
    report = report_run(state, tmp_path, best_val_loss=1.56e23)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["stopped"] is True
    assert saved["stop_reason"] == "100 consecutive steps had non-finite gradients"
    assert saved["command"] == "python -m runner optimizer=sgd optimizer.lr=20"
    assert saved["next_lr"]["lr"] == 2.0 and "LOSS_EXPLOSION" in saved["next_lr"]["reason"]
    md = (tmp_path / "report.md").read_text()
    assert "**Stopped early:** 100 consecutive steps had non-finite gradients" in md
    assert "python -m runner optimizer=sgd optimizer.lr=20" in md
    assert "**Next time:** `optimizer.lr=2`" in md
    assert report["stopped"] is True


def test_a_finished_healthy_run_is_not_stopped_and_suggests_no_lr(tmp_path):
    _hydra(tmp_path, ["trainer.max_epochs=3"], 0.001)
    report = report_run(_state(tmp_path, []), tmp_path, best_val_loss=0.27)
    assert report["stopped"] is False and "stop_reason" not in report
    assert "next_lr" not in report
    md = (tmp_path / "report.md").read_text()
    assert "Stopped early" not in md and "Next time" not in md


def test_after_restore_best_and_regularize_the_report_does_not_advise_them_again(tmp_path):
    state = _state(tmp_path, [OVERFIT], lr=1e-3)
    state.actions = [
        {
            "step": 90,
            "code": "OVERFITTING",
            "action": "restore_best",
            "lr_before": 1e-3,
            "lr_after": 1e-3,
            "detail": "tested with the best-validation weights of epoch 3",
            "outcome": "applied",
        }
    ]
    state.actions.insert(
        0,
        {
            "step": 28,
            "code": "OVERFITTING",
            "action": "regularize",
            "lr_before": 1e-3,
            "lr_after": 1e-3,
            "detail": "weight decay 0 -> 0.01 in the optimizer's param groups",
            "outcome": "recurred: gave up at step 80",
        },
    )
    report_run(state, tmp_path, best_val_loss=0.3)
    md = (tmp_path / "report.md").read_text()
    assert "Stop early" not in md
    assert "restore_best" in md
    # the regularisation it already tried is said as tried, with how it went, not advised again
    assert "- Add weight decay" not in md
    assert (
        "- Tried: the AutoTrainer's regularize at step 28 (weight decay 0 -> 0.01 in the optimizer's "
        "param groups); recurred: gave up at step 80" in md
    )


def test_the_console_prints_a_blown_up_loss_compactly(tmp_path, caplog):
    state = _state(tmp_path, [BLOWUP])
    report = report_run(state, tmp_path, best_val_loss=1.564703112519884e23)
    with caplog.at_level(logging.INFO, logger="runner.report"):
        print_summary(report, tmp_path)
    assert "best val loss 1.565e+23" in caplog.text
    assert "156470311251988411580416" not in caplog.text


def test_a_restart_is_not_an_lr_change_to_carry_into_the_next_run(tmp_path):
    """A guided restart starts the schedule again at the configured LR (0.0427 decayed -> 0.05): the
    next run's LR is not 1.17x the configured one."""
    _hydra(tmp_path, ["optimizer.lr=0.05"], 0.05)
    state = _state(tmp_path, [], lr=0.05)
    state.actions = [
        {
            "attempt": 0,
            "step": 40,
            "code": "VANISHING_GRADIENTS",
            "action": "restart",
            "lr_before": 0.0427,
            "lr_after": 0.05,
            "detail": "restart as attempt-1 with model.activation=relu",
            "outcome": "applied",
        }
    ]
    report = report_run(state, tmp_path, best_val_loss=0.13)
    assert "next_lr" not in report
    assert "Next time" not in (tmp_path / "report.md").read_text()


def test_the_tensorboard_command_opens_the_parent_and_filters_to_the_run(tmp_path):
    """TensorBoard names a run by its folder under --logdir: the parent shows it as its own name; an
    attempt's command is its run's (the run and its attempts); the name is a regex, escaped."""
    from runner.report import tensorboard_command

    assert tensorboard_command(tmp_path / "run1") == (
        f"tensorboard --logdir {tmp_path}   # this run: http://localhost:6006/?runFilter=^run1($|/)"
    )
    assert tensorboard_command(tmp_path / "r.1" / "attempt-2") == (
        f"tensorboard --logdir {tmp_path}   # this run: http://localhost:6006/?runFilter=^r%5C.1($|/)"
    )
