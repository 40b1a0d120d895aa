"""The LR finder's fallback for a curve too short to read: never at or above the LR where the test
diverged, never outside [min_lr, max_lr]; ``10 * min_lr`` kept where the test passed it unbroken.

Before: a fixed ``10 * min_lr``, so ``min_lr=1 max_lr=2`` (diverged at 1.01 after 2 points) suggested 10.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from diag.lr_finder import MIN_POINTS, LearningRateFinder


def exploding_above(limit: float, scale: float = 1.0):
    """``train_fn`` of one gradient step on ``0.5 * w^2 * 2/limit``: the loss shrinks for lr < limit
    and grows ever faster above it (the quadratic's stability edge)."""
    state = {"w": 3.0}
    h = 2.0 / limit

    def train_fn(lr: float) -> float:
        w = state["w"]
        state["w"] = w - lr * h * w * scale
        return 0.5 * h * w * w

    return train_fn


def test_a_test_that_diverges_at_its_second_point_suggests_its_lowest_lr_not_ten_times_it():
    finder = LearningRateFinder(min_lr=1.0, max_lr=2.0, num_steps=100, smooth=0.0)
    result = finder.range_test(exploding_above(0.2))  # every LR in [1, 2] is far past the edge
    assert "diverged" in result["stop_reason"] and result["num_steps_run"] < MIN_POINTS
    broke = result["diverged_lr"]
    assert broke == result["lrs"][-1] and 1.0 < broke < 2.0
    assert result["suggested_lr"] == 1.0 == result["min_lr"] < broke
    assert result["method"] == "fallback (fewer than 10 points: min_lr, the lowest LR tried)"
    assert result["suggested_index"] is None
    assert set(result["suggestions"].values()) == {1.0}  # every rule falls back alike


# (min_lr, max_lr, num_steps, the quadratic's edge, smooth): diverging at the second point, mid-way and
# near the end; a short test that never diverges, with 10 x min_lr past max_lr, and at max_lr
CASES = [
    (1.0, 2.0, 100, 0.2, 0.0),
    (1.0, 2.0, 100, 0.2, 0.98),
    (1e-3, 1.0, 10, 0.1, 0.0),
    (1e-3, 5e-3, 12, 2e-3, 0.0),
    (1e-2, 10.0, 10, 0.5, 0.0),
    (0.5, 4.0, 6, 1.0, 0.0),
    (1e-5, 1e-4, 5, 1.0, 0.98),
]


@pytest.mark.parametrize("min_lr, max_lr, num_steps, edge, smooth", CASES)
def test_the_fallback_is_under_the_divergence_and_inside_the_range(
    min_lr, max_lr, num_steps, edge, smooth
):
    finder = LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_steps=num_steps, smooth=smooth)
    result = finder.range_test(exploding_above(edge))
    assert result["num_steps_run"] < MIN_POINTS
    lr = result["suggested_lr"]
    assert result["method"].startswith("fallback (fewer than 10 points")
    assert min_lr <= lr <= max_lr
    if result["diverged_lr"] is not None:
        assert lr < result["diverged_lr"]
        # and never above an LR the test passed unbroken
        assert lr <= max(x for x in result["lrs"] if x < result["diverged_lr"])
    assert lr in (min_lr, 10 * min_lr)


def test_a_short_test_that_passed_ten_times_min_lr_still_falls_back_to_it():
    """The documented fallback where it is safe: a short, unbroken test (the seed API's test)."""
    finder = LearningRateFinder(min_lr=1e-5, max_lr=1.0, num_steps=5)
    result = finder.range_test(lambda lr: 1.0)
    assert result["suggested_lr"] == pytest.approx(1e-4) and result["diverged_lr"] is None
    assert result["method"] == "fallback (fewer than 10 points: 10 x min_lr)"


def test_ten_times_min_lr_past_the_divergence_falls_to_min_lr():
    # 10 steps from 1e-2 to 10: 1e-1 is the 4th LR; diverging at the 3rd (~4.6e-2) leaves it unsafe
    finder = LearningRateFinder(min_lr=1e-2, max_lr=10.0, num_steps=10, smooth=0.0)
    result = finder.range_test(exploding_above(0.02, scale=50.0))
    assert result["diverged_lr"] is not None and result["diverged_lr"] < 0.1
    assert result["suggested_lr"] == 1e-2


def test_a_non_finite_loss_mid_test_counts_as_where_it_broke():
    """A non-finite loss is not recorded as a point: its LR is still where the test broke."""
    schedule = LearningRateFinder(min_lr=1e-3, max_lr=1.0, num_steps=10).schedule()
    finder = LearningRateFinder(min_lr=1e-3, max_lr=1.0, num_steps=10, smooth=0.0)
    result = finder.range_test(lambda lr: 1.0 if lr < schedule[2] * 0.999 else math.inf)
    assert result["lrs"] == pytest.approx(list(schedule[:2]))
    assert (
        result["diverged_lr"] == pytest.approx(schedule[2])
        and "non-finite" in result["stop_reason"]
    )
    # 10 x min_lr = 1e-2 sits over the break at 4.6e-3: the lowest LR tried
    assert result["suggested_lr"] == 1e-3 < result["diverged_lr"]


def test_a_readable_curve_is_read_by_its_rule_not_the_fallback():
    finder = LearningRateFinder(min_lr=1e-4, max_lr=100.0, num_steps=100)
    result = finder.range_test(exploding_above(1.0))
    assert result["num_steps_run"] >= MIN_POINTS and result["method"] == "min10"
    assert result["suggested_index"] is not None and result["suggested_lr"] < result["diverged_lr"]


# -- torch mode ------------------------------------------------------------------------
def _problem(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    batches = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(4)]
    return model, batches


def test_torch_mode_diverging_at_once_falls_back_under_the_divergence_and_restores_the_model():
    model, batches = _problem()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    finder = LearningRateFinder(min_lr=50.0, max_lr=100.0, num_steps=100, smooth=0.5)
    result = finder.range_test_torch(model, opt, batches, nn.functional.cross_entropy)
    assert result["num_steps_run"] < MIN_POINTS and result["diverged_lr"] is not None
    assert 50.0 <= result["suggested_lr"] < result["diverged_lr"]
    assert result["suggested_lr"] == 50.0  # 10 x min_lr = 500 is past max_lr and the break
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_torch_mode_with_a_non_finite_first_loss_raises_as_train_fn_mode_does():
    """Nothing measured: no LR lies under the break, so no suggestion is made up (the train_fn mode
    raised already; the torch mode suggested 10 x min_lr)."""
    model, batches = _problem()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam(model.parameters())

    def nan_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y) * float("nan")

    finder = LearningRateFinder(num_steps=20)
    with pytest.raises(ValueError, match=r"non-finite loss \(nan\) at the first LR \(1e-07\)"):
        finder.range_test_torch(model, opt, batches, nan_loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the dict API still answers, with the lowest LR and no index
    result = finder.result()
    assert result["suggested_lr"] == 1e-7 and result["suggested_index"] is None
    assert np.isclose(result["diverged_lr"], 1e-7)
