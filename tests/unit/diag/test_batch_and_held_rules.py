"""A batch size extreme for its split, named from the run's settings, and a warning that held over most of
a finished run's second half kept in its final report: each rule on simulated series with its negative case."""

from __future__ import annotations

import math

import numpy as np
from helpers.series import converging_run

from diag.codes import Issue
from diag.diagnosis import diagnose
from diag.series import RunSeries

LN10 = math.log(10)


def by_code(s: RunSeries) -> dict[str, Issue]:
    return {i.code: i for i in diagnose(s)}


# -- the batch size against the split ------------------------------------------------------------------------
def whole_split(final_acc: float) -> RunSeries:
    """10 epochs of one step each (the batch is the whole split), training accuracy rising to ``final_acc``."""
    acc = list(np.linspace(0.09, final_acc, 10))
    loss = list(np.linspace(2.37, 2.37 - 2.2 * (final_acc - 0.09), 10))
    return RunSeries(
        num_classes=10,
        step=list(range(1, 11)),
        loss=loss,
        lr=[1e-3] * 10,
        epoch_step=list(range(1, 11)),
        epoch_train_loss=loss,
        epoch_val_loss=[v * 0.95 for v in loss],
        epoch_train_acc=acc,
        epoch_val_acc=acc,
        planned_steps=10,
        batch_size=1294,
        steps_per_epoch=1,
        input_mean=0.0,
        input_std=1.0,
    )


def test_a_batch_of_the_whole_split_on_a_run_that_does_not_fit_is_underfitting_naming_the_batch():
    issue = by_code(whole_split(0.54))["UNDERFITTING"]
    assert (
        issue.severity == "warning" and issue.first_step == 1
    )  # the setting shows at the first epoch
    assert (
        "batch 1294 holds the whole training split: one optimizer step an epoch, 10 steps"
        in issue.evidence
    )
    assert "training accuracy 0.540" in issue.evidence
    assert issue.lead == 3  # the batch size advice first
    # the same 10 steps that did fit: no finding about the batch
    assert "UNDERFITTING" not in by_code(whole_split(0.95))


def test_a_run_of_a_few_hundred_steps_at_batch_512_is_not_a_batch_fault():
    s = converging_run(40, 0, batch_size=512, steps_per_epoch=3)
    assert "UNDERFITTING" not in by_code(s)


def tiny_batch(level: float, batch: int = 2) -> RunSeries:
    """300 steps at batch ``batch`` (less than one epoch of 583 steps), a noisy sampled loss settling at ``level``."""
    rng = np.random.default_rng(0)
    n = 30
    loss = list(np.linspace(2.3, level, n) + rng.normal(0, 0.12, n))
    return RunSeries(
        num_classes=10,
        step=list(range(10, 301, 10)),
        loss=loss,
        lr=[4e-4] * n,
        planned_steps=300,
        batch_size=batch,
        steps_per_epoch=583,
        input_mean=0.0,
        input_std=1.0,
    )


def test_a_batch_of_two_on_a_run_left_unfitted_is_underfitting_and_explains_its_noisy_loss():
    found = by_code(tiny_batch(1.7))
    issue = found["UNDERFITTING"]
    assert issue.evidence.startswith("batch 2: each step's gradient is the mean of 2 examples")
    assert "300 steps read 600 examples, 51% of one epoch" in issue.evidence
    assert issue.first_step == 20
    assert not {"LOSS_PLATEAU", "LOSS_OSCILLATION", "STUCK_AT_CHANCE"} & found.keys()
    # batch 2 that fits (loss well under half of ln(10)), and batch 8 at the same level: no batch finding
    assert "UNDERFITTING" not in by_code(tiny_batch(0.4))
    assert not any(i.evidence.startswith("batch") for i in diagnose(tiny_batch(1.7, batch=8)))


