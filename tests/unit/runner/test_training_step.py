"""What ``Trainer.training_step`` does to gradients between steps, as ``zero_grad(set_to_none=True)`` would."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from diag.hooks import FitState
from runner.trainer import Trainer


class WithUnused(nn.Module):
    """A layer the loss never reaches: its parameter must keep no gradient (and Adam no state for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(6, 3)
        self.unused = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def _step(trainer: Trainer, state: FitState, x: torch.Tensor, y: torch.Tensor) -> None:
    trainer.training_step(state, x, y)
    assert not state.step_skipped


def test_each_step_starts_from_no_gradient_and_an_unreached_parameter_keeps_none():
    torch.manual_seed(0)
    model = WithUnused()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    trainer = Trainer(max_epochs=1, progress=False)
    trainer.attach(model, opt)
    state = FitState(model=model, optimizer=opt)
    batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
    _step(trainer, state, *batches[0])
    before = copy.deepcopy(model)  # the weights the second step's gradient is taken at
    _step(trainer, state, *batches[1])
    F.cross_entropy(before(batches[1][0]), batches[1][1]).backward()
    # the second step's gradient alone, not the sum of both steps'
    assert torch.allclose(model.used.weight.grad, before.used.weight.grad)
    assert model.unused.weight.grad is None and model.unused.bias.grad is None
    # a None gradient: Adam skipped the parameter, as after zero_grad
    assert model.unused.weight not in opt.state
    assert len(opt.state) == 2


class CountingSGD(torch.optim.SGD):
    """An optimizer with its own zero_grad (a wrapper that keeps gradients elsewhere would have one)."""

    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        CountingSGD.calls += 1
        super().zero_grad(set_to_none=set_to_none)


def test_an_optimizer_that_overrides_zero_grad_has_it_called_every_step():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = CountingSGD(model.parameters(), lr=0.1)
    trainer = Trainer(max_epochs=1, progress=False)
    trainer.attach(model, opt)
    state = FitState(model=model, optimizer=opt)
    CountingSGD.calls = 0
    for _ in range(3):
        _step(trainer, state, torch.randn(8, 6), torch.randint(0, 3, (8,)))
    assert CountingSGD.calls == 3
