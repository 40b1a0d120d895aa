"""Seed 8's healthy one-cycle ResNet (issue 21): its validation loss spiked during the warm-up (2.2 -> 10.4
while the training loss fell 2.19 -> 1.67) and came back by itself (0.958). The AutoTrainer rolled it back
as an explosion, restarted it at 1/100 of its LR, and in the restart's warm-up raised the LR x286 from an
update ratio sampled at a tenth of the schedule's peak: it ended at chance.

A validation-only explosion while the training loss learns is held (:mod:`runner.autotrainer.
explosion_evidence`); a raise is never made while the schedule still climbs, and is sized by the ratio read
at the schedule's peak ahead (:mod:`runner.autotrainer.schedule_ahead`). The real policy, real optimizers
and schedulers, the series filled as the live diagnosis records them."""

from __future__ import annotations

import math

import pytest
import torch
from test_autotrainer_causes import net, policy_for, spec

from diag.series import RunSeries
from runner.autotrainer.explosion_evidence import held, training_blew_up
from runner.autotrainer.schedule_ahead import peak_ahead
from runner.autotrainer.settings import Settings
from runner.errors import UserError
from runner.schedulers import warmup_cosine

LN10 = math.log(10)
# seed 8's healthy case, steps 2-22 (2 steps an epoch): the training loss falls, the validation loss spikes
TRAIN = [2.568, 2.51, 2.407, 2.352, 2.438, 2.412, 2.215, 2.187, 2.033, 1.822, 1.675]
VAL = [2.301, 2.308, 2.307, 2.301, 2.287, 2.25, 2.236, 2.228, 3.255, 6.712, 10.429]
# seed 8's lr_high_nan case after its first rollback: validation 78.6 at a training loss above ln 10
HIGH_TRAIN, HIGH_VAL = [2.49, 2.87, 6.29], [78.6, 2.67, 2.31]


def _report(policy, state, code: str, severity: str, step: int, evidence: str) -> None:
    """The diagnosis names ``code`` at ``step``; the policy sees it after that step."""
    state.step = step
    state.issues = [{"code": code, "severity": severity, "first_step": step, "evidence": evidence}]
    policy.on_train_batch_end(state)


def _fill(series: RunSeries, train: list[float], val: list[float], every: int = 2) -> None:
    series.num_classes = 10
    series.initial_loss = 2.6
    series.step[:] = [every * (i + 1) for i in range(len(train))]
    series.loss[:] = train
    series.epoch_step[:] = [every * (i + 1) for i in range(len(val))]
    series.epoch_val_loss[:] = val


def _held(train: list[float], val: list[float], step: int, every: int = 2) -> str | None:
    series = RunSeries()
    _fill(series, train, val, every)
    return held(series, step, max_train_share=0.9, max_train_rise=0.25, hold_steps=30)


def test_a_validation_spike_while_the_training_loss_learns_is_held() -> None:
    assert _held(TRAIN, VAL, 22) is not None


def test_a_validation_blow_up_at_a_training_loss_at_chance_is_acted_on() -> None:
    assert _held(HIGH_TRAIN, HIGH_VAL, 60, every=20) is None


def test_a_training_loss_that_blew_up_or_went_non_finite_is_acted_on() -> None:
    assert _held([*TRAIN[:-1], 11.0], VAL, 22) is None
    assert _held([*TRAIN[:-1], math.nan], VAL, 22) is None
    assert training_blew_up([2.3, 25.0], LN10, 2.3)
    assert not training_blew_up(TRAIN, LN10, 2.6)


def test_a_training_loss_climbing_back_to_chance_is_acted_on() -> None:
    """Learned to 1.0, then back to 1.7 (over a quarter of the way to ln 10): the blow-up reaches it."""
    assert _held([2.4, 1.5, 1.0, 1.7, 1.75, 1.8], [2.3, 2.0, 1.5, 1.2, 12.0, 13.0], 12) is None


def test_a_validation_blow_up_sustained_past_hold_steps_is_acted_on() -> None:
    """Blown up since step 22 and still at step 52 (the last validation too): no longer a warm-up's spike."""
    train = [*TRAIN, *[1.6 - 0.02 * i for i in range(15)]]
    val = [*VAL, *[12.0] * 15]
    assert _held(train, val, 50) is not None  # 28 steps of it
    assert _held(train, val, 52) is None
    # came back at the last validation: nothing to act on
    assert _held(train, [*val[:-1], 2.0], 52) is not None


def _policy_at_spike(train: list[float], val: list[float], step: int, every: int = 2):
    model = net()
    policy, state = policy_for(
        model, torch.optim.SGD(model.parameters(), lr=0.137), cfg=("optimizer.lr=0.137",)
    )
    state.max_steps = 120
    _fill(policy.diagnostics.series, train, val, every)
    _report(policy, state, "LOSS_EXPLOSION", "critical", step, "v")
    return policy, state


def test_the_policy_holds_a_warm_up_s_validation_spike() -> None:
    policy, state = _policy_at_spike(TRAIN, VAL, 22)
    assert policy.actions == []
    assert state.current_lr == pytest.approx(0.137)
    assert not policy.may_treat(state.issues[0])


def test_the_policy_still_rolls_back_a_validation_blow_up_that_does_not_learn() -> None:
    policy, _ = _policy_at_spike(HIGH_TRAIN, HIGH_VAL, 60, every=20)
    assert [a["action"] for a in policy.actions] == ["rollback"]


