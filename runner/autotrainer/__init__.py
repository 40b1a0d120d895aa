"""The AutoTrainer: a policy that reads the live diagnosis and repairs a sick run.

Online repairs act on the optimizer through its scheduler (rollback, LR cut, raise or restore,
regularisation); early stopping tests a run that ends overfitting with its best-validation
weights; guided restarts re-run the train task as ``attempt-N/`` with a config change for what
no LR fixes. It belongs to the runner, not to diag, because it drives the optimizer and the run.
"""

from runner.autotrainer.attempts import Session, run
from runner.autotrainer.lr_surgery import scale_lr
from runner.autotrainer.policy import AutoTrainer
from runner.autotrainer.settings import autotrainer_enabled, check_config
from runner.autotrainer.snapshots import BestWeights, Snapshot

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
