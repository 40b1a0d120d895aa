"""The update ratio read at the recipe's LR, with the schedule's position undone.

A restart after an LR-caused fault carries the cut ``target / peak`` where ``peak`` is the weights' largest
per-step update ratio ``|dw|/|w|`` (it grows with the LR). The peak was read as if every sample had been
taken at the recipe's LR times the policy's LR scale; a schedule that starts low (one-cycle at a 25th of
its peak, a warm-up) made the biggest steps at a fraction of it, before the weights grew. Seed 6's
batch-normalised SGD CNN at 3000x its LR moved 1.81 of its weights' norm at step 1, at 1/25 of its
one-cycle peak: read at the recipe's LR that is 45, and its restart's cut x0.0165 (the 1.81) left it 49x
its twin's LR. Later samples understate it more: behind batch norm a step too big grows the weights and
shrinks its own ratio. Each sample is therefore scaled by the recipe's LR over the LR it was taken at (the LR at the policy's
check after it: samples come every few steps, checks every ``check_every``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class NewSamples:
    """The samples of a series not read before: the policy reads the live series at each check, and the
    diagnosis starts a new series after each repair."""

    def __init__(self) -> None:
        self._owner, self._seen = 0, 0

    def read(self, values: Sequence[float], owner: Any) -> list[float]:
        """``values`` (the series ``owner`` holds) after the ones read at the last call on the same owner."""
        every = list(values)
        start = self._seen if self._owner == id(owner) and self._seen <= len(every) else 0
        self._owner, self._seen = id(owner), len(every)
        return every[start:]


def peak_at_recipe_lr(ratios: Sequence[float], lr: float, recipe_lr: float) -> float:
    """The largest of ``ratios`` (samples taken at about ``lr``: since the policy's last check) scaled to
    ``recipe_lr`` (the ratio grows with the LR); 0 without finite samples or a usable LR."""
    finite = [r for r in ratios if r is not None and math.isfinite(r)]
    if not finite or not (math.isfinite(lr) and lr > 0 and recipe_lr > 0):
        return 0.0
    return max(finite) * recipe_lr / lr
