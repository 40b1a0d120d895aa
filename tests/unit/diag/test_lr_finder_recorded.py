"""``auto``'s reading on range tests recorded by bench/lr_finder.py, against each task's measured grid.

data/lr_find_curves.json holds 23 real curves (the runner's range test, 100 steps from 1e-7 to 10,
EMA 0.98) with their tasks' grids of 4-epoch test accuracies (3-seed means where the bench ran them
at 3 seeds; the two batch-256 CNNs' grids also hold 0.2 and 0.5, trained at the same 3 seeds to choose
their ceiling). The synthetic curves of test_lr_finder_rules.py pin each branch's arithmetic; these pin
what the branches make of the curves the rule was tuned on, so a change to a threshold that moves a
real task's suggestion shows here first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diag.lr_finder import (
    EDGE_SPAN,
    HARD_TASK_CAP,
    WEAK_FALL,
    LearningRateFinder,
    relative_fall,
)

CURVES = json.loads((Path(__file__).parent / "data" / "lr_find_curves.json").read_text())["curves"]

# task@seed -> (the rule auto reads, its LR, the ceiling that held it or None), as the rule stands
EXPECTED = {
    # SGD that found an edge: the steepest fall
    "mlp/sgd/digits@seed0": ("descent", 0.115, None),
    # a BatchNorm CNN's SGD test that never diverged: held at SGD's conventional 0.1 (batch 64)
    "cnn/sgd/mnist28@seed0": ("descent", 0.1, 0.1),
    "cnn/sgd_hb/cifar32/seed3@seed3": ("min2", 0.1, 0.1),
    "cnn/sgd_hb/cifar32/seed3@seed103": ("min2", 0.1, 0.1),
    # the same at batch 256: 0.1 x sqrt(256 / 64) = 0.2 (round 7's held-out misses at 0.1: 0.806, 0.946)
    "cnn/sgd_hb/cifar32/bs256/seed5@seed5": ("descent", 0.2, 0.2),
    "cnn/sgd/fmnist28/bs256/seed4@seed4": ("descent", 0.2, 0.2),
    # SGD whose loss hardly fell before its edge: half the minimum's LR
    "mlp_wide/sgd_hb/mnist28/bs256@seed0": ("min2", 0.0834, None),
    "mlp/sgd/cifar32@seed200": ("min2", 0.0834, None),
    "mlp_wide/sgd/fmnist28@seed0": ("min2", 0.211, None),
    # round 8's held-out curves whose lowest point sat far under the edge (7.1e-3; 9.3e-7, the test's
    # start): the minimum within EDGE_SPAN of the test's end instead, still under the target (below)
    "cnn/sgd_hb/cifar32/bs32/seed6@seed206": ("min2", 0.0227, None),
    "mlp_wide/sgd_hb/fmnist28/bs32/seed6@seed6": ("min2", 0.307, None),
    # Adam(W) on an easy curve: a fifth of the minimum, at most 1e-2 (here a tenth was right, best 3e-3
    # and 1e-3: a fifth still trains to over 0.95 of the best)
    "mlp/adam/mnist28@seed0": ("min5", 5.19e-3, None),
    "mlp_wide/adam/mnist28/bs256@seed0": ("min5", 2.05e-3, None),
    "cnn/adam/mnist28/bs256/seed3@seed3": ("min5", 1e-2, 1e-2),
    # round 7's held-out misses under minimum/10 (0.949 and 0.909 on 3-seed means): best at 3e-3
    "mlp_wide/adamw/mnist28/seed5@seed5": ("min5", 2.97e-3, None),
    "mlp_wide/adamw/mnist28/seed5@seed105": ("min5", 2.05e-3, None),
    "mlp_wide/adamw/mnist28/seed5@seed205": ("min5", 1.70e-3, None),
    "mlp/adam/fmnist28/bs256/seed4@seed4": ("min5", 3e-3, 3e-3),
    # Adam on a loss that fell 5-10%: at most 3e-3
    "cnn/adam/cifar32@seed0": ("min5", 3e-3, 3e-3),
    # Adam(W) on a loss that hardly fell: the minimum's own LR, at most 3e-3
    "mlp/adam/cifar32@seed0": ("min1", 2.31e-3, None),
    "mlp/adam/cifar32@seed100": ("min1", 1.59e-3, None),
    "mlp/adam/cifar32@seed200": ("min1", 3e-3, 3e-3),
    "mlp/adamw/cifar32/seed1@seed1": ("min1", 3e-3, 3e-3),
}
# the grid read at the suggestion (log-LR interpolation) over the grid's best: at least this, but for
# the one curve below (its minimum at 1.6e-3 on a grid whose 1e-3 and 3e-3 read 0.332 and 0.364)
TARGET = 0.95
BELOW_TARGET = {
    "mlp/adam/cifar32@seed100": 0.949,
    # read 0.0227 on a grid whose 0.01 and 0.03 read 0.428 and 0.570 (its other seeds read 0.027-0.069)
    "cnn/sgd_hb/cifar32/bs32/seed6@seed206": 0.93,
    # read 0.307 where 0.1 was best (0.519) and 0.3 read 0.338: no chance any more, still an overshoot
    "mlp_wide/sgd_hb/fmnist28/bs32/seed6@seed6": 0.64,
}


def recorded(key: str) -> LearningRateFinder:
    """A finder holding one recorded curve (no range test run), as ``lr_find.method=auto`` would."""
    c = CURVES[key]
    finder = LearningRateFinder(
        min_lr=c["min_lr"],
        max_lr=c["max_lr"],
        num_steps=100,
        optimizer_family=c["family"],
        batch_size=c["batch_size"],
    )
    finder.lrs, finder.losses = list(c["lrs"]), list(c["losses"])
    finder.smoothed_losses = list(c["smoothed_losses"])
    return finder


def grid_ratio(key: str, lr: float) -> float:
    """The task's grid accuracy at ``lr`` (interpolated in log-LR, flat past the ends) over its best."""
    grid = {float(k): v for k, v in CURVES[key]["grid_mean_acc"].items()}
    lrs = sorted(grid)
    accs = [grid[x] for x in lrs]
    return float(np.interp(np.log(lr), np.log(lrs), accs)) / max(accs)