def test_hold_steps_needs_the_training_loss_bounds() -> None:
    online = spec()["online"]
    row = dict(online["LOSS_EXPLOSION"])
    del row["max_train_share"]
    with pytest.raises(UserError, match="max_train_share"):
        Settings.from_config(spec(online={**online, "LOSS_EXPLOSION": row}))


# -- the schedule ahead, and a raise during / after a warm-up -------------------------------------------
def _onecycle(lr: float = 0.137, total: int = 120, steps: int = 0):
    opt = torch.optim.SGD(net().parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.3)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


def test_peak_ahead_reads_a_one_cycle_warm_up() -> None:
    opt, sched = _onecycle(steps=16)
    lr_now = opt.param_groups[0]["lr"]
    assert peak_ahead(sched, lr_now, 104) == (pytest.approx(0.137), True)
    opt, sched = _onecycle(steps=60)
    lr_now = opt.param_groups[0]["lr"]
    assert peak_ahead(sched, lr_now, 60) == (lr_now, False)


def test_peak_ahead_reads_a_lambda_warm_up_and_decaying_schedules() -> None:
    opt = torch.optim.SGD(net().parameters(), lr=0.1)
    sched = warmup_cosine(opt, total_steps=100, warmup_steps=0.2)
    for _ in range(5):
        opt.step()
        sched.step()
    peak, climbing = peak_ahead(sched, opt.param_groups[0]["lr"], 95)
    assert climbing and peak == pytest.approx(0.1)
    step = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert peak_ahead(step, 0.05, 10) == (0.05, False)
    assert peak_ahead(None, 0.05, 10) == (0.05, False)


def _slow(opt, sched, step: int, ratio: float, cfg_lr: float = 0.00137):
    policy, state = policy_for(
        net(),
        opt,
        scheduler=sched,
        cfg=(f"optimizer.lr={cfg_lr}",),
        check_every=1,
        late_lr_restart=1.0,  # in place: the factor is read from the LR, not from a restart
    )
    state.model = net()
    state.max_steps, state.steps_per_epoch = 120, 2
    state.loop = type("Loop", (), {"scheduler_interval": "step", "clip_max_norm": None})()
    policy.diagnostics.series.update_ratio.extend([ratio] * 3)
    _report(policy, state, "SLOW_CONVERGENCE", "warning", step, "s")
    return policy, state


def test_no_raise_while_a_warm_up_still_climbs() -> None:
    """Seed 8's restart: at step 16 of a one-cycle, LR at a tenth of its peak, ratio 5.5e-5."""
    opt, sched = _onecycle(lr=0.00137, steps=16)
    policy, state = _slow(opt, sched, 16, 5.5e-5)
    assert [a for a in policy.actions if a["action"] == "raise_lr"] == []


def test_a_raise_after_the_warm_up_is_sized_at_the_schedule_s_peak() -> None:
    """Past the warm-up the LR now is the highest ahead: the ratio's x(0.03 / 1e-4) = x300 from it."""
    opt, sched = _onecycle(lr=0.00137, steps=40)
    lr_before = opt.param_groups[0]["lr"]
    policy, state = _slow(opt, sched, 40, 1e-4)
    (raised,) = policy.actions
    assert raised["action"] == "raise_lr"
    assert state.current_lr / lr_before == pytest.approx(300, rel=1e-3)


def test_a_raise_reads_its_ratio_at_the_peak_the_schedule_still_reaches() -> None:
    """A schedule flat at a tenth of its LR for 20 steps, then at its LR (not climbing at step 10, its peak
    ahead 10x the LR now): the ratio 1e-4 read at that peak is 1e-3, the raise x30, not x300."""
    opt = torch.optim.SGD(net().parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.1 if t < 20 else 1.0)
    for _ in range(10):
        opt.step()
        sched.step()
    lr_before = opt.param_groups[0]["lr"]
    assert peak_ahead(sched, lr_before, 110) == (pytest.approx(1e-4), False)
    policy, state = _slow(opt, sched, 10, 1e-4, cfg_lr=1e-4)
    (raised,) = policy.actions
    assert state.current_lr / lr_before == pytest.approx(30, rel=1e-3)


def test_a_ratio_that_is_healthy_at_the_peak_gets_no_raise() -> None:
    opt, sched = _onecycle(lr=0.137, steps=40)
    policy, _ = _slow(opt, sched, 40, 0.05, cfg_lr=0.137)
    assert policy.actions == []


def test_a_raise_after_this_attempt_s_cut_goes_back_to_the_recipe_s_lr_at_most() -> None:
    """Cut x0.1 by a rollback (the recipe's LR shown too high), a raise the ratio sizes x300 stops at x10."""
    opt = torch.optim.SGD(net().parameters(), lr=0.1)
    policy, state = _slow(opt, None, 1, 0.05, cfg_lr=0.1)
    assert policy.actions == []
    policy.carried.lr_scale = 0.1
    for group in opt.param_groups:
        group["lr"] = 0.01
    policy.diagnostics.series.update_ratio[:] = [1e-4] * 3
    _report(policy, state, "SLOW_CONVERGENCE", "warning", 100, "s")
    (raised,) = policy.actions
    assert raised["action"] == "raise_lr"
    assert raised["lr_after"] == pytest.approx(0.1)
    assert "recipe" in raised["detail"]
