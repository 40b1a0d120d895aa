"""The LR finder on negative losses, and its torch mode on empty, frozen and dict-shaped input.

Before: a U-shaped curve shifted below zero "diverged" at its first step (``-1 > 4 x -1``) and suggested
the minimum LR; in torch mode an empty ``batches`` suggested 1e-07 from nothing, a frozen model ended in
torch's "element 0 of tensors does not require grad", and dict batches in ``KeyError: 0``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from diag import LearningRateFinder
from diag.lr_finder import NothingMeasured, smooth_losses


def _curve(lr: float) -> float:
    """Falls to a minimum at lr=1e-3, then blows up past lr=0.1."""
    x = math.log10(lr)
    return 1.0 + 0.3 * (x + 3) ** 2 + 50 * max(0.0, x + 1) ** 2


@pytest.mark.parametrize("shift", [-3.0, -10.0])
@pytest.mark.parametrize("method", ["auto", "valley", "min10", "descent"])
def test_a_curve_shifted_below_zero_suggests_what_the_unshifted_one_does(shift, method):
    grid = LearningRateFinder().schedule()
    plain = LearningRateFinder(method=method).range_test(_curve)
    shifted = LearningRateFinder(method=method).range_test(lambda lr: _curve(lr) + shift)

    assert min(shifted["smoothed_losses"]) < 0  # the curve really is negative at its best
    assert shifted["num_steps_run"] > 50  # not stopped at the first step
    assert "diverged" in shifted["stop_reason"]
    # the same LR, or the next point of the test's grid at most
    step = np.log(grid[1] / grid[0])
    assert abs(np.log(shifted["suggested_lr"] / plain["suggested_lr"])) <= step + 1e-9


def test_a_negative_curve_says_truly_why_it_stopped():
    finder = LearningRateFinder()
    result = finder.range_test(lambda lr: _curve(lr) - 3.0)
    best = min(result["smoothed_losses"][:-1])
    last = result["smoothed_losses"][-1]
    assert last - best > 3 * abs(best)  # what the message claims
    assert f"above its best {best:.3g}" in result["stop_reason"]
    assert "more than 3 x |best|" in result["stop_reason"]


def test_a_positive_curve_stops_where_the_ratio_test_says_with_the_same_words():
    finder = LearningRateFinder(smooth=0.9)
    result = finder.range_test(_curve)
    # the first point at which smoothed > 4 x the best so far, computed independently
    smoothed = smooth_losses([_curve(lr) for lr in finder.schedule()], 0.9)
    best, expected = math.inf, None
    for i, v in enumerate(smoothed):
        best = min(best, v)
        if v > 4 * best:
            expected = i
            break
    assert expected is not None
    assert result["num_steps_run"] == expected + 1
    assert result["stop_reason"] == (
        f"diverged at lr={finder.schedule()[expected]:.3g} (smoothed loss {smoothed[expected]:.3g} > "
        f"4 x best {min(smoothed[: expected + 1]):.3g})"
    )


# -- torch mode ------------------------------------------------------------------------------


def _problem() -> tuple[nn.Module, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return model, opt, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _run(model, opt, batches):
    return LearningRateFinder(num_steps=20).range_test(
        model=model, optimizer=opt, batches=batches, loss_fn=nn.functional.cross_entropy
    )


def _assert_restored(model, opt, weights):
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), weights.values()))
    assert opt.param_groups[0]["lr"] == 0.05


@pytest.mark.parametrize("batches", [[], iter([])], ids=["empty-list", "exhausted-iterator"])
def test_empty_batches_raise_nothing_measured(batches):
    model, opt, _ = _problem()
    weights = copy.deepcopy(model.state_dict())
    with pytest.raises(NothingMeasured, match=r"range_test\(batches=\.\.\.\): no batch came out"):
        _run(model, opt, batches)
    _assert_restored(model, opt, weights)


@pytest.mark.parametrize("freeze", ["all frozen", "no parameters"])
def test_a_model_without_trainable_parameters_is_refused_before_any_step(freeze):
    model, opt, batches = _problem()
    if freeze == "all frozen":
        model.requires_grad_(False)
    else:
        model = nn.ReLU()
    weights = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ValueError, match=r"range_test\(model=\.\.\.\): the model \(\w+\) has no trainable"
    ):
        _run(model, opt, batches)
    _assert_restored(model, opt, weights)


def test_dict_batches_are_refused_with_the_forms_that_work():
    model, opt, batches = _problem()
    weights = copy.deepcopy(model.state_dict())
    as_dicts = [{"x": x, "y": y} for x, y in batches]
    with pytest.raises(
        TypeError, match=r"\(inputs, targets\) tuple or list.*got a dict with keys \['x', 'y'\]"
    ):
        _run(model, opt, as_dicts)
    _assert_restored(model, opt, weights)
    with pytest.raises(TypeError, match="got a Tensor"):
        _run(model, opt, [x for x, _ in batches])


@pytest.mark.parametrize("form", [tuple, list, lambda b: (*b, torch.arange(len(b[0])))])
def test_the_documented_batch_forms_still_run_and_restore(form):
    model, opt, batches = _problem()
    weights = copy.deepcopy(model.state_dict())
    result = _run(model, opt, [form(b) for b in batches])
    assert result["num_steps_run"] == 20
    _assert_restored(model, opt, weights)
