"""LR schedulers from ``runner/conf/scheduler/*.yaml``, completed with the optimizer at the call site.

Each scheduler config holds the loop's two settings, ``interval`` (``step`` or ``epoch``: when the
loop calls ``step()``) and ``monitor`` (the metric a plateau scheduler steps on), beside
``lr_scheduler``, a ``_partial_`` torch scheduler node. ``total_steps`` is filled in here when the
scheduler asks for it and the config left it out.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

# State-dict keys that fix where a scheduler's schedule ends (CosineAnnealingLR, OneCycleLR); derived from
# trainer.max_epochs/max_steps when the config leaves them out.
HORIZON_KEYS = ("T_max", "total_steps")


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int | float = 0.05,
    min_lr_ratio: float = 0.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` × base LR, as a per-step ``LambdaLR``.

    ``warmup_steps`` below 1 is a fraction of ``total_steps``.
    """
    warm = int(warmup_steps * total_steps) if warmup_steps < 1 else int(warmup_steps)
    warm = max(warm, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def build_scheduler(
    cfg: DictConfig | None, optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int
) -> Any:
    """The torch scheduler of ``cfg.lr_scheduler`` for ``optimizer``, or None; the loop reads ``interval``/``monitor``."""
    node = cfg.get("lr_scheduler") if cfg is not None else None
    if cfg is None or node is None:
        return None
    interval = cfg.get("interval", "epoch")
    factory = instantiate(node)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(factory.func).parameters
    if "total_steps" in params and "total_steps" not in factory.keywords:
        kwargs["total_steps"] = max(
            1, steps_per_epoch * max_epochs if interval == "step" else max_epochs
        )
    return factory(optimizer, **kwargs)


def horizon_change(scheduler: Any, saved: dict[str, Any] | None) -> str | None:
    """How a checkpoint's schedule ends differently from the one this config built; None when they agree.

    Loading the saved state keeps the saved end: past it OneCycleLR raises and a cosine rises again (or,
    recursively, stays at its minimum), so a changed horizon cannot resume as the user meant it.
    """
    if scheduler is None or not saved:
        return None
    fresh = scheduler.state_dict()
    changed = [
        f"{k}={saved[k]} (this config: {fresh[k]})"
        for k in HORIZON_KEYS
        if k in fresh and k in saved and saved[k] != fresh[k]
    ]
    return f"{type(scheduler).__name__} {', '.join(changed)}" if changed else None