# -- a warning held over most of a finished run ---------------------------------------------------------------
def memorising(last_gap: float, closed_from: int | None = None, finished: bool = True) -> RunSeries:
    """40 epochs on a tiny training set: every training example right from epoch 10, validation 0.2 behind
    with its loss far above training's, creeping down; the last epoch's gap is ``last_gap``. From epoch
    ``closed_from`` on the gap is closed (validation 0.9)."""
    s = converging_run(160, 0, batch_size=16)
    e = len(s.epoch_step)
    tacc = [min(1.0, 0.3 + 0.07 * i) for i in range(e)]
    vacc = [min(0.8, 0.3 + 0.05 * i) for i in range(e)]
    vacc[-1] = 1.0 - last_gap
    if closed_from is not None:
        vacc[closed_from:] = [0.9] * (e - closed_from)
    s.epoch_train_acc, s.epoch_val_acc = tacc, vacc
    s.epoch_train_loss = [max(0.01, 2.0 - 0.2 * i) for i in range(e)]
    s.epoch_val_loss = [
        max(0.5, 2.0 - 0.1 * i) - 0.002 * i for i in range(e)
    ]  # still creeping down
    if not finished:
        s.planned_steps = 10 * 400
    return s


def test_a_memorising_warning_that_held_most_of_the_second_half_stays_with_how_long_it_held():
    s = memorising(last_gap=0.14)
    issue = by_code(s)["OVERFITTING"]
    assert issue.severity == "warning"
    assert "the model memorised its training examples" in issue.evidence
    assert "seen at 12 of 12 checks over the run's second half" in issue.evidence
    assert "not at its end" in issue.evidence


def test_a_held_warning_is_not_kept_when_the_end_shows_it_resolved_or_the_run_is_not_over():
    # the gap closed over the last quarter of the run: resolved, nothing kept
    assert "OVERFITTING" not in by_code(memorising(last_gap=0.1, closed_from=32))
    # mid-run (planned steps not reached) the rules speak of the present only
    assert "OVERFITTING" not in by_code(memorising(last_gap=0.14, finished=False))


def test_until_cuts_every_series_at_the_step():
    s = converging_run(40, 0)
    cut = s.until(200)
    assert cut.step[-1] == 200 and len(cut.loss) == len(cut.step) == len(cut.grad_norm) == 20
    assert cut.epoch_step == [40, 80, 120, 160, 200] and len(cut.epoch_train_acc) == 5
    assert all(st <= 200 for st in cut.layer_step) and len(cut.layer_grad_norm["fc1"]) == len(
        cut.layer_step
    )
    assert len(s.step) == 40  # the original is untouched


# -- a validation swing is not overfitting; a usable model stopped early is a note ----------------------------
def swinging(end_val: float) -> RunSeries:
    """A batch-norm CNN under a one-cycle peak: validation loss 0.3 -> 0.83 mid-run with the accuracy
    swinging, the training loss falling throughout; validation loss ``end_val`` at the end."""
    s = converging_run(168, 0, batch_size=256)
    e = len(s.epoch_step)
    s.epoch_train_loss = list(np.linspace(2.3, 0.2, e))
    s.epoch_train_acc = list(np.minimum(0.95, np.linspace(0.1, 1.1, e)))
    val = [max(0.3, 2.3 - 0.4 * i) for i in range(7)] + [0.83] * (e - 7)
    val[-8:] = list(np.linspace(0.8, end_val, 8))
    s.epoch_val_loss = val
    s.epoch_val_acc = [0.8] * (e - 8) + list(np.linspace(0.85, 0.97, 8))
    return s


def test_a_validation_loss_that_comes_back_below_its_best_was_a_swing_not_overfitting():
    assert "OVERFITTING" not in by_code(swinging(end_val=0.22))
    # the same rise that stays up to the end is overfitting
    assert "OVERFITTING" in by_code(swinging(end_val=0.6))


def test_a_run_stopped_while_learning_is_a_note_when_validation_is_already_at_0_9():
    s = converging_run(24, 0, batch_size=32)
    e = len(s.epoch_step)
    s.epoch_train_loss = list(np.linspace(2.2, 1.0, e))  # augmentation keeps it above validation's
    s.loss = list(np.linspace(2.4, 1.0, len(s.loss)))
    s.epoch_train_acc = list(np.linspace(0.3, 0.82, e))
    s.epoch_val_loss = list(np.linspace(1.9, 0.6, e))
    s.epoch_val_acc = list(np.linspace(0.6, 0.931, e))
    issue = by_code(s)["UNDERFITTING"]
    assert issue.severity == "info" and "still falling" in issue.evidence
    s.epoch_val_acc = list(np.linspace(0.3, 0.7, e))  # far from usable: the warning stands
    assert by_code(s)["UNDERFITTING"].severity == "warning"


