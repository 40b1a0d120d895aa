"""After a mid-epoch rollback the epoch's training loss covers the steps after it, and its line says so."""

from __future__ import annotations

import logging

import torch
from torch import nn

from diag.hooks import FitState, Hook, HookList
from runner.autotrainer.snapshots import Snapshot
from runner.trainer import Trainer


class BlowUpThenRollBack(Hook):
    """Snapshot at step 2, wreck the weights, roll back at step ``at``: what the AutoTrainer's rollback does
    (``at_epoch_end``: from on_epoch_end, where its epoch-end check acts)."""

    def __init__(self, at: int = 5, at_epoch_end: bool = False) -> None:
        self.snapshot: Snapshot | None = None
        self.losses: dict[int, float] = {}
        self.at, self.at_epoch_end = at, at_epoch_end

    def on_train_batch_end(self, state: FitState) -> None:
        self.losses[state.step] = float(state.loss)
        if state.step == 2:
            self.snapshot = Snapshot.take(state)
            with torch.no_grad():
                for p in state.model.parameters():
                    p.mul_(1e4)  # the next steps' loss is huge
        if state.step == self.at and not self.at_epoch_end:
            assert self.snapshot is not None
            self.snapshot.restore(state)

    def on_epoch_end(self, state: FitState) -> None:
        if state.step == self.at and self.at_epoch_end:
            assert self.snapshot is not None
            self.snapshot.restore(state)


def fit(hook: Hook, caplog) -> tuple[FitState, list[str]]:
    """Two epochs of ten steps of a linear model through ``hook``; the state and the epoch lines."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * 10
    caplog.set_level(logging.INFO, logger="runner.trainer")
    Trainer(max_epochs=2, progress=False).fit(state, data, data[:2], HookList({"rb": hook}))
    return state, [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]


def test_the_epoch_after_a_rollback_reports_the_steps_after_it(caplog):
    hook = BlowUpThenRollBack()
    state, lines = fit(hook, caplog)
    first_epoch_after = [hook.losses[s] for s in range(6, 11)]
    assert max(hook.losses[s] for s in (3, 4, 5)) > 100  # the wrecked steps
    epoch1 = state.history[0]["train/loss"]
    assert abs(epoch1 - sum(first_epoch_after) / 5) < 1e-4 * max(1.0, epoch1)
    assert "after the rollback to step 2" in lines[0] and "rollback" not in lines[1]


def test_a_rollback_at_the_epochs_last_step_shows_the_steps_it_undid(caplog):
    hook = BlowUpThenRollBack(at=10)
    state, lines = fit(hook, caplog)
    # no step followed the rollback in epoch 1: its line is the steps it undid (not 0 from no samples)
    epoch1 = state.history[0]["train/loss"]
    assert abs(epoch1 - sum(hook.losses[s] for s in range(1, 11)) / 10) < 1e-3 * epoch1
    assert epoch1 > 100
    assert "(train: the steps the rollback to step 2 undid)" in lines[0]
    assert "rollback" not in lines[1]


def test_a_rollback_at_the_epochs_end_is_said_on_its_line(caplog):
    hook = BlowUpThenRollBack(at=10, at_epoch_end=True)
    state, lines = fit(hook, caplog)
    assert state.history[0]["train/loss"] > 100  # what those steps did
    assert lines[0].endswith("(then rolled back to step 2)"), lines[0]
    assert "rolled back" not in lines[1]
    assert state.history[1]["train/loss"] < 10  # epoch 2 trained from the restored weights
