"""The seed API and ``watch()`` refuse bad input up front, naming the argument, and change nothing.

Each case was a red-team finding: a traceback from deep inside the library, a wrong value accepted
silently, a run's files overwritten, or a label that said the opposite of what happened.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from diag import (
    ActivationMonitor,
    GradientStats,
    LearningRateFinder,
    TrainingDebugger,
    TrainingHistory,
    check_initialization,
    simulate_training,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _fit(debugger: TrainingDebugger, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for _ in range(2):
        for _ in range(10):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            debugger.train_step(loss)
        debugger.end_epoch(val_loss=loss.item(), val_acc=0.5)
    return debugger.finish()


# -- TrainingHistory.record ---------------------------------------------------------
@pytest.mark.parametrize(
    "loss", [np.array([5.0, 1.0]), torch.ones(3)], ids=["numpy-per-sample", "torch-per-sample"]
)
def test_a_per_sample_loss_is_refused_not_cut_to_its_first_entry(loss):
    h = TrainingHistory()
    with pytest.raises(ValueError, match=r"loss must be one number per step .* got \d values"):
        h.record(step=0, loss=loss, grad_norm=1.0, lr=1e-3)
    assert h.loss == [] and h.step == []


@pytest.mark.parametrize("key", ["grad_norm", "lr"])
def test_a_negative_norm_or_lr_is_refused_and_the_lists_stay_aligned(key):
    h = TrainingHistory()
    h.record(step=0, loss=2.0, grad_norm=1.0, lr=1e-3)
    with pytest.raises(ValueError, match=f"{key} must be >= 0"):
        h.record(**{"step": 1, "loss": 1.9, "grad_norm": 1.0, "lr": 1e-3, key: -5.0})
    assert (h.step, h.loss, h.grad_norm, h.learning_rate) == ([0], [2.0], [1.0], [1e-3])


def test_non_finite_values_are_still_recorded_as_evidence():
    h = TrainingHistory()
    h.record(step=0, loss=math.nan, grad_norm=math.inf, lr=0.0)
    h.record(loss=np.float32(1.5), grad_norm=torch.tensor(2.0), lr=np.array([1e-3]))
    assert math.isnan(h.loss[0]) and h.grad_norm == [math.inf, 2.0] and h.step == [0, 1]
    assert h.loss[1] == 1.5 and h.learning_rate == [0.0, 1e-3]


def test_a_loss_that_is_not_a_number_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="loss must be a number, got str"):
        TrainingHistory().record(step=0, loss="2.0", grad_norm=1.0, lr=1e-3)


# -- TrainingDebugger.step ------------------------------------------------------------
@pytest.mark.parametrize(
    ("activations", "message"),
    [
        ([np.ones(3)], r"step\(activations=...\) maps each layer's name to its outputs"),
        ({"fc1": None}, "activations of 'fc1': the layer's outputs as a tensor or an array"),
    ],
)
def test_step_refuses_activations_it_cannot_read_before_recording_anything(activations, message):
    d = TrainingDebugger()
    with pytest.raises(TypeError, match=message):
        d.step(
            step=0, loss=1.0, gradients=[np.ones(3)], learning_rate=1e-3, activations=activations
        )
    assert d.history.step == [] and len(d.gradient_history) == 0


def test_step_with_a_negative_lr_records_nothing():
    d = TrainingDebugger()
    with pytest.raises(ValueError, match="lr must be >= 0"):
        d.step(step=0, loss=1.0, gradients=[np.ones(3)], learning_rate=-1.0)
    assert d.history.step == [] and len(d.gradient_history) == 0


# -- TrainingDebugger.watch -------------------------------------------------------------
def test_watch_refuses_a_folder_that_holds_a_run_and_leaves_its_files_alone(tmp_path):
    run = tmp_path / "run"
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = _fit(TrainingDebugger().watch(model, opt, num_classes=3, run_dir=run), model, opt)
    assert first["status"] and (run / "report.json").is_file() and (run / "summary.png").is_file()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    with pytest.raises(
        ValueError, match=r"already holds a run \(report\.json, report\.md, summary\.png\)"
    ):
        TrainingDebugger().watch(model, opt, num_classes=3, run_dir=run)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    assert after == before
    assert json.loads((run / "report.json").read_text())["status"] == first["status"]


def test_watch_refuses_a_file_where_the_run_folder_goes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ValueError, match="a file is in the way"):
        TrainingDebugger().watch(_model(), None, num_classes=3, run_dir=path)
    assert path.read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"optimizer": "adam"},
            TypeError,
            r"watch\(optimizer=...\) takes the torch.optim.Optimizer",
        ),
        ({"num_classes": "3"}, ValueError, r"watch\(num_classes='3'\): the number of classes"),
        ({"num_classes": 1}, ValueError, r"watch\(num_classes=1\)"),
        ({"num_classes": 2.5}, ValueError, r"watch\(num_classes=2.5\)"),
        ({"max_steps": -5}, ValueError, r"watch\(max_steps=-5\)"),
    ],
)
def test_watch_checks_its_arguments_before_the_first_step(kwargs, error, message):
    model = _model()
    args = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "num_classes": 3, **kwargs}
    optimizer = args.pop("optimizer")
    with pytest.raises(error, match=message):
        TrainingDebugger().watch(model, optimizer, **args)


# -- the other seed classes -------------------------------------------------------------
@pytest.mark.parametrize("window", [0, -1, 2.5])
def test_activation_monitor_needs_a_window_of_at_least_one_batch(window):
    with pytest.raises(ValueError, match=rf"window_size={window}\): the batches kept per layer"):
        ActivationMonitor(window_size=window)


def test_nan_activations_are_non_finite_not_vanishing():
    m = ActivationMonitor()
    m.record("l", np.full((8, 4), np.nan))
    assert m.diagnose() == {"l": ["Exploding: 32 non-finite values"]}
    m.record("quiet", np.full((8, 4), 1e-6))  # a real zero spread still reads as vanishing
    assert any(msg.startswith("Vanishing") for msg in m.diagnose()["quiet"])


def test_no_gradients_is_said_as_such_not_as_a_tiny_norm():
    grads = [p.grad for p in nn.Linear(3, 2).parameters()]  # before any backward: all None
    for given in (grads, [], [None]):
        healthy, messages = GradientStats.from_gradients(given).is_healthy()
        assert not healthy and messages == [
            "No gradients: every .grad was None or empty (measure after loss.backward())"
        ]


def test_non_finite_weights_are_a_critical_finding_of_their_own():
    out = check_initialization({"fc": np.full((4, 4), np.nan), "ok": np.random.randn(4, 4) * 0.7})
    status = {layer["layer"]: layer["status"] for layer in out["layers"]}
    assert status == {"fc": "non_finite", "ok": "ok"} and not out["all_ok"]
    (issue,) = out["issues"]
    assert issue["severity"] == "critical" and "16 of 16 weights are NaN/Inf" in issue["evidence"]


@pytest.mark.parametrize("steps", [2.5, True, "100"])
def test_simulate_training_needs_a_whole_number_of_steps(steps):
    with pytest.raises(ValueError, match=r"simulate_training\(steps=...\): a whole number >= 1"):
        simulate_training("healthy", steps=steps)


@pytest.mark.parametrize("num_steps", [2.5, True, 1])
def test_lr_finder_needs_a_whole_number_of_steps(num_steps):
    with pytest.raises(ValueError, match="a whole number of steps, at least 2"):
        LearningRateFinder(num_steps=num_steps)


def test_lr_finder_with_nothing_measured_raises_instead_of_suggesting():
    with pytest.raises(ValueError, match=r"non-finite loss \(nan\) at the first LR \(1e-07\)"):
        LearningRateFinder().range_test(lambda lr: float("nan"))


@pytest.mark.parametrize("returned", [None, "1.0"])
def test_lr_finder_names_train_fn_when_it_returns_no_number(returned):
    with pytest.raises(
        TypeError, match=r"train_fn\(1e-07\) must return the step's loss as a number"
    ):
        LearningRateFinder().range_test(lambda lr: returned)


def test_lr_finder_takes_a_one_element_tensor_loss():
    res = LearningRateFinder(num_steps=20).range_test(
        lambda lr: torch.tensor((math.log10(lr) + 3) ** 2 + 1.0)
    )
    assert res["num_steps_run"] == 20 and 1e-7 < res["suggested_lr"] < 10


def test_a_finished_watch_takes_no_more_steps_and_a_new_watch_starts_over(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    debugger = TrainingDebugger().watch(model, opt, num_classes=3)
    report = _fit(debugger, model, opt)
    for call in (lambda: debugger.train_step(1.0), debugger.finish, debugger.end_epoch):
        with pytest.raises(RuntimeError, match=r"after finish\(\): that fit is over"):
            call()
    assert debugger.report() == report  # the finished fit's report stays readable
    assert _fit(debugger.watch(model, opt, num_classes=3), model, opt)["status"]