def test_every_recorded_curve_has_its_expectation():
    assert set(EXPECTED) == set(CURVES)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_auto_reads_the_recorded_curve_as_expected_and_lands_near_the_grid_best(key):
    method, lr, cap = EXPECTED[key]
    result = recorded(key).suggest()
    assert result["method"] == method
    assert result["lr"] == pytest.approx(lr, rel=0.01)
    assert result.get("capped_at") == cap
    assert grid_ratio(key, result["lr"]) >= BELOW_TARGET.get(key, TARGET)


def test_an_adam_curve_reads_a_fifth_of_its_minimum_where_a_tenth_undershot():
    """Round 7's held-out mlp_wide/adamw/mnist28/seed5: minima at 0.85e-2-1.5e-2, the grid's best at 3e-3
    (0.882 mean), 1e-3 at 0.834; a tenth of the minimum trained to 0.949 of the best, under the target
    (the grid read in log-LR puts it at 0.953: a trained run sits under the straight line)."""
    keys = [k for k in CURVES if k.startswith("mlp_wide/adamw/mnist28/seed5@")]
    assert len(keys) == 3
    for key in keys:
        fifth, tenth = recorded(key).suggest(), recorded(key).suggest("min10")
        assert fifth["method"] == "min5" and fifth["lr"] == pytest.approx(2 * tenth["lr"])
        assert grid_ratio(key, fifth["lr"]) > grid_ratio(key, tenth["lr"])
        assert fifth["lr"] <= 3e-3  # never past the grid's best here
    assert np.mean([grid_ratio(k, recorded(k).suggest()["lr"]) for k in keys]) >= 0.98


