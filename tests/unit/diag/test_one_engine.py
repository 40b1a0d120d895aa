"""One engine: the same recorded run gets the same verdict through every door.

``TrainingHistory.diagnose()``, ``TrainingDebugger.report()`` and ``diagnosis.diagnose`` on a
per-step ``RunSeries`` built by hand from the same numbers must name the same codes at the same
severities, for every simulated scenario over several seeds and lengths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diag import TrainingDebugger, TrainingHistory, simulate_training
from diag.diagnosis import diagnose
from diag.series import RunSeries
from diag.simulate import ISSUES

SEEDS = range(4)
LENGTHS = (120, 300, 1000)


def _verdict_from_report(report: dict) -> set[tuple[str, str]]:
    return {(d["code"], d["severity"]) for d in report["details"]}


def _series_by_hand(h: TrainingHistory) -> RunSeries:
    """The per-step series a user would build from the recorded lists, without ``to_series``."""
    val_train = []
    for i, vs in enumerate(h.val_step):
        lo = h.val_step[i - 1] if i else -math.inf
        chunk = [x for s, x in zip(h.step, h.loss) if lo < s <= vs and math.isfinite(x)]
        val_train.append(float(np.mean(chunk)) if chunk else math.nan)
    return RunSeries(
        sampling="step",
        step=list(h.step),
        loss=list(h.loss),
        grad_norm=list(h.grad_norm),
        lr=list(h.learning_rate),
        epoch_step=list(h.val_step),
        epoch_train_loss=val_train,
        epoch_val_loss=list(h.val_loss),
        initial_loss=h.loss[0],
        planned_steps=h.step[-1],
    )


def _through_debugger(h: TrainingHistory) -> dict:
    debugger = TrainingDebugger()
    val = dict(zip(h.val_step, h.val_loss))
    for step, loss, g, lr in zip(h.step, h.loss, h.grad_norm, h.learning_rate):
        # one gradient entry whose norm is the recorded one (NaN/Inf kept)
        debugger.step(step, loss, [np.array([g])], lr, val_loss=val.get(step))
    return debugger.report()


CASES = [(issue, steps, seed) for issue in ISSUES for steps in LENGTHS for seed in SEEDS]


@pytest.mark.parametrize(("issue", "steps", "seed"), CASES)
def test_every_door_gives_the_same_verdict(issue, steps, seed):
    h = simulate_training(issue, steps=steps, seed=seed)
    history, debugger = h.diagnose(), _through_debugger(h)  # each door once: the verdict and status
    by_history = _verdict_from_report(history)
    by_debugger = _verdict_from_report(debugger)
    by_rules = {(i.code, i.severity) for i in diagnose(_series_by_hand(h))}
    assert by_history == by_debugger == by_rules, (issue, steps, seed)
    assert history["status"] == debugger["status"]


def test_agreement_covers_every_scenario():
    assert len(CASES) == len(ISSUES) * len(LENGTHS) * len(SEEDS) >= 60
    assert set(ISSUES) >= {"healthy", "lr_high", "lr_low", "overfit", "plateau", "oscillation"}


def test_debugger_reads_vanishing_gradients_from_per_layer_norms():
    """A deep sigmoid net under SGD: the debugger sees the layer gradients, so the cause is named, not 'raise the LR'."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 32
    for i in range(10):
        layers += [nn.Linear(16 if i == 0 else width, width), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(width, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 16), torch.randint(0, 4, (256,))
    debugger = TrainingDebugger()
    for step in range(200):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        debugger.step(step, loss.item(), model, 0.01)
    report = debugger.report()
    assert "VANISHING_GRADIENTS" in report["issues"]
    assert "SLOW_CONVERGENCE" not in report["issues"]


def test_blow_up_inside_the_first_interval_is_an_explosion():
    """An LR that blows the loss up within the first few steps: the first step's loss is the baseline."""
    h = TrainingHistory()
    for step in range(200):
        loss = 2.3 if step == 0 else 2.3 * 50.0 * (1 + 0.01 * step)
        h.record(step, loss, 10.0, 5.0)
    assert "LOSS_EXPLOSION" in h.diagnose()["issues"]
