"""A layer too narrow for the classes, a plateau that a schedule's annealing made, and overfitting that
costs no accuracy: each rule on simulated series with its negative case, the narrow layer also through a
real hand-written torch loop (the live engine reads the widths itself)."""

from __future__ import annotations

import math

import numpy as np
import torch
from helpers.series import converging_run
from torch import nn

from diag import TrainingDebugger
from diag.codes import Issue
from diag.diagnosis import diagnose
from diag.series import RunSeries

LN10 = math.log(10)


def run(n: int = 40, seed: int = 0) -> RunSeries:
    return converging_run(n, seed, batch_size=64)


def by_code(s: RunSeries) -> dict[str, Issue]:
    return {i.code: i for i in diagnose(s)}


# -- a layer narrower than the classes ---------------------------------------------------------------------
def narrow_stalled(width: int) -> RunSeries:
    """A run stuck near 0.35 accuracy whose one hidden unit (``fc1``) is dead, at hidden width ``width``."""
    s = run()
    n, epochs = len(s.loss), len(s.epoch_step)
    s.loss = list(np.linspace(LN10, 1.7, 6)) + [1.7] * (n - 6)
    s.epoch_train_loss, s.epoch_val_loss = [1.7] * epochs, [1.68] * epochs
    s.epoch_train_acc, s.epoch_val_acc = [0.35] * epochs, [0.36] * epochs
    s.layer_width = {"fc1": width, "fc2": 64, "fc3": 10}
    s.layer_dead_fraction = {"fc1": [1.0] * 8, "fc2": [0.1] * 8}
    return s


def test_a_one_unit_layer_on_a_run_that_cannot_fit_is_underfitting_naming_the_layer():
    found = by_code(narrow_stalled(1))
    issue = found["UNDERFITTING"]
    assert issue.layer == "fc1" and issue.severity in ("warning", "critical")
    assert "layer fc1 has 1 unit, fewer than the 9 directions 10 classes need" in issue.evidence
    assert issue.recommendations[0].startswith("Use a bigger model")
    # its dead unit is the bottleneck's doing, said in its evidence, not a second cause
    assert "DEAD_NEURONS" not in found and "DEAD_NEURONS" in issue.evidence
    # the same stalled run with its layers wide enough: the units' death is the finding
    wide = by_code(narrow_stalled(64))
    assert "DEAD_NEURONS" in wide
    assert wide.get("UNDERFITTING") is None or wide["UNDERFITTING"].layer is None


def test_a_narrow_layer_that_fits_its_data_is_not_a_finding():
    s = run()  # training accuracy reaches 0.99
    s.layer_width = {"fc1": 2, "fc2": 64, "fc3": 10}
    assert "UNDERFITTING" not in by_code(s)


def test_a_narrow_layer_is_named_before_the_first_epoch_ends_from_the_sampled_loss():
    s = narrow_stalled(1)
    s.step, s.loss = [10, 20, 30], [2.3, 2.2, 2.2]
    for name in ("epoch_step", "epoch_train_loss", "epoch_val_loss", "epoch_train_acc"):
        setattr(s, name, [])
    s.epoch_val_acc, s.layer_step, s.layer_dead_fraction = [], [], {}
    issue = by_code(s)["UNDERFITTING"]
    assert issue.first_step == 30 and "training loss 2.2" in issue.evidence
    s.step, s.loss = (
        [10],
        [2.3],
    )  # the first read (step 10) already names it: the layer is there from the start
    assert by_code(s)["UNDERFITTING"].first_step == 10
    s.step, s.loss = [5], [2.3]  # not before the first read
    assert "UNDERFITTING" not in by_code(s)


