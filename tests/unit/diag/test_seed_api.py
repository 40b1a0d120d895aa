"""The documented public API (both call forms) runs as written, from the package top level.

``seed_000``/``seed_001`` in test names: the step-first and the loss-first call forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diag import (
    CODES,
    ActivationMonitor,
    ActivationStats,
    FitState,
    GradientStats,
    Hook,
    Issue,
    LearningRateFinder,
    TrainingDebugger,
    TrainingHistory,
    check_initialization,
    clip_gradients,
    detect_dead_neurons,
    simulate_training,
)


class SoftmaxRegression:
    """A NumPy model with the ``train_step(x, y) -> (loss, gradients)`` the usage example assumes."""

    def __init__(self, n_in: int, n_classes: int, rng: np.random.Generator) -> None:
        self.W = rng.normal(0.0, math.sqrt(2.0 / n_in), (n_in, n_classes))
        self.b = np.zeros(n_classes)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        logits = x @ self.W + self.b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
        d = p.copy()
        d[np.arange(len(y)), y] -= 1.0
        d /= len(y)
        return loss, [x.T @ d, d.sum(axis=0)]


class SGD:
    def __init__(self, model: SoftmaxRegression, lr: float) -> None:
        self.model, self.lr = model, lr

    def step(self, gradients: list[np.ndarray]) -> None:
        self.model.W -= self.lr * gradients[0]
        self.model.b -= self.lr * gradients[1]


def _blobs(
    rng: np.random.Generator, n: int = 2048, batch: int = 32
) -> list[tuple[np.ndarray, np.ndarray]]:
    centers = rng.normal(0.0, 3.0, (4, 8))
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.normal(0.0, 1.0, (n, 8))
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def test_debugger_usage_example_runs_as_written(capsys):
    """The documented ``TrainingDebugger`` usage loop, verbatim apart from the model and optimizer it assumes."""
    rng = np.random.default_rng(0)
    dataloader = _blobs(rng)
    model = SoftmaxRegression(8, 4, rng)
    optimizer = SGD(model, lr=0.1)

    debugger = TrainingDebugger()
    for step, (x, y) in enumerate(dataloader):
        loss, gradients = model.train_step(x, y)
        optimizer.step(gradients)
        debugger.step(
            step=step,
            loss=loss,
            gradients=gradients,
            learning_rate=optimizer.lr,
        )
        if step % 100 == 0:  # noqa: SIM102 (the documented usage loop, verbatim)
            if not debugger.quick_check():
                report = debugger.report()
                print(f"Issues detected: {report['issues']}")
                print(f"Recommendations: {report['recommendations']}")

    assert capsys.readouterr().out == ""  # a healthy run never trips the quick check
    report = debugger.report()
    assert set(report) >= {
        "status",
        "issues",
        "recommendations",
        "gradient_healthy",
        "activation_issues",
    }
    assert report["gradient_healthy"] is True
    assert debugger.history.step == list(range(len(dataloader)))
    assert debugger.history.loss[-1] < debugger.history.loss[0] / 3


def test_debugger_quick_check_trips_on_nan_and_report_says_why():
    debugger = TrainingDebugger()
    grads = [np.full((4, 4), 0.1)]
    for step in range(5):
        debugger.step(step, 1.0 / (step + 1), grads, 0.1)
    assert debugger.quick_check()
    debugger.step(5, float("nan"), [np.full((4, 4), np.nan)], 0.1)
    assert not debugger.quick_check()
    report = debugger.report()
    assert report["status"] == "critical"
    assert "LOSS_EXPLOSION" in report["issues"] and "NONFINITE_GRADIENTS" in report["issues"]
    assert report["gradient_healthy"] is False
    assert CODES["LOSS_EXPLOSION"]["recommendations"][0] in report["recommendations"]


def test_debugger_step_in_seed_001_form_with_torch_tensors():
    """The loss-first form ``step(loss, gradients, activations, lr)``, positionally and by keyword."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    debugger = TrainingDebugger()
    for i in range(6):
        model.zero_grad()
        hidden = model[1](model[0](x))
        loss = nn.functional.cross_entropy(model[2](hidden), y)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        if i % 2:
            debugger.step(loss, grads, {"relu": hidden}, 0.01)
        else:
            debugger.step(loss=loss, gradients=grads, activations={"relu": hidden}, lr=0.01)
    assert debugger.history.step == list(range(6))
    assert debugger.history.lr == [0.01] * 6
    expected_norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))
    assert debugger.history.grad_norm[-1] == pytest.approx(expected_norm, rel=1e-6)
    assert len(debugger.gradient_stats) == 6
    assert "relu" in debugger.activation_monitor.history
    assert debugger.quick_check()


def test_training_history_seed_000_record_and_diagnose():
    history = TrainingHistory()
    for step in range(300):
        history.record(step, 2.3 * math.exp(-step / 100) + 0.1, 1.0, 1e-3, val_loss=None)
    diagnosis = history.diagnose()
    assert set(diagnosis) >= {"status", "issues", "recommendations"}
    assert diagnosis["status"] == "healthy" and diagnosis["issues"] == []
    assert history.learning_rate == history.lr == [1e-3] * 300