# -- a short run that ends unfitted and flat ---------------------------------------------------------------------
def short_unfitted(end_level: float) -> RunSeries:
    """3 epochs of 160 steps: the loss falls from ln(10) to 1.8 by mid-run, then goes to ``end_level``."""
    rng = np.random.default_rng(1)
    steps = list(range(10, 481, 10))
    n = len(steps)
    half = n // 2
    loss = list(np.linspace(LN10, 1.8, half)) + list(np.linspace(1.8, end_level, n - half))
    return RunSeries(
        num_classes=10,
        step=steps,
        loss=[v + rng.normal(0, 0.04) for v in loss],
        lr=[5e-4] * n,
        epoch_step=[160, 320, 480],
        epoch_train_loss=[2.24, 1.85, 1.79],
        epoch_train_acc=[0.13, 0.2, 0.2],
        epoch_val_loss=[1.9, 1.79, 1.7],
        epoch_val_acc=[0.2, 0.236, 0.236],
        planned_steps=480,
        batch_size=8,
        input_mean=0.0,
        input_std=1.0,
    )


def test_a_three_epoch_run_that_ends_unfitted_with_a_flat_loss_is_underfitting():
    issue = by_code(short_unfitted(1.8))["UNDERFITTING"]
    assert issue.severity == "warning"
    assert issue.evidence.startswith("validation accuracy 0.236 when the run ended")
    assert "flat at" in issue.evidence
    # the same run with its loss still falling at the end is not this (it may be a run stopped too soon)
    assert not any(
        i.evidence.startswith("validation accuracy") for i in diagnose(short_unfitted(1.0))
    )
    # nor the same run unfinished (planned steps ahead)
    s = short_unfitted(1.8)
    s.planned_steps = 2000
    assert not any(i.evidence.startswith("validation accuracy") for i in diagnose(s))


# -- the earliest LR cut ------------------------------------------------------------------------------------
def test_an_lr_cut_100x_at_step_25_while_the_loss_falls_is_lr_decayed_too_early():
    """Steps sampled every 10: the cut at step 25 leaves three samples before it (2.1, 1.0, 0.35)."""
    n = 23
    s = converging_run(n, 0, batch_size=128)
    s.loss = [2.125, 1.02, 0.345] + [0.27] * (n - 3)
    s.lr = [0.065, 0.065, 6.5e-4] + [6.5e-6] * (n - 3)
    issue = by_code(s)["LR_DECAYED_TOO_EARLY"]
    assert issue.first_step == 30 and "while the loss was still falling" in issue.evidence
    # the same loss under a constant LR: no schedule finding
    s.lr = [0.065] * n
    assert "LR_DECAYED_TOO_EARLY" not in by_code(s)


def test_memorising_32_examples_under_dropout_is_overfitting_though_training_accuracy_swings():
    """Training accuracy read with dropout on swings by an example (0.969, 1.0, 0.938); validation 0.646."""
    s = converging_run(240, 0, batch_size=16)
    e = len(s.epoch_step)
    swing = [1.0, 0.938, 1.0, 0.969]
    s.epoch_train_acc = [min(0.9, 0.05 * i) for i in range(e - 20)] + [
        swing[i % 4] for i in range(20)
    ]
    s.epoch_val_acc = [min(0.646, 0.03 * i) for i in range(e)]
    s.epoch_train_loss = [max(0.3, 2.3 - 0.05 * i) for i in range(e)]
    s.epoch_val_loss = [max(1.59, 2.3 - 0.03 * i) - 0.0001 * i for i in range(e)]  # creeping down
    s.epoch_train_acc[-1] = 0.938  # the last epoch is one of the low reads
    issue = by_code(s)["OVERFITTING"]
    assert "the model memorised its training examples" in issue.evidence
    # the same run whose training accuracy stays at 0.94 (not every example right): not memorising
    s.epoch_train_acc = [min(0.94, 0.05 * i) for i in range(e)]
    assert "OVERFITTING" not in by_code(s)
