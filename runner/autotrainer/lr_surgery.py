"""Learning-rate changes that survive the scheduler: a cut written only to ``group["lr"]`` is undone at its next step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

# Optimizer param-group keys that hold a learning rate (OneCycleLR keeps its schedule in initial/max/min_lr).
GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
# Scheduler attributes that hold learning rates: the schedule is computed from them.
SCHEDULER_LR_LISTS = ("base_lrs", "min_lrs", "max_lrs", "_last_lr")
SCHEDULER_LR_NUMBERS = ("eta_min", "default_min_lr")


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        return value
    return value * factor


def schedulers(scheduler: Any) -> Iterable[Any]:
    """The scheduler and, for SequentialLR/ChainedScheduler, the ones it wraps."""
    if scheduler is None:
        return
    yield scheduler
    for inner in getattr(scheduler, "_schedulers", None) or ():
        yield from schedulers(inner)


def scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply every learning rate the optimizer and its scheduler hold by ``factor``.

    Writing only ``group["lr"]`` would be overwritten at the next ``scheduler.step()``
    (LambdaLR and OneCycleLR recompute from their base values). Scaling the base
    values too (``base_lrs``, ``initial_lr``, OneCycleLR's ``max_lr``/``min_lr``,
    plateau ``min_lrs``, cosine ``eta_min``) makes the schedule continue, scaled.
    """
    for group in optimizer.param_groups:
        for key in GROUP_LR_KEYS:
            if key in group:
                group[key] = _scale(group[key], factor)
    for sched in schedulers(scheduler):
        attrs = vars(sched)
        for key in SCHEDULER_LR_LISTS:
            if isinstance(attrs.get(key), list):
                attrs[key] = [_scale(v, factor) for v in attrs[key]]
        for key in SCHEDULER_LR_NUMBERS:
            if key in attrs:
                attrs[key] = _scale(attrs[key], factor)


def slow_schedule(
    scheduler: Any,
    *,
    remaining: int,
    min_gamma: float | None,
    max_cuts: int | None,
    min_patience: int | None,
    min_factor: float | None,
) -> dict[str, Any]:
    """Make the rest of a schedule that decayed too early gentler; the changed settings, as config keys.

    ``remaining`` is the scheduler's steps left (epochs or optimizer steps, as it is stepped). StepLR:
    each cut at most ``min_gamma`` and at most ``max_cuts`` more of them; MultiStepLR: each cut at most
    ``min_gamma``; ExponentialLR: at most ``min_gamma ** max_cuts`` over the rest; ReduceLROnPlateau:
    at least ``min_patience`` epochs of patience, each cut at most ``min_factor``. Schedules computed
    from their progress (cosine, one-cycle, warm-up) continue as scaled by the restored LR.
    """
    sched_mod = torch.optim.lr_scheduler
    changed: dict[str, Any] = {}
    for sched in schedulers(scheduler):
        stepwise = isinstance(sched, (sched_mod.StepLR, sched_mod.MultiStepLR))
        if stepwise and min_gamma and sched.gamma < min_gamma:
            sched.gamma = min_gamma
            changed["scheduler.lr_scheduler.gamma"] = min_gamma
        if isinstance(sched, sched_mod.StepLR) and max_cuts is not None:
            size = max(sched.step_size, math.ceil(remaining / (max_cuts + 1)))
            if size != sched.step_size:
                sched.step_size = size
                changed["scheduler.lr_scheduler.step_size"] = size
        if isinstance(sched, sched_mod.ExponentialLR) and min_gamma and max_cuts is not None:
            gamma = min_gamma ** (max_cuts / max(remaining, 1))
            if sched.gamma < gamma:
                sched.gamma = float(f"{gamma:.6g}")
                changed["scheduler.lr_scheduler.gamma"] = sched.gamma
        if isinstance(sched, sched_mod.ReduceLROnPlateau):
            if min_patience is not None and sched.patience < min_patience:
                sched.patience = min_patience
                changed["scheduler.lr_scheduler.patience"] = min_patience
            if min_factor is not None and sched.factor < min_factor:
                sched.factor = min_factor
                changed["scheduler.lr_scheduler.factor"] = min_factor
            sched.num_bad_epochs, sched.cooldown_counter = 0, 0
    return changed


def plateau_cuts(scheduler: Any, lr_now: float, lr_peak: float) -> float:
    """The factor that undoes the cuts a ReduceLROnPlateau made since the last action (``lr_peak`` over
    ``lr_now``), 1 for any other schedule or none made.

    A plateau scheduler cuts when validation stalls; on a run whose LR is far too low it stalls because of
    the LR, so its cuts are the fault's, not the recipe's: seed 7's batch-512 CNN at 1/10000 of its LR was
    halved by its plateau at step 10 and raised from the halved LR at step 16, ending at 0.63x its twin's LR
    (0.850 against 0.908). Schedules computed from their progress (step, cosine, one-cycle) are scaled
    whole by a raise and keep their position."""
    plateau = any(
        isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) for s in schedulers(scheduler)
    )
    if not plateau or not (lr_now > 0 and lr_peak > lr_now):
        return 1.0
    return lr_peak / lr_now


def reset_plateau_patience(scheduler: Any) -> None:
    """Forget the stalled epochs a ReduceLROnPlateau (wrapped or not) counted: they were the fault's."""
    for s in schedulers(scheduler):
        if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
            s.num_bad_epochs = 0
