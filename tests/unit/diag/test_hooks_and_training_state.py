"""The hook protocol's named state and the one capture/apply of training state."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from diag.hooks import Hook, HookList
from diag.training_state import apply, capture


class Counter(Hook):
    def __init__(self) -> None:
        self.n = 0

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])


class Other(Counter):
    pass


def test_hook_states_are_keyed_by_name_and_survive_a_hook_added_or_removed(caplog):
    saved = HookList({"a": Counter(), "gone": Other(), "b": Counter()})
    saved.named["a"].n, saved.named["gone"].n, saved.named["b"].n = 3, 7, 5
    state = saved.state_dict()
    assert state == {"a": {"n": 3}, "gone": {"n": 7}, "b": {"n": 5}}

    # reordered, one added, one removed
    resumed = HookList({"new": Counter(), "b": Counter(), "a": Counter()})
    with caplog.at_level(logging.WARNING, logger="diag"):
        resumed.load_state_dict(state)
    assert (resumed.named["a"].n, resumed.named["b"].n, resumed.named["new"].n) == (3, 5, 0)
    assert resumed.unmatched == ["gone"]
    assert "gone" in caplog.text and "not restored" in caplog.text


def test_hook_states_of_index_keyed_checkpoints_are_matched_by_class():
    resumed = HookList({"counter": Counter(), "other": Other()})
    resumed.load_state_dict({"0:Counter": {"n": 2}, "1:Other": {"n": 9}})
    assert (resumed.named["counter"].n, resumed.named["other"].n) == (2, 9)
    assert resumed.unmatched == []


def test_unnamed_hooks_get_their_class_names_made_unique():
    hooks = HookList([Counter(), Counter(), Other()])
    assert list(hooks.named) == ["Counter", "Counter-2", "Other"]


def _fit_parts() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return model, opt, sched


def _step(model: nn.Module, opt: torch.optim.Optimizer, sched) -> None:
    loss = model(torch.randn(16, 4)).logsumexp(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_capture_then_apply_puts_back_weights_moments_schedule_and_rngs():
    model, opt, sched = _fit_parts()
    _step(model, opt, sched)
    generator = torch.Generator().manual_seed(3)
    saved = capture(model, opt, sched, rng=True, generator=generator)
    expected_next = (torch.rand(3), torch.rand(3, generator=generator))
    apply(saved, generator=generator)  # the RNGs back to the capture
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        _step(model, opt, sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    apply(saved, model, opt, sched, generator=generator)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and sched.last_epoch == 1
    assert opt.state_dict()["state"][0]["step"].item() == 1
    assert torch.equal(torch.rand(3), expected_next[0])
    assert torch.equal(torch.rand(3, generator=generator), expected_next[1])


def test_a_captured_state_is_a_copy_and_can_be_applied_twice():
    model, opt, sched = _fit_parts()
    saved = capture(model, opt, sched)
    first = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert torch.equal(saved.model["0.weight"], first)  # not an alias of the live parameter
    for _ in range(2):
        apply(saved, model, opt, sched)
        assert torch.equal(model[0].weight, first)
        with torch.no_grad():
            model[0].weight.add_(1.0)


def test_a_disabled_grad_scaler_keeps_nothing():
    model, opt, sched = _fit_parts()
    assert capture(model, opt, sched, torch.amp.GradScaler("cpu", enabled=False)).scaler is None
    assert capture(model, opt, sched, torch.amp.GradScaler("cpu", enabled=True)).scaler is not None