def test_a_batch_256_batchnorm_cnn_with_no_edge_is_held_at_0_2_not_0_1():
    """Round 7's held-out batch-256 CNNs with SGD: no edge up to lr=10, `descent` read 0.24-0.51; 0.1 trained
    to 0.80-0.81 of the best of the grid with 0.2 and 0.5 added, 0.2 was the best, 0.5 lost 40-75%."""
    for key in ("cnn/sgd_hb/cifar32/bs256/seed5@seed5", "cnn/sgd/fmnist28/bs256/seed4@seed4"):
        finder = recorded(key)
        assert finder.found_no_edge() and finder.batch_size == 256
        auto = finder.suggest()
        assert auto["capped_at"] == pytest.approx(0.2) and finder.suggest("descent")["lr"] > 0.2
        assert grid_ratio(key, auto["lr"]) == pytest.approx(1.0)
        assert grid_ratio(key, 0.1) < 0.85 and grid_ratio(key, 0.5) < 0.6
        # the batch unknown: SGD's conventional 0.1, as before
        finder.batch_size = None
        assert finder.suggest()["lr"] == pytest.approx(0.1)


def test_a_hardly_falling_adam_curve_reads_its_minimum_not_half_of_it():
    """mlp/adam/cifar32 at 3 seeds: minima at 1.6e-3-4e-3, the grid's best at 3e-3 (0.364 mean), 1e-3
    at 0.332: half the minimum read 0.8e-3-2e-3 and trained to 0.916 of the best."""
    keys = [k for k in CURVES if k.startswith("mlp/adam/cifar32@")]
    assert len(keys) == 3
    for key in keys:
        finder = recorded(key)
        start, end = finder._window()
        smoothed = np.asarray(finder.smoothed_losses[start:end])
        assert relative_fall(smoothed) < WEAK_FALL
        at_min = finder.lrs[start + int(np.argmin(smoothed))]
        auto = finder.suggest()
        assert auto["lr"] == pytest.approx(min(at_min, HARD_TASK_CAP), rel=1e-6)
        half = finder.suggest("min2")["lr"]
        assert half == pytest.approx(at_min / 2, rel=1e-6)
        assert grid_ratio(key, auto["lr"]) > grid_ratio(key, half)
    # over the three seeds: the old reading averaged under the target, this one over it
    assert np.mean([grid_ratio(k, recorded(k).suggest("min2")["lr"]) for k in keys]) < TARGET
    assert np.mean([grid_ratio(k, recorded(k).suggest()["lr"]) for k in keys]) >= TARGET


def test_a_flat_sgd_curve_reads_its_minimum_near_the_edge_not_at_the_test_start():
    """Round 8's held-out misses in SGD's weak-fall branch: on one seed each the smoothed minimum sat
    1400x (7.1e-3) and 3e6x (9.3e-7, the test's start, on a curve that fell 0.07%) under the test's last
    LR; half of it trained to 0.195 and to chance. Every other weak-fall SGD curve recorded here keeps
    its reading: its minimum sat within EDGE_SPAN of the test's end."""
    moved = ("cnn/sgd_hb/cifar32/bs32/seed6@seed206", "mlp_wide/sgd_hb/fmnist28/bs32/seed6@seed6")
    for key in moved:
        finder = recorded(key)
        start, end = finder._window()
        smoothed = np.asarray(finder.smoothed_losses[start:end])
        lrs = np.asarray(finder.lrs[start:end])
        assert relative_fall(smoothed) < WEAK_FALL
        at_min = lrs[int(np.argmin(smoothed))]
        assert at_min < finder.lrs[-1] / EDGE_SPAN  # the global minimum: far from the edge
        auto = finder.suggest()
        assert auto["method"] == "min2" and auto["lr"] >= finder.lrs[-1] / EDGE_SPAN / 2
        # the global minimum's half trained far worse on the grid than the reading near the edge
        assert grid_ratio(key, at_min / 2) < 0.45 < 0.6 < grid_ratio(key, auto["lr"])
    for key, (method, *_) in EXPECTED.items():
        finder = recorded(key)
        if key in moved or method != "min2":
            continue
        start, end = finder._window()
        smoothed = np.asarray(finder.smoothed_losses[start:end])
        at_min = finder.lrs[start + int(np.argmin(smoothed))]
        assert at_min >= finder.lrs[-1] / EDGE_SPAN
        assert finder.suggest("min2")["lr"] == pytest.approx(at_min / 2)
