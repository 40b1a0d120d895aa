"""When a ``LOSS_EXPLOSION`` is evidence enough for a rollback.

The diagnosis names an explosion from the training loss (non-finite, 10x its start, several times
ln(k)) or from the validation loss alone (several times ln(k) while the training loss is still far from
fitting). The second is also what a healthy batch-normalised run shows while its LR climbs through a
warm-up: seed 8's one-cycle ResNet (peak LR 0.137, 2 steps an epoch) had its validation loss go
2.2 -> 10.4 at steps 16-22 while its training loss fell 2.19 -> 1.67 (ln 10 = 2.30), and recovered by
itself (0.958); rolled back at x0.1 and restarted at x0.01, it ended at chance (0.142).

A validation-only explosion is therefore held (not acted on) while the training loss learns: the median
of its last three samples below ``max_train_share`` of ln(k), and not climbed back more than
``max_train_rise`` of the way from its lowest earlier sample to ln(k) (a sample's noise is not a climb),
unless the validation loss has stayed blown up for ``hold_steps`` steps or went non-finite. A run whose
LR is far too high does not learn meanwhile: seed 8's ``lr_high_nan`` case, named from the validation
loss (78.6) at a training loss of 2.49, above ln 10, is still rolled back at once.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from diag.diagnosis import EXPLOSION_GROWTH, SPIKE_CHANCE_FACTOR


def training_blew_up(loss: Sequence[float], chance: float | None, initial: float | None) -> bool:
    """Whether the training-loss samples themselves show the blow-up: a non-finite one, one above
    ``EXPLOSION_GROWTH`` times the start (the first sample, ln(k) or the first step's loss, the lowest),
    or one above ``SPIKE_CHANCE_FACTOR`` times ln(k) (``chance``)."""
    values = [float(v) for v in loss if v is not None]
    if any(not math.isfinite(v) for v in values):
        return True
    if not values:
        return False
    anchors = [v for v in (chance, initial) if v is not None and 0 < v < math.inf]
    start = min([values[0], *anchors])
    if start > 0 and max(values) > EXPLOSION_GROWTH * start:
        return True
    return chance is not None and chance > 0 and max(values) > SPIKE_CHANCE_FACTOR * chance


def held(
    series: Any,
    step: int,
    *,
    max_train_share: float,
    max_train_rise: float,
    hold_steps: int,
) -> str | None:
    """Why a ``LOSS_EXPLOSION`` of the live ``series`` (a :class:`diag.series.RunSeries`) is not acted on at
    ``step``, or None when it is: only a validation-only blow-up while the training loss learns is held,
    and not after ``hold_steps`` steps of it."""
    k = getattr(series, "num_classes", None) or 0
    chance = math.log(k) if k > 1 else None
    if chance is None or training_blew_up(series.loss, chance, series.initial_loss):
        return None
    train = [float(v) for v in series.loss if v is not None]
    if len(train) < 2:
        return None
    recent = statistics.median(train[-3:])
    if recent >= max_train_share * chance:
        return None  # the training loss does not learn: the weights were thrown out
    earlier = train[:-3]
    low = min(earlier) if earlier else recent
    if recent > low + max_train_rise * (chance - low):
        return None  # the training loss climbs back towards ln(k): the blow-up reaches it too
    blown = [
        (s, v)
        for s, v in zip(series.epoch_step, series.epoch_val_loss)
        if v is None or not math.isfinite(v) or v > SPIKE_CHANCE_FACTOR * chance
    ]
    if any(v is None or not math.isfinite(v) for _, v in blown):
        return None
    if blown and step - blown[0][0] >= hold_steps and blown[-1][0] == series.epoch_step[-1]:
        return None  # sustained: still blown up hold_steps after it began
    return (
        f"the validation loss blew up while the training loss learns ({recent:.3g}, under "
        f"{max_train_share:g} x ln({k}) = {max_train_share * chance:.3g}, not rising): held for up to "
        f"{hold_steps} steps"
    )