def _hand_loop(width: int) -> dict:
    """Ten Gaussian classes in 16 dimensions through a hidden layer of ``width`` units, 6 epochs."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 16, generator=g) * 2
    y = torch.randint(0, 10, (640,), generator=g)
    x = centers[y] + torch.randn(640, 16, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    debugger = TrainingDebugger().watch(model, opt, num_classes=10)
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            debugger.train_step(loss)
        with torch.no_grad():
            logits = model(x)
        debugger.end_epoch(
            val_loss=nn.functional.cross_entropy(logits, y).item(),
            val_acc=(logits.argmax(1) == y).float().mean().item(),
        )
    return debugger.finish()


def test_a_hand_loop_with_a_one_unit_layer_is_told_the_model_is_too_small():
    report = _hand_loop(1)
    (issue,) = [d for d in report["details"] if d["code"] == "UNDERFITTING"]
    assert issue["layer"] == "0" and "has 1 unit" in issue["evidence"], report["details"]
    wide = _hand_loop(64)
    assert not [d for d in wide["details"] if d.get("layer") == "0" and "unit" in d["evidence"]]
    assert "UNDERFITTING" not in wide["issues"], wide["details"]


# -- a plateau the schedule made ---------------------------------------------------------------------------
def settled(cut: float) -> RunSeries:
    """Loss falls to 0.9 by the middle and stays (accuracy 0.7); the LR x ``cut`` over the last half."""
    s = run()
    n = len(s.loss)
    s.loss = list(np.linspace(LN10, 0.9, n // 2)) + [0.9] * (n - n // 2)
    s.lr = [1e-3] * (n // 2) + [1e-3 * cut] * (n - n // 2)
    epochs = len(s.epoch_step)
    s.epoch_train_acc, s.epoch_val_acc = [0.7] * epochs, [0.7] * epochs
    s.epoch_train_loss = [0.9] * epochs
    s.epoch_val_loss = [0.92] * epochs
    return s


def test_a_plateau_at_a_constant_lr_is_reported_and_one_the_schedule_annealed_is_not():
    assert "LOSS_PLATEAU" in by_code(settled(1.0))
    # the LR at 1% of its peak over the second half: the schedule's doing
    assert "LOSS_PLATEAU" not in by_code(settled(0.01))
    assert "LOSS_PLATEAU" in by_code(settled(0.5))  # halved is not annealed
    # cut 100x at a tenth of the run: a decay too early, its plateau is reported
    early = settled(0.01)
    n = len(early.lr)
    early.lr = [1e-3] * (n // 10) + [1e-5] * (n - n // 10)
    assert "LOSS_PLATEAU" in by_code(early) or "LR_DECAYED_TOO_EARLY" in by_code(early)


# -- overfitting that costs accuracy ------------------------------------------------------------------------
def overfit(val_acc_end: float) -> RunSeries:
    """Training loss to 0.004; validation loss 0.076 at epoch 3 rising to 0.115; val accuracy ends at
    ``val_acc_end`` (its best was 0.97), training accuracy 1.0 at the end."""
    s = run(n=48)
    epochs = len(s.epoch_step)
    s.epoch_train_loss = list(np.geomspace(0.5, 0.004, epochs))
    s.epoch_val_loss = [0.3, 0.12, 0.076] + list(np.linspace(0.08, 0.115, epochs - 3))
    s.epoch_train_acc = list(np.linspace(0.9, 1.0, epochs))
    s.epoch_val_acc = [0.9, 0.95, 0.97] + list(np.linspace(0.97, val_acc_end, epochs - 3))
    return s


def test_overfitting_is_a_warning_only_when_it_costs_validation_accuracy():
    mild = by_code(overfit(0.968))["OVERFITTING"]
    assert mild.severity == "info" and "rose to" in mild.evidence
    assert by_code(overfit(0.93))["OVERFITTING"].severity == "warning"  # 0.04 below its best


# -- a peak LR that throws the fit away -----------------------------------------------------------------------
def climbed_back(lr_rise: float) -> RunSeries:
    """A one-cycle run: the loss falls to 1.3 by step 20, then sits at ln(10) while the LR rises x``lr_rise``."""
    s = run(n=24)
    n, epochs = len(s.loss), len(s.epoch_step)
    s.loss = [2.1, 1.3, 1.8] + [2.33] * (n - 3)
    s.lr = list(np.linspace(0.1, 0.1 * lr_rise, n))
    s.epoch_train_loss, s.epoch_val_loss = [2.0] + [2.33] * (epochs - 1), [2.32] * epochs
    s.epoch_train_acc, s.epoch_val_acc = [0.3] + [0.1] * (epochs - 1), [0.09] * epochs
    return s


def test_a_loss_thrown_back_to_chance_as_the_lr_rises_is_oscillation_not_a_label_bug():
    found = by_code(climbed_back(10.0))
    issue = found["LOSS_OSCILLATION"]
    assert "climbed back to chance" in issue.evidence and "as the LR rose" in issue.evidence
    assert (
        "STUCK_AT_CHANCE" not in found and issue.severity == "critical"
    )  # it explains the chance level
    # the same curve at a constant LR: nothing says the LR did it
    flat = by_code(climbed_back(1.0))
    assert (
        "climbed back to chance"
        not in flat.get("LOSS_OSCILLATION", Issue("LOSS_OSCILLATION", "info", 0, "")).evidence
    )
