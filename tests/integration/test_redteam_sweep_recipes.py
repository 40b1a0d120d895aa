"""The CIFAR recipes' OneCycle warm-up share (``pct_start: 0.25``) reaches the scheduler: set one level
too high (``scheduler.pct_start``) it was ignored and OneCycle warmed up over its default 0.3."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_cfg

from runner.schedulers import build_scheduler


@pytest.mark.parametrize("recipe", ["cifar10_resnet18", "cifar100_resnet18"])
def test_the_cifar_recipes_one_cycle_warms_up_over_a_quarter_of_the_run(recipe: str):
    cfg = compose_cfg([f"experiment={recipe}"])
    assert cfg.scheduler.lr_scheduler.pct_start == 0.25
    assert "pct_start" not in cfg.scheduler  # no stray key beside lr_scheduler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch=10, max_epochs=10)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    # the LR peaks a quarter of the way through the 100 steps (at 0.3 it peaked at step 29)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs.index(max(lrs)) == 24
