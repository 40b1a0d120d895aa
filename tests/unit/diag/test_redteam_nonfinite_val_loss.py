"""A NaN/Inf validation loss is a finding (LOSS_EXPLOSION, critical), from every door.

Before: 300 steps of ``TrainingHistory.record(..., val_loss=nan)`` diagnosed healthy, and a watched loop
calling ``end_epoch(val_loss=nan, val_acc=nan)`` each epoch got only UNDERFITTING (a warning). A NaN
training loss was already critical; the validation loss is now read the same way.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diag import TrainingDebugger, TrainingHistory

WORDS = "the model's outputs or the loss are non-finite on the validation data"


def _history(val_loss) -> TrainingHistory:
    history = TrainingHistory()
    for step in range(300):
        loss = 2.3 * math.exp(-step / 100) + 0.1
        history.record(step, loss, 1.0, 1e-3, val_loss=val_loss(step, loss))
    return history


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_history_whose_validation_loss_is_never_finite_is_critical(bad):
    report = _history(lambda step, loss: bad).diagnose()
    assert report["status"] == "critical"
    assert report["issues"] == ["LOSS_EXPLOSION"]
    evidence = report["details"][0]["evidence"]
    assert evidence.startswith(f"validation loss is {bad} at epoch 1 (step 0): {WORDS}")
    assert "300 of 300 validations were non-finite" in evidence


def test_a_validation_loss_that_turns_nan_is_found_where_it_turned():
    history = _history(
        lambda step, loss: (math.nan if step >= 200 else loss * 1.05) if step % 20 == 0 else None
    )
    report = history.diagnose()
    assert report["status"] == "critical" and "LOSS_EXPLOSION" in report["issues"]
    issue = next(d for d in report["details"] if d["code"] == "LOSS_EXPLOSION")
    assert issue["first_step"] == 200
    assert issue["evidence"].startswith(f"validation loss is nan at epoch 11 (step 200): {WORDS}")
    assert history.detect_explosion() is not None


def test_a_healthy_history_with_finite_validation_losses_stays_healthy():
    report = _history(lambda step, loss: loss * 1.05 if step % 20 == 0 else None).diagnose()
    assert report["status"] == "healthy" and report["issues"] == []


def _watched(end_epoch_kwargs) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    debugger = TrainingDebugger().watch(model, opt, num_classes=3)
    for epoch in range(6):
        for _ in range(10):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            debugger.train_step(loss)
        debugger.end_epoch(**end_epoch_kwargs(epoch, loss.item()))
    return debugger.finish()


def test_a_watched_loop_validating_at_nan_is_critical():
    report = _watched(lambda epoch, loss: {"val_loss": math.nan, "val_acc": math.nan})
    assert report["status"] == "critical"
    assert report["issues"] == ["LOSS_EXPLOSION"]
    assert report["details"][0]["evidence"].startswith(
        f"validation loss is nan at epoch 1 (step 10): {WORDS}"
    )


@pytest.mark.parametrize(
    "given",
    [
        lambda epoch, loss: {"val_acc": 0.6},  # no validation loss at all
        lambda epoch, loss: {"train_loss": loss},
        # a validation loss from the fourth epoch on: the epochs before are not NaN losses
        lambda epoch, loss: {
            "train_loss": loss,
            **({"val_loss": loss * 1.1} if epoch >= 3 else {}),
        },
    ],
    ids=["val_acc only", "train_loss only", "val_loss from epoch 4"],
)
def test_a_watched_loop_that_gives_no_validation_loss_is_not_called_nan(given):
    report = _watched(given)
    assert "LOSS_EXPLOSION" not in report["issues"], report["details"]


def test_a_nan_validation_beside_a_finite_training_loss_leads_with_the_validation_data():
    """The training loss is fine, so the first thing to change is not the learning rate."""
    report = _history(lambda step, loss: math.nan).diagnose()
    recommendations = report["details"][0]["recommendations"]
    assert recommendations[0].startswith("Look for NaN/Inf in the validation inputs")
    assert recommendations[1].startswith("Reduce the learning rate")


def test_a_blow_up_in_training_still_leads_with_the_learning_rate():
    history = TrainingHistory()
    for step in range(100):
        loss = 2.3 if step < 60 else math.nan
        history.record(step, loss, 1.0, 1e-3, val_loss=math.nan if step >= 60 else 2.3)
    (detail,) = [d for d in history.diagnose()["details"] if d["code"] == "LOSS_EXPLOSION"]
    assert detail["recommendations"][0].startswith("Reduce the learning rate")


def _jsonl(path, rows) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_diag_analyze_reads_a_val_loss_null_in_every_line_beside_val_accuracies_as_nan(tmp_path):
    """JSON has no NaN: the runner and most loggers write null. A validation loss null in every line while
    the same lines count a validation accuracy was measured, and NaN; it was read as 'not measured' and
    the run called healthy."""
    from helpers import run_cli

    log = tmp_path / "log.jsonl"
    _jsonl(
        log,
        [
            {
                "epoch": e,
                "step": 20 * (e + 1),
                "loss": 2 / (e + 1),
                "val_loss": None,
                "val_acc": 0.1,
            }
            for e in range(10)
        ],
    )
    proc = run_cli(["analyze", str(log)], tmp_path, module="diag", fresh=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "val_loss is null in every record, beside numbers for its accuracy: read as NaN" in out
    assert (
        "DIAGNOSIS: CRITICAL" in out
        and f"validation loss is nan at epoch 1 (step 20): {WORDS}" in out
    )


def test_a_val_loss_null_in_every_line_without_a_val_accuracy_is_not_measured(tmp_path):
    from diag.readers import read_path

    log = tmp_path / "log.jsonl"
    _jsonl(log, [{"epoch": e, "loss": 2 / (e + 1), "acc": 0.5, "val_loss": None} for e in range(6)])
    result = read_path(log)
    assert result.series.epoch_val_loss == []
    assert not any("read as NaN" in note for note in result.notes)