def test_training_history_seed_001_form():
    """The loss-first API's dataclass has ``lr``; ``record(loss, grad_norm, lr)``; ``smoothed_loss``; ``detect_plateau``."""
    history = TrainingHistory()
    for i in range(200):
        history.record(2.0 if i < 20 else 1.0, 0.5, 0.01)
    assert history.step == list(range(200))
    assert history.lr == [0.01] * 200
    smoothed = history.smoothed_loss(window=100)
    assert len(smoothed) == 200 and smoothed[0] == pytest.approx(2.0)
    assert history.detect_plateau(threshold=0.001) is True

    built = TrainingHistory(loss=[3.0, 2.0], grad_norm=[1.0, 1.0], lr=[0.1, 0.1])
    assert built.learning_rate == [0.1, 0.1] and built.step == [0, 1]


def test_gradient_stats_on_seed_shapes():
    rng = np.random.default_rng(0)
    grads = [
        rng.normal(0.0, 0.1, (256, 128)),
        rng.normal(0.0, 0.1, 128),
        rng.normal(0.0, 0.1, (128, 10)),
    ]
    stats = GradientStats.from_gradients(grads)
    flat = np.concatenate([g.ravel() for g in grads])
    assert stats.total_elements == flat.size == 256 * 128 + 128 + 1280
    assert stats.norm == pytest.approx(float(np.linalg.norm(flat)))
    assert stats.std == pytest.approx(float(flat.std()))
    assert stats.mean == pytest.approx(float(flat.mean()))
    assert stats.max_val == pytest.approx(float(np.abs(flat).max()))
    assert stats.num_zeros == 0
    assert stats.is_healthy() == (True, [])


def test_clip_gradients_seed_001():
    grads = [np.full((3,), 2.0), np.full((1,), 2.0)]  # global norm sqrt(4 * 4) = 4
    clipped, norm = clip_gradients(grads, max_norm=1.0)
    assert norm == pytest.approx(4.0)
    assert math.sqrt(sum(float((g**2).sum()) for g in clipped)) == pytest.approx(1.0, rel=1e-5)


def test_activation_monitor_seed_usage():
    rng = np.random.default_rng(0)
    monitor = ActivationMonitor(window_size=100)
    for _ in range(10):
        pre = rng.normal(0.0, 1.0, (64, 50))
        monitor.record("layer1", np.maximum(0.0, pre))
        dead = np.maximum(0.0, pre)
        dead[:, :36] = 0.0  # 72% of units never fire
        monitor.record("layer2", dead)
    issues = monitor.diagnose()
    assert list(issues) == ["layer2"]
    assert issues["layer2"][0].startswith("Dead: 72%")
    stats = monitor.history["layer2"][-1]
    assert isinstance(stats, ActivationStats)
    assert stats.zero_ratio > 0.72 and stats.saturation_ratio == 0.0


def test_detect_dead_neurons_and_check_initialization_seed_calls():
    acts = np.ones((16, 10))
    acts[:, 3] = 0.0
    assert detect_dead_neurons(acts, threshold=0.01) == (1, 0.1)

    rng = np.random.default_rng(0)
    model_weights = [
        rng.normal(0.0, math.sqrt(2.0 / 784), (256, 784)),
        rng.normal(0.0, math.sqrt(2.0 / 256), (10, 256)),
    ]
    result = check_initialization(model_weights)
    assert result["all_ok"] is True
    assert [r["status"] for r in result["layers"]] == ["ok", "ok"]


def test_simulate_training_seed_001_signature():
    history = simulate_training(issue="healthy", steps=1000)
    assert isinstance(history, TrainingHistory) and len(history.loss) == 1000
    assert history.diagnose()["status"] == "healthy"


def test_learning_rate_finder_seed_range_test():
    """The documented ``range_test(train_fn)`` on a loss that is best near lr = 1e-2 and explodes above 1."""

    def train_fn(lr: float) -> float:
        return 1.0 + (math.log10(lr) + 2.0) ** 2 if lr < 1.0 else 1e6

    finder = LearningRateFinder(min_lr=1e-6, max_lr=10.0, num_steps=100)
    result = finder.range_test(train_fn)
    assert {"suggested_lr", "lrs", "losses"} <= set(result)
    assert 1e-6 <= result["suggested_lr"] < 1.0
    assert len(result["lrs"]) < 100  # stopped once the loss exploded, short of max_lr


def test_shared_vocabulary_and_hook_protocol_are_exported():
    issue = Issue(code="OVERFITTING", severity="warning", first_step=3, evidence="val up")
    assert issue.recommendations == CODES["OVERFITTING"]["recommendations"]
    assert issubclass(Hook, object) and FitState.__dataclass_fields__["step"].default == 0
