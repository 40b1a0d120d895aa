"""A run at chance whose weights barely move is told to raise its LR first, not to check its labels.

A far-too-low LR (SGD at 1e-5 on the digits) was named STUCK_AT_CHANCE at step 40-50 with "Check that
labels match inputs" before SLOW_CONVERGENCE explained it at step 80. The code stays STUCK_AT_CHANCE (the
run is at chance); its evidence and first advice now say what the update ratio measured.
"""

from __future__ import annotations

import math

from diag.diagnosis import STILL_RATIO, diagnose, weights_still
from diag.series import RunSeries


def _at_chance(update_ratio: float) -> RunSeries:
    """The digits MLP's first 50 steps at an LR far too low: two epochs of 20 steps at chance (what the
    live diagnosis sees at step 50, before SLOW_CONVERGENCE has the steps to explain it)."""
    s = RunSeries(num_classes=10)
    s.step = [10, 20, 30, 40, 50]
    s.loss = [math.log(10)] * 5
    s.grad_norm = [0.5] * 5
    s.lr = [1e-5] * 5
    s.layer_step = [1, 10, 20, 25, 30, 40, 50]
    s.update_ratio = [update_ratio] * len(s.layer_step)
    s.epoch_step = [20, 40]
    s.epoch_val_acc = [0.1, 0.1]
    s.epoch_val_loss = [math.log(10)] * 2
    s.epoch_train_acc = [0.1, 0.1]
    s.epoch_train_loss = [math.log(10)] * 2
    return s


def _stuck(s: RunSeries):
    return next(i for i in diagnose(s) if i.code == "STUCK_AT_CHANCE")


def test_still_weights_lead_with_the_learning_rate():
    issue = _stuck(_at_chance(2.7e-6))
    assert issue.severity == "critical"
    assert issue.evidence.endswith("; its weights stand still (median update ratio 2.7e-06 a step)")
    assert issue.recommendations[0].startswith("Raise the learning rate 10-100x")
    assert issue.recommendations[1].startswith("Check that labels match inputs")


def test_moving_weights_at_chance_still_point_at_the_labels_first():
    issue = _stuck(_at_chance(3e-3))
    assert "stand still" not in issue.evidence
    assert issue.recommendations[0].startswith("Check that labels match inputs")


def test_weights_still_is_the_median_below_the_bound():
    s = _at_chance(1e-6)
    assert weights_still(s) == 1e-6
    s.update_ratio = [STILL_RATIO * 2, 1e-6, STILL_RATIO * 3]
    assert weights_still(s) is None  # the median moves
    s.update_ratio = []
    assert weights_still(s) is None  # not measured: nothing said
