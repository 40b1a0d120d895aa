"""After a mid-epoch rollback the epoch's training loss covers the steps after it, and its line says so."""

from __future__ import annotations

import logging

import torch
from torch import nn

from diag.hooks import FitState, Hook, HookList
from runner.autotrainer.snapshots import Snapshot
from runner.trainer import Trainer


class BlowUpThenRollBack(Hook):
    """Snapshot at step 2, wreck the weights, roll back at step 5: what the AutoTrainer's rollback does."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, state: FitState) -> None:
        self.losses[state.step] = float(state.loss)
        if state.step == 2:
            self.snapshot = Snapshot.take(state)
            with torch.no_grad():
                for p in state.model.parameters():
                    p.mul_(1e4)  # the next steps' loss is huge
        if state.step == 5:
            assert self.snapshot is not None
            self.snapshot.restore(state)


def test_the_epoch_after_a_rollback_reports_the_steps_after_it(caplog):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * 10
    hook = BlowUpThenRollBack()
    caplog.set_level(logging.INFO, logger="runner.trainer")
    Trainer(max_epochs=2, progress=False).fit(state, data, data[:2], HookList({"rb": hook}))
    first_epoch_after = [hook.losses[s] for s in range(6, 11)]
    assert max(hook.losses[s] for s in (3, 4, 5)) > 100  # the wrecked steps
    epoch1 = state.history[0]["train/loss"]
    assert abs(epoch1 - sum(first_epoch_after) / 5) < 1e-4 * max(1.0, epoch1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert "after the rollback to step 2" in lines[0] and "rollback" not in lines[1]
