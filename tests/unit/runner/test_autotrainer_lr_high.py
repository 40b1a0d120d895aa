"""Issue 21, the LR-too-high families (seed 5's misses), each by its mechanism on a real model and optimizer:

- a run stuck at chance with no explosion before it, whose weights moved far more per step than a
  healthy run's, restarts at the cut the update ratio shows (it got no action at all);
- units that die after an explosion was rolled back restart with the rollback's cut once more, where
  Adam's update ratio is no evidence;
- a restart does not carry an online repair that was measured to make the run worse.
"""

from __future__ import annotations

import pytest
import torch
from test_autotrainer_causes import net, policy_for


def _at(state, step: int, code: str, severity: str):
    state.step = step
    state.issues = [{"code": code, "severity": severity, "first_step": step, "evidence": "t"}]
    return state


def _policy(lr: float = 0.1):
    model = net()
    return policy_for(
        model, torch.optim.SGD(model.parameters(), lr=lr), cfg=(f"optimizer.lr={lr}",)
    )


@pytest.mark.parametrize(("peak", "restarts"), [(0.1, False), (0.28, True)])
def test_stuck_at_chance_with_big_steps_restarts_at_the_cut_lr(peak: float, restarts: bool) -> None:
    """STUCK_AT_CHANCE (critical), no explosion: a peak update ratio of 0.28 (a one-cycle CNN at 100x its
    LR) restarts at 0.03/0.28 of the recipe's LR, the words say why; 0.1 (healthy) leaves it alone, as
    before. may_treat answers the same."""
    policy, state = _policy()
    policy.carried.peak_update_ratio = peak
    stuck = {"code": "STUCK_AT_CHANCE", "severity": "critical"}
    assert policy.may_treat(stuck) is restarts
    policy.on_train_batch_end(_at(state, 120, "STUCK_AT_CHANCE", "critical"))
    assert [a["action"] for a in policy.actions] == (["restart"] if restarts else [])
    if restarts:
        (restart,) = policy.actions
        assert restart["code"] == "STUCK_AT_CHANCE"
        assert restart["changes"]["optimizer.lr"] == pytest.approx(0.1 * 0.03 / peak, rel=1e-4)
        assert "the weights moved 0.28 of their norm" in restart["detail"]


def test_a_warning_stuck_at_chance_needs_the_warning_s_evidence() -> None:
    """The lower bar is for critical findings only: at a warning the peak must pass max_update_ratio."""
    policy, state = _policy()
    policy.carried.peak_update_ratio = 0.28
    assert policy._lr_cut("STUCK_AT_CHANCE", "warning") is None
    assert policy._lr_cut("STUCK_AT_CHANCE", "critical") is not None
    assert policy._lr_cut("VANISHING_GRADIENTS", "critical") is None  # not an LR code


def test_dead_units_after_a_rolled_back_explosion_restart_with_the_cut_once_more() -> None:
    """An explosion rolled back at x0.1, then DEAD_NEURONS (a warning) with a small update ratio (Adam):
    a restart at x0.1 of the LR reached (x0.01 of the recipe's), not the dead-unit rule's halving."""
    policy, state = _policy(lr=0.2)
    policy.on_train_batch_end(_at(state, 60, "LOSS_EXPLOSION", "critical"))
    assert [a["action"] for a in policy.actions] == ["rollback"]
    policy.carried.peak_update_ratio = 0.18
    dead = {"code": "DEAD_NEURONS", "severity": "warning"}
    assert policy.may_treat(dead)
    policy.on_train_batch_end(_at(state, 140, "DEAD_NEURONS", "warning"))
    restart = policy.actions[-1]
    assert (restart["action"], restart["code"]) == ("restart", "DEAD_NEURONS")
    assert restart["changes"]["optimizer.lr"] == pytest.approx(0.2 * 0.01)
    assert "the cut once more" in restart["detail"]


def test_dead_units_without_an_explosion_or_big_steps_are_left_at_a_warning() -> None:
    """No rollback in this attempt and a healthy update ratio: a DEAD_NEURONS warning is not acted on."""
    policy, state = _policy()
    policy.carried.peak_update_ratio = 0.14
    policy.on_train_batch_end(_at(state, 100, "DEAD_NEURONS", "warning"))
    assert policy.actions == []


def test_a_restart_does_not_carry_a_repair_that_made_the_run_worse() -> None:
    """regularize raised the weight decay and validation accuracy fell from 0.54 to 0.10: the restart that
    follows starts without that weight decay; one that helped would be carried."""
    for after, carried in ((0.10, False), (0.80, True)):
        policy, state = _policy()
        state.metrics.update({"val/acc": 0.54, "val/loss": 1.3})
        policy.record(
            state,
            {"code": "OVERFITTING", "severity": "warning"},
            "regularize",
            0.1,
            0.1,
            {"optimizer.weight_decay": 0.1},
            "t",
            "applied",
        )
        policy.actions[-1]["measured"]["after"].update({"val_acc": after, "val_loss": 1.0})
        assert ("optimizer.weight_decay" in policy._cause_repairs()) is carried


def test_a_warning_s_restart_is_not_made_late_in_the_run() -> None:
    """The same dead units after a rolled-back explosion, named at step 900 of 1000 (after
    lr_evidence.warning_until): no restart, and may_treat says so; a critical finding still restarts."""
    policy, state = _policy(lr=0.2)
    policy.on_train_batch_end(_at(state, 60, "LOSS_EXPLOSION", "critical"))
    policy.on_train_batch_end(_at(state, 900, "DEAD_NEURONS", "warning"))
    assert [a["action"] for a in policy.actions] == ["rollback"]
    assert not policy.may_treat({"code": "DEAD_NEURONS", "severity": "warning"})
    policy.on_train_batch_end(_at(state, 910, "DEAD_NEURONS", "critical"))
    assert [a["action"] for a in policy.actions] == ["rollback", "restart"]
