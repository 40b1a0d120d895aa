"""AMP-correct clipping and the skipped-step / scheduler trap, with a real GradScaler on CPU."""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from diag.hooks import EventLog, FitState
from runner.trainer import Trainer


def _setup(max_norm=1.0, lr=0.1, scale=2.0**12):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = Trainer(
        max_epochs=1,
        precision="fp16",
        clip_max_norm=max_norm,
        progress=False,
        scheduler_interval="step",
    )
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    trainer.attach(model)
    state = FitState(model=model, optimizer=opt, scheduler=sched)
    return model, opt, sched, trainer, state


def test_clipping_happens_in_real_units_under_fp16():
    model, opt, sched, trainer, state = _setup(max_norm=0.5)
    x, y = torch.randn(32, 8) * 10, torch.randint(0, 3, (32,))
    trainer.training_step(state, x, y)
    assert not state.step_skipped
    # after unscale + clip, the gradient the optimizer used is <= max_norm in real units
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm <= 0.5 + 1e-4
    # and the reported pre-clip norm is the real one, not the scaled one (x4096 if it were read before unscaling)
    assert float(state.grad_norm) < 1e3


def test_skipped_step_does_not_advance_scheduler_or_weights():
    model, opt, sched, trainer, state = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    x[0, 0] = math.inf  # inf input -> inf gradients -> the scaler skips the step
    trainer.training_step(state, x, y)
    assert state.step_skipped and state.skipped_steps == 1
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    trainer.training_step(state, torch.randn(32, 8), y)  # a good step then moves both
    assert not state.step_skipped and sched.last_epoch == 1


def test_nonfinite_guard_skips_fp32_steps():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters())
    trainer = Trainer(max_epochs=1, progress=False)
    trainer.attach(model)
    state = FitState(model=model, optimizer=opt)
    before = model.weight.detach().clone()
    x = torch.full((4, 4), float("nan"))
    trainer.training_step(state, x, torch.zeros(4, dtype=torch.long))
    assert state.step_skipped and torch.equal(before, model.weight)


def test_a_skipped_step_is_logged_under_the_number_hooks_and_reports_give_it(tmp_path):
    model, opt, sched, trainer, state = _setup()
    state.events = EventLog(tmp_path / "events.jsonl")
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    state.step = 4  # four steps taken: this is the fifth
    x[0, 0] = math.inf
    trainer.training_step(state, x, y)
    state.events.close()
    (event,) = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert event["kind"] == "skipped_step" and event["step"] == 5
