"""The batch a restart sets when the run's batch was the cause (a batch of 2, or the whole split).

A fixed batch does not keep the run: seed 6's batch-2 CNN of 3 epochs restarted at batch 64 had 63 steps
where the fault's run had 300 and its twin (batch 16) 243, and ended 20 points under the twin. The
restart's batch is the largest power of two, at most ``largest`` (the recipes' default), that keeps at
least ``keep_steps`` of the fault's steps in the run's epochs and gives an epoch at least
``min_steps_per_epoch`` steps; a run of a handful of full-split steps gets ``largest`` (it gains steps at
any sane batch). The LR is kept: a batch too small or too large to train at any LR is not the batch the
LR was chosen for, and the recipes' LRs are set for their batch between 8 and 512.
"""

from __future__ import annotations

import math


def run_steps(batch: int, examples: int, max_epochs: int | None, max_steps: int | None) -> int:
    """The optimizer steps a run of ``examples`` training examples takes at ``batch``."""
    per_epoch = max(1, math.ceil(examples / batch))
    steps = per_epoch * max_epochs if max_epochs else math.inf
    if max_steps:
        steps = min(steps, max_steps)
    return int(steps) if math.isfinite(steps) else per_epoch


def choose(
    batch: int,
    steps_per_epoch: int,
    max_epochs: int | None,
    max_steps: int | None,
    *,
    smallest: int,
    largest: int,
    min_steps_per_epoch: int,
    keep_steps: float,
) -> int:
    """The restart's batch for a run at ``batch`` with ``steps_per_epoch`` steps (its training examples are
    about their product), ``max_epochs`` and ``max_steps`` (None or 0: no limit)."""
    examples = max(1, batch * max(steps_per_epoch, 1))
    wanted = keep_steps * run_steps(batch, examples, max_epochs, max_steps)
    candidates = [
        b
        for b in (2**k for k in range(0, int(math.log2(max(largest, 1))) + 1))
        if smallest <= b <= largest and math.ceil(examples / b) >= min_steps_per_epoch
    ]
    if not candidates:
        return largest
    keeping = [b for b in candidates if run_steps(b, examples, max_epochs, max_steps) >= wanted]
    return max(keeping) if keeping else min(candidates)
