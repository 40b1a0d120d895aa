"""Where the LR schedule is going from here: its highest LR ahead, and whether it is still climbing.

A raise of a too-low LR is sized by how far the weights move per step (the update ratio grows with the
LR). Sampled during a warm-up, at a fraction of the schedule's peak, the ratio understates the steps the
peak will make: seed 8's one-cycle ResNet, restarted at 1/100 of its recipe's LR, was named
``SLOW_CONVERGENCE`` at step 16 while its LR still climbed to its peak, raised x286 from a ratio sampled
at a 10th of that peak (a peak 2.9x its recipe's own LR), and blew up to chance. The raise reads the
ratio at the peak ahead (the schedule's position undone, as :mod:`lr_evidence` does for a cut), and
no raise is made while the schedule itself is still raising the LR.

Schedules computed from their progress are read exactly (OneCycleLR's warm-up phase and ``max_lr``;
a LambdaLR, such as ``runner.schedulers.warmup_cosine``, evaluated over the steps left; LinearLR); the
others (step, cosine, exponential, plateau) only decay: the LR now is their highest ahead.
"""

from __future__ import annotations

from typing import Any

import torch

from runner.autotrainer.lr_surgery import schedulers

#: at most this many of a LambdaLR's steps ahead are evaluated (a run's schedule is far shorter)
MAX_LOOKAHEAD = 100_000


def peak_ahead(scheduler: Any, lr_now: float, remaining: int) -> tuple[float, bool]:
    """The highest LR (of the first param group) the schedule reaches in its next ``remaining`` steps, at
    least ``lr_now``, and whether it is climbing now (a warm-up: its next LR above this one)."""
    sched_mod = torch.optim.lr_scheduler
    for s in schedulers(scheduler):
        t = int(getattr(s, "last_epoch", 0))
        if isinstance(s, sched_mod.OneCycleLR):
            group = s.optimizer.param_groups[0]
            warm_end = float(s._schedule_phases[0]["end_step"])
            if t < warm_end:
                return max(float(group.get("max_lr", lr_now)), lr_now), True
            return lr_now, False
        if isinstance(s, sched_mod.LambdaLR) and s.lr_lambdas:
            base, fn = float(s.base_lrs[0]), s.lr_lambdas[0]
            n = max(1, min(int(remaining), MAX_LOOKAHEAD))
            values = [float(fn(t + i)) for i in range(n + 1)]
            climbing = values[1] > values[0] * (1.0 + 1e-9)
            return max(base * max(values), lr_now), climbing
        if isinstance(s, sched_mod.LinearLR):
            end = float(s.base_lrs[0]) * float(s.end_factor)
            climbing = s.end_factor > s.start_factor and t < s.total_iters
            return (max(end, lr_now), True) if climbing else (lr_now, False)
    return lr_now, False
