"""Did an action help? Each action's loss and accuracy before it and over the interval after it.

Before: the median of the last three sampled training losses (the live diagnosis's interval means)
and the last validation. After: the median of the training losses sampled from the action's step to
``measure_steps`` later, and the first validation after the action. A restart is measured by the next
attempt's end against this attempt's. The verdict reads validation accuracy first (a change of half a
point), then validation loss, then training loss (a change of 2%): ``improved``, ``worse``,
``no change``, or ``not measured`` (nothing comparable before the run ended).
"""

from __future__ import annotations

import math
from typing import Any

ACC_STEP = 0.005  # half a point of accuracy
LOSS_STEP = 0.02  # 2% of a loss


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def recent_loss(steps: list[int], losses: list[float], after: int | None = None) -> float | None:
    """The median of the last three sampled losses (only those sampled after step ``after``)."""
    picked = [v for s, v in zip(steps, losses) if after is None or s > after]
    return _median(picked[-3:])


def before(metrics: dict[str, float], train_loss: float | None) -> dict[str, Any]:
    return {
        "train_loss": train_loss,
        "val_loss": metrics.get("val/loss"),
        "val_acc": metrics.get("val/acc"),
    }


def verdict(was: dict[str, Any], now: dict[str, Any]) -> str:
    """improved / worse / no change / not measured (see the module docstring)."""
    a, b = was.get("val_acc"), now.get("val_acc")
    compared = False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and _finite(a) and _finite(b):
        compared = True
        if abs(b - a) >= ACC_STEP:
            return "improved" if b > a else "worse"
    for key in ("val_loss", "train_loss"):
        a, b = was.get(key), now.get(key)
        if b is None or a is None:
            continue
        if not _finite(a) and _finite(b):
            return "improved"  # from Inf/NaN to a number
        if _finite(a) and not _finite(b):
            return "worse"
        if _finite(a) and _finite(b):
            compared = True
            if abs(b - a) >= LOSS_STEP * max(abs(a), 1e-12):
                return "improved" if b < a else "worse"
    return "no change" if compared else "not measured"


def describe(measured: dict[str, Any]) -> str:
    """``val acc 0.11 -> 0.62, train loss 76.6 -> 0.91: improved``."""
    was, now = measured["before"], measured["after"]
    parts = []
    for key, label, fmt in (
        ("val_acc", "val acc", "{:.3f}"),
        ("val_loss", "val loss", "{:.3g}"),
        ("train_loss", "train loss", "{:.3g}"),
    ):
        a, b = was.get(key), now.get(key)
        if a is not None and b is not None:
            parts.append(f"{label} {fmt.format(a)} -> {fmt.format(b)}")
    return ", ".join(parts + [measured["verdict"]]) if parts else measured["verdict"]


def start(entry: dict[str, Any], was: dict[str, Any], by_step: int) -> None:
    """Open the measurement of ``entry``: what was before, and the step the after-interval ends."""
    entry["measured"] = {"before": was, "after": {}, "by_step": by_step, "verdict": None}


def so_far(entry: dict[str, Any]) -> str:
    """The verdict of ``entry`` from what its interval has shown so far (a restart can come before it
    ends: a ``regularize`` that sent validation accuracy from 0.54 to 0.10 was restarted 20 steps later)."""
    m = entry.get("measured")
    if not m:
        return "not measured"
    return m["verdict"] or verdict(m["before"], m["after"])


def finish(entry: dict[str, Any]) -> str:
    m = entry["measured"]
    m["verdict"] = verdict(m["before"], m["after"])
    entry["effect"] = describe(m)
    return entry["effect"]
