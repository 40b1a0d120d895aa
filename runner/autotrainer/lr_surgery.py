"""Learning-rate changes that survive the scheduler: a cut written only to ``group["lr"]`` is undone at its next step."""

from __future__ import annotations

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


def _schedulers(scheduler: Any) -> Iterable[Any]:
    """The scheduler and, for SequentialLR/ChainedScheduler, the ones it wraps."""
    if scheduler is None:
        return
    yield scheduler
    for inner in getattr(scheduler, "_schedulers", None) or ():
        yield from _schedulers(inner)


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
    for sched in _schedulers(scheduler):
        attrs = vars(sched)
        for key in SCHEDULER_LR_LISTS:
            if isinstance(attrs.get(key), list):
                attrs[key] = [_scale(v, factor) for v in attrs[key]]
        for key in SCHEDULER_LR_NUMBERS:
            if key in attrs:
                attrs[key] = _scale(attrs[key], factor)
