"""The hook contract is checked at the first wrong call, with one line that says what to pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diag import FitState, GradientStats, TrainingDebugger, clip_gradients
from diag.live import DiagnosticsHook


def _fit(steps: int = 30, as_float: bool = False) -> tuple[DiagnosticsHook, FitState]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    hook = DiagnosticsHook(summary_png=False, console=False, scalar_every=5)
    state = FitState(model=model, optimizer=opt, num_classes=3, max_steps=steps)
    hook.on_fit_start(state)
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        state.step = step
        state.loss = loss.item() if as_float else loss.detach()
        state.grad_norm = float(norm) if as_float else norm
        hook.on_train_batch_end(state)
    hook.on_fit_end(state)
    return hook, state


def test_floats_and_tensors_give_the_same_series():
    tensors, _ = _fit()
    floats, _ = _fit(as_float=True)
    assert floats.series.loss == pytest.approx(tensors.series.loss)
    assert floats.series.grad_norm == pytest.approx(tensors.series.grad_norm)


def test_a_tensor_passes_through_untouched():
    hook, state = _fit(steps=5)
    assert type(state.loss) is torch.Tensor and state.loss.ndim == 0


def _started() -> tuple[DiagnosticsHook, FitState]:
    model = nn.Linear(4, 2)
    hook = DiagnosticsHook(summary_png=False, console=False)
    state = FitState(model=model, num_classes=2)
    hook.on_fit_start(state)
    state.step, state.loss, state.grad_norm = 1, torch.tensor(0.7), torch.tensor(1.0)
    return hook, state


@pytest.mark.parametrize("bad", ["2.3", [0.5], None, {"loss": 1.0}])
def test_a_wrong_loss_type_raises_at_once(bad):
    hook, state = _started()
    state.loss = bad
    with pytest.raises(
        TypeError, match=r"FitState\.loss must be a 0-d tensor or a float.*loss\.detach\(\)"
    ):
        hook.on_train_batch_end(state)


def test_a_loss_per_example_raises():
    hook, state = _started()
    state.loss = torch.ones(8)
    with pytest.raises(ValueError, match="one number per step"):
        hook.on_train_batch_end(state)


def test_a_missing_grad_norm_says_how_to_get_it():
    hook, state = _started()
    state.grad_norm = None
    with pytest.raises(TypeError, match="clip_grad_norm_"):
        hook.on_train_batch_end(state)


def test_a_one_element_tensor_is_accepted():
    hook, state = _started()
    state.loss = torch.tensor([0.7])
    hook.on_train_batch_end(state)
    assert state.loss.ndim == 0


def test_a_step_that_does_not_advance_raises():
    hook, state = _started()
    state.step = 0  # never incremented
    with pytest.raises(ValueError, match=r"state\.step \+= 1"):
        hook.on_train_batch_end(state)
    state.step = 1
    hook.on_train_batch_end(state)
    with pytest.raises(ValueError, match="after 1"):
        hook.on_train_batch_end(state)  # the same step again


@pytest.mark.parametrize(
    "event", ["on_train_batch_end", "on_validation_end", "on_epoch_end", "on_fit_end"]
)
def test_events_before_fit_start_raise(event):
    hook = DiagnosticsHook(summary_png=False, console=False)
    state = FitState(
        model=nn.Linear(4, 2), step=1, loss=torch.tensor(1.0), grad_norm=torch.tensor(1.0)
    )
    state.metrics["val/loss"] = 1.0
    with pytest.raises(RuntimeError, match="before on_fit_start"):
        getattr(hook, event)(state)


def test_validation_metrics_under_other_names_raise():
    hook, state = _started()
    state.metrics = {"val_loss": 0.5}
    with pytest.raises(ValueError, match="'val/loss'"):
        hook.on_validation_end(state)
    state.metrics = {"val/loss": torch.tensor(0.5)}
    with pytest.raises(TypeError, match="host float"):
        hook.on_validation_end(state)


def _grads_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    nn.functional.cross_entropy(model(torch.randn(32, 8)), torch.randint(0, 3, (32,))).backward()
    return model


def test_parameters_where_gradients_belong_raise():
    model = _grads_model()
    with pytest.raises(TypeError, match=r"\[p\.grad for p in model\.parameters\(\)\]"):
        GradientStats.from_gradients(model.parameters())
    # clip_gradients takes parameters as torch's clip_grad_norm_ does: their .grad clipped in place
    clipped, norm = clip_gradients(list(model.parameters()), max_norm=0.01)
    assert (
        norm > 0.01 and float(nn.utils.clip_grad_norm_(model.parameters(), float("inf"))) <= 0.0101
    )
    with pytest.raises(TypeError, match="parameters"):
        TrainingDebugger().step(0, 1.0, model.parameters(), 0.1)
    true_norm = float(nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    assert GradientStats.from_gradients(model).norm == pytest.approx(true_norm, rel=1e-5)


def test_debugger_refuses_a_loss_that_is_not_a_number():
    grads = [np.ones((3, 3))]
    with pytest.raises(TypeError, match="loss must be a number"):
        TrainingDebugger().step(0, "2.3", grads, 0.1)
    with pytest.raises(TypeError, match="loss must be a number"):
        TrainingDebugger().step(step=0, loss=[0.5, 0.6], gradients=grads, learning_rate=0.1)


def test_a_generator_of_gradients_is_read_once_and_fully():
    model = _grads_model()
    debugger = TrainingDebugger()
    debugger.step(0, 1.0, (p.grad for p in model.parameters()), 0.1)
    true_norm = float(nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    assert debugger.history.grad_norm[-1] == pytest.approx(true_norm, rel=1e-5)
    assert debugger.series().layer_grad_norm  # the per-layer pass saw the gradients too
