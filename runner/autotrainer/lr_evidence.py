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


#: the mark a rollback leaves in its record's ``changes`` when the update ratio sized its cut
SIZED = "lr_cut_by"


def sized_cut_made(actions: Sequence[dict[str, Any]], attempt: int) -> bool:
    """Whether a repair of this ``attempt`` already cut the LR by the update ratio's evidence (not by a
    rule's fixed factor): the LR it left is the one the evidence asked for."""
    return any(
        a.get("attempt") == attempt and (a.get("changes") or {}).get(SIZED) == "update_ratio"
        for a in actions
    )


def cut_at_current_lr(
    ratios: Sequence[float], max_ratio: float, target: float
) -> tuple[float, str]:
    """The LR factor, from the LR the run is at, that the update ratios sampled at that LR ask for: ``target``
    over their peak when it is above ``max_ratio``, else 1 (the LR is not shown too high).

    A rule's fixed cut after a cut the evidence sized compounds them on the same evidence: seed 7's ResNet
    at 10000x its LR was rolled back to the ratio's x0.000766 (LR 0.153, its twin's 0.2; its weights then
    moved 0.0105 of their norm a step), named stuck at chance 10 steps later and restarted at x0.1 more:
    13x below its twin's LR, 0.936 against 0.964."""
    finite = [r for r in ratios if r is not None and math.isfinite(r)]
    peak = max(finite) if finite else 0.0
    if peak > max_ratio:
        factor = target / peak
        return factor, (
            f"x{factor:.3g} (the weights moved {peak:.3g} of their norm a step at the LR the update "
            "ratio's cut left)"
        )
    return 1.0, (
        f"the LR kept (the update ratio's cut made before; at its LR the weights moved {peak:.3g} of "
        f"their norm a step, under {max_ratio:g})"
    )


def shows_too_high(
    peak: float, at_recipe: float, floor: float, critical: bool, max_ratio: float
) -> bool:
    """Whether the update ratio is evidence of an LR too high: the sampled ``peak`` above ``floor``, or, for
    a critical finding only (the run is failing already), the peak read at the recipe's LR (``at_recipe``)
    above ``max_ratio``, the warning's stricter bar.

    Behind batch norm a step too big grows the weights and shrinks its own ratio: seed 7's one-cycle SGD CNN
    at 100x its LR never sampled above 0.064 (its twin 0.011), but 0.046 at step 10, at a 19th of its peak
    LR, is 0.89 read at the recipe's; its critical dead units restarted with the rule's x0.5 only (50x its
    twin's LR, 0.571 against 0.928). A warning on a healthy run under a warm-up does not reach this."""
    return peak > floor or (critical and at_recipe > max_ratio)
