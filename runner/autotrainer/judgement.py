"""When an attempt counts as ``healthy``: it reaches what its run should reach, not just "no warning".

A restart that ends without a finding can still end far below what the run showed it can do (a deep
net rebuilt with batch norm that stalls at 0.87), or barely above chance. An attempt is healthy when
all three hold at its end:

- the final diagnosis has no warning or critical finding;
- its final validation accuracy is at most ``below_best`` under the best validation accuracy any
  attempt of this run reached at any epoch (the run's own best: it showed it can get there);
- its final validation accuracy is at least ``above_chance`` of the way from chance (1/classes) to 1.
"""

from __future__ import annotations

import math
from typing import Any

from diag.report import status_of
from runner.autotrainer.settings import Healthy


def judge(
    issues: list[dict[str, Any]],
    val_acc: float | None,
    best_val_acc: float | None,
    num_classes: int | None,
    rule: Healthy,
) -> dict[str, Any]:
    """``{"healthy": bool, "why": str}`` for one attempt's end (see the module docstring)."""
    reasons = []
    status = status_of(issues)
    if status != "healthy":
        codes = ", ".join(sorted({i["code"] for i in issues if i.get("severity") != "info"}))
        reasons.append(f"diagnosis {status} ({codes})")
    if val_acc is None or not math.isfinite(val_acc):
        reasons.append("no finite validation accuracy")
    else:
        if best_val_acc is not None and val_acc < best_val_acc - rule.below_best:
            reasons.append(
                f"val acc {val_acc:.3f} is more than {rule.below_best:g} below the run's best "
                f"{best_val_acc:.3f}"
            )
        if num_classes:
            chance = 1.0 / num_classes
            floor = chance + rule.above_chance * (1.0 - chance)
            if val_acc < floor:
                reasons.append(
                    f"val acc {val_acc:.3f} is below {floor:.3f} ({rule.above_chance:.0%} of the way "
                    f"from chance {chance:.3f} to 1)"
                )
    if reasons:
        return {"healthy": False, "why": "not healthy: " + "; ".join(reasons)}
    acc = f"val acc {val_acc:.3f}" if val_acc is not None else ""
    best = f" (run's best {best_val_acc:.3f})" if best_val_acc is not None else ""
    return {"healthy": True, "why": f"healthy: no finding, {acc}{best}"}
