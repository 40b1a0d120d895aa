"""The AutoTrainer: a policy that reads the live diagnosis and repairs a sick run.

Online repairs act on the optimizer through its scheduler (rollback, LR cut, raise or restore,
regularisation); early stopping tests a run that ends overfitting with its best-validation
weights; guided restarts re-run the train task as ``attempt-N/`` with a config change for what
no LR fixes. It belongs to the runner, not to diag, because it drives the optimizer and the run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.autotrainer.attempts import Session, run
    from runner.autotrainer.lr_surgery import scale_lr
    from runner.autotrainer.policy import AutoTrainer
    from runner.autotrainer.settings import autotrainer_enabled, check_config
    from runner.autotrainer.snapshots import BestWeights, Snapshot

# Loaded on first use (PEP 562): every run asks ``autotrainer_enabled`` at start-up, and with the
# AutoTrainer off nothing else of it (the policy, its actions, the attempts) is needed.
_WHERE = {
    "AutoTrainer": "policy",
    "BestWeights": "snapshots",
    "Session": "attempts",
    "Snapshot": "snapshots",
    "autotrainer_enabled": "settings",
    "check_config": "settings",
    "run": "attempts",
    "scale_lr": "lr_surgery",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "AutoTrainer",
    "BestWeights",
    "Session",
    "Snapshot",
    "autotrainer_enabled",
    "check_config",
    "run",
    "scale_lr",
]
