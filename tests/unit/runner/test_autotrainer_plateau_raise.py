"""Seed 7's batch-512 CNN at 1/10000 of its LR (issue 21): its plateau scheduler halved the too-low LR
(validation stalled because of it) and the update ratio's raise was sized from the halved LR, ending at
0.63x its twin's. A raise under ReduceLROnPlateau also undoes the cuts the plateau made since the last
action (:func:`runner.autotrainer.lr_surgery.plateau_cuts`); a schedule computed from its progress keeps
its position. The real policy, a real optimizer and scheduler."""

from __future__ import annotations

import pytest
import torch
from test_autotrainer_causes import net, policy_for

from runner.autotrainer.lr_surgery import plateau_cuts


def _raised(kind: str) -> dict:
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
        if kind == "plateau"
        else torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    )
    policy, state = policy_for(model, optimizer, scheduler=scheduler, cfg=("optimizer.lr=1e-5",))
    state.max_steps = 120
    # the schedule cuts once (the plateau: two stalled validations), at step 10
    state.step, state.issues = 10, []
    if kind == "plateau":
        scheduler.step(2.43)
        scheduler.step(2.43)
    else:
        scheduler.step()
    policy.on_train_batch_end(state)
    assert state.current_lr == pytest.approx(5e-6)
    policy.diagnostics.series.update_ratio.extend([1e-6, 1e-6, 1e-6])
    state.step = 20
    state.issues = [
        {"code": "SLOW_CONVERGENCE", "severity": "warning", "first_step": 20, "evidence": "t"}
    ]
    policy.on_train_batch_end(state)
    (raised,) = policy.actions
    assert raised["action"] == "raise_lr"
    return raised


def test_a_raise_under_a_plateau_undoes_the_plateau_s_cuts() -> None:
    """The ratio's x3e4 (0.03 / 1e-6) from the LR before the plateau's halving: 1e-5 -> 0.3, not 0.15."""
    raised = _raised("plateau")
    assert raised["lr_after"] == pytest.approx(1e-5 * 3e4, rel=1e-6)
    assert "plateau" in raised["detail"]


def test_a_raise_under_a_step_schedule_keeps_its_position() -> None:
    """StepLR's halving is the recipe's: the same raise from the LR it is at, 5e-6 -> 0.15."""
    raised = _raised("step")
    assert raised["lr_after"] == pytest.approx(5e-6 * 3e4, rel=1e-6)


def test_plateau_cuts_needs_a_plateau_and_a_cut() -> None:
    opt = torch.optim.SGD(net().parameters(), lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    assert plateau_cuts(plateau, 0.25, 1.0) == pytest.approx(4.0)
    assert plateau_cuts(plateau, 1.0, 1.0) == 1.0
    assert plateau_cuts(None, 0.25, 1.0) == 1.0
    assert plateau_cuts(torch.optim.lr_scheduler.StepLR(opt, 1), 0.25, 1.0) == 1.0
