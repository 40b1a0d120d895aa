"""Each detector on synthetic inputs with a known answer, its negative case, and four naive-rule defects.

Four naive rules give wrong answers: overfitting windows counted in validation points but taken
from the first training steps, the minimum of an empty array on all-zero gradients, ``|x| > 0.99``
called saturation on a ReLU, and ``shape[0]`` (a torch layer's fan-out) taken as fan-in. Each has a
regression test named ``test_seed_defect_*`` showing the naive rule's answer and the right one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from diag import (
    ActivationMonitor,
    GradientStats,
    TrainingDebugger,
    TrainingHistory,
    check_initialization,
    clip_gradients,
    detect_dead_neurons,
    simulate_training,
)
from diag.activations import activation_kind, infer_kind
from diag.simulate import ISSUES


def _history(loss, grad_norm=None, val=None) -> TrainingHistory:
    h = TrainingHistory()
    val = val or {}
    for i, value in enumerate(loss):
        h.record(i, value, 1.0 if grad_norm is None else grad_norm[i], 1e-3, val_loss=val.get(i))
    return h


def _codes(h: TrainingHistory) -> list[str]:
    return h.diagnose()["issues"]


# ---------------------------------------------------------------- TrainingHistory.record


def test_record_accepts_every_documented_call_form():
    h = TrainingHistory()
    h.record(0, 2.0, 1.0, 0.1)  # step-first, positional
    h.record(5, 1.9, 1.0, 0.1, 1.95)  # step-first with val_loss
    h.record(1.8, 1.0, 0.1)  # loss-first, positional: next step
    h.record(7, loss=1.7, grad_norm=1.0, lr=0.1)  # step positional, rest by keyword
    h.record(1.6, 1.0, lr=0.1, step=9)  # loss-first order with a keyword step
    h.record(loss=torch.tensor(1.5), grad_norm=np.float32(1.0), learning_rate=0.1)
    assert h.step == [0, 5, 6, 7, 9, 10]
    assert h.loss == [2.0, 1.9, 1.8, 1.7, 1.6, 1.5]
    assert h.val_loss == [1.95] and h.val_step == [5]
    assert h.lr is h.learning_rate
    with pytest.raises(TypeError, match="missing"):
        h.record(1.0, 1.0)
    with pytest.raises(TypeError, match="multiple values"):
        h.record(0, 1.0, 1.0, 0.1, step=3)


def test_smoothed_loss_is_a_bias_corrected_ema():
    h = _history([1.0, 3.0])
    # beta = 1 - 1/2: ema = 0.5, 1.75; corrected by 1 - 0.5**t: 1.0, 2.3333
    assert h.smoothed_loss(window=2) == pytest.approx([1.0, 1.75 / 0.75])
    assert _history([4.0] * 50).smoothed_loss(window=10) == pytest.approx([4.0] * 50)
    assert _history([3.0, 1.0, 2.0]).smoothed_loss(window=1) == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        h.smoothed_loss(window=0)


# ---------------------------------------------------------------- explosion


def test_explosion_on_non_finite_loss_reports_its_step():
    loss = [2.0] * 30 + [float("inf")] + [float("nan")] * 5
    diagnosis = _history(loss).diagnose()
    assert diagnosis["status"] == "critical"
    assert diagnosis["issues"][0] == "LOSS_EXPLOSION"
    assert diagnosis["details"][0]["first_step"] == 30
    assert (
        "Reduce the learning rate by 10-100x" in diagnosis["recommendations"]
    )  # plain words outside the runner


def test_explosion_on_growth_by_an_order_of_magnitude():
    loss = [1.0] * 20 + [1.0 * 1.5**k for k in range(1, 21)]  # finite but rising to 3300x
    issue = _history(loss).detect_explosion()
    assert issue is not None and issue.code == "LOSS_EXPLOSION"
    # 1.5**k first exceeds 10 at k = 6; the rolling median of 5 crosses two steps later
    assert issue.first_step == 20 + 5 + 2


def test_no_explosion_on_a_single_spike_or_a_falling_loss():
    spike = [1.0] * 40
    spike[20] = 1000.0
    assert _history(spike).detect_explosion() is None
    assert _history([2.0 * 0.99**i for i in range(200)]).detect_explosion() is None


# ---------------------------------------------------------------- plateau, slow convergence, oscillation


def test_plateau_after_early_progress():
    rng = np.random.default_rng(0)
    loss = [2.3 * math.exp(-i / 20) + 0.5 for i in range(400)] * np.exp(rng.normal(0, 0.05, 400))
    h = _history(list(loss))
    assert h.detect_plateau() is True
    assert _codes(h) == ["LOSS_PLATEAU"]


def test_no_plateau_while_the_loss_keeps_falling():
    rng = np.random.default_rng(0)
    loss = [2.3 / (1 + i / 50) ** 0.8 for i in range(400)] * np.exp(rng.normal(0, 0.05, 400))
    h = _history(list(loss))
    assert h.detect_plateau() is False
    assert _codes(h) == []


def test_flat_from_the_start_is_slow_convergence_not_plateau():
    rng = np.random.default_rng(0)
    loss = 2.3 * np.exp(rng.normal(0, 0.01, 400))
    h = _history(list(loss))
    assert h.detect_plateau() is False
    assert _codes(h) == ["SLOW_CONVERGENCE"]


def test_plateau_threshold_is_relative_so_scale_does_not_matter():
    base = [2.3 * math.exp(-i / 20) + 0.5 for i in range(400)]
    for scale in (1e-4, 1.0, 1e4):
        assert _history([scale * v for v in base]).detect_plateau() is True


def test_oscillation_without_trend():
    loss = [1.5 + (0.6 if i % 2 else -0.6) for i in range(400)]
    h = _history(loss)
    assert h.detect_oscillation() is not None
    assert _codes(h) == ["LOSS_OSCILLATION"]


def test_noisy_but_falling_loss_is_not_oscillation():
    rng = np.random.default_rng(1)
    loss = [2.3 / (1 + i / 50) for i in range(400)] * np.exp(rng.normal(0, 0.1, 400))
    assert _history(list(loss)).detect_oscillation() is None


# ---------------------------------------------------------------- overfitting


def _overfit_run():
    """Train falls throughout; validation (every 50 steps) is best at step 299, then rises."""
    loss = [2.0 / (1 + i / 50) for i in range(1000)]
    val = {
        s: (1.0 - 0.5 * s / 299 if s <= 299 else 0.5 + 0.8 * (s - 299) / 700)
        for s in range(49, 1000, 50)
    }
    return _history(loss, val=val)


def test_overfitting_found_with_the_step_validation_turned():
    issue = _overfit_run().detect_overfitting()
    assert issue is not None and issue.code == "OVERFITTING"
    # the shared rule dates a finding when it is evident (validation 1.5x its best, no accuracies to show a
    # gap); the turn at step 299 (the 6th validation point) is in the evidence
    assert 299 < issue.first_step <= 599 and "0.5 at epoch 6" in issue.evidence
    assert _codes(_overfit_run()) == ["OVERFITTING"]


def test_no_overfitting_when_validation_follows_training_down():
    loss = [2.0 / (1 + i / 50) for i in range(1000)]
    val = {s: 0.1 + 2.0 / (1 + s / 50) for s in range(49, 1000, 50)}
    assert _history(loss, val=val).detect_overfitting() is None


def test_seed_defect_overfitting_aligns_validation_with_the_steps_it_was_recorded_at():
    """Train and validation both fall, then both rise (instability, not overfitting).

    The naive rule compares ``loss[:n//4]`` and ``loss[-n//4:]`` with n = number of
    validation points: the first 5 *steps* (the untrained model) against the
    last 5, so it sees "train fell" and calls this overfitting.
    """

    def curve(s):
        return (
            2.3 * math.exp(-s / 30) + 0.5 + (s - 500) / 500
            if s > 500
            else 2.3 * math.exp(-s / 30) + 0.5
        )

    loss = [curve(i) for i in range(1000)]
    val = {s: curve(s) + 0.1 for s in range(49, 1000, 50)}
    h = _history(loss, val=val)
    n = len(h.val_loss)
    assert n == 20
    seed_verdict = np.mean(h.loss[-n // 4 :]) < np.mean(h.loss[: n // 4]) and np.mean(
        h.val_loss[-n // 4 :]
    ) > np.mean(h.val_loss[: n // 4])
    assert seed_verdict  # the defect
    assert h.detect_overfitting() is None
    assert "OVERFITTING" not in _codes(h)


def test_overfitting_with_few_validation_points_once_per_epoch():
    """Ten epochs of 100 steps: few validation points are still enough to judge overfitting."""
    loss = [2.0 / (1 + i / 50) for i in range(1000)]
    val = {
        99: 1.0,
        199: 0.8,
        299: 0.7,
        399: 0.72,
        499: 0.78,
        599: 0.85,
        699: 0.9,
        799: 0.97,
        899: 1.05,
        999: 1.1,
    }
    issue = _history(loss, val=val).detect_overfitting()
    assert issue is not None and issue.first_step > 299 and "0.7 at epoch 3" in issue.evidence


# ---------------------------------------------------------------- early stopping


def test_early_stopping_on_validation_loss():
    h = TrainingHistory()
    for step, v in zip(range(10, 70, 10), [1.0, 0.8, 0.7, 0.75, 0.8, 0.9]):
        h.record(step, 1.0, 1.0, 0.1, val_loss=v)
    advice = h.early_stopping(patience=3)
    assert advice == {
        "best_step": 30,
        "best_loss": 0.7,
        "since_best": 3,
        "should_stop": True,
        "monitor": "val_loss",
    }
    assert h.should_stop_early(patience=4) is False


def test_early_stopping_on_train_loss_when_no_validation():
    h = _history([2.0 / (1 + i) for i in range(50)])
    advice = h.early_stopping(patience=5)
    assert (
        advice["monitor"] == "loss" and advice["best_step"] == 49 and advice["should_stop"] is False
    )
    flat = _history([1.0 / (1 + i) for i in range(10)] + [0.5] * 40)
    assert flat.should_stop_early(patience=5) is True


# ---------------------------------------------------------------- gradient rules in the history


def test_history_gradient_rules_and_their_negative():
    n = 100
    nonfinite = [1.0] * 50 + [float("nan")] + [1.0] * 49
    growing = [1.0] * 20 + [10.0 ** (k / 10) for k in range(80)]
    tiny = [1e-10] * n
    assert "NONFINITE_GRADIENTS" in _codes(_history([1.0 / (1 + i) for i in range(n)], nonfinite))
    assert "EXPLODING_GRADIENTS" in _codes(_history([1.0 / (1 + i) for i in range(n)], growing))
    assert "VANISHING_GRADIENTS" in _codes(_history([1.0 / (1 + i) for i in range(n)], tiny))
    assert _codes(_history([1.0 / (1 + i) for i in range(n)], [1.0] * n)) == []


# ---------------------------------------------------------------- GradientStats


def test_gradient_stats_known_values():
    stats = GradientStats.from_gradients([np.array([3.0, 0.0]), np.array([[-4.0]])])
    assert stats.norm == pytest.approx(5.0)
    assert (stats.max_val, stats.min_val) == (4.0, 3.0)
    assert stats.mean == pytest.approx(-1.0 / 3.0)
    assert stats.std == pytest.approx(float(np.std([3.0, 0.0, -4.0])))
    assert (stats.num_zeros, stats.total_elements) == (1, 3)


def test_seed_defect_min_val_on_all_zero_gradients():
    zeros = [np.zeros((4, 4)), np.zeros(4)]
    with pytest.raises(ValueError):  # the naive rule: min of an empty array
        np.min(
            np.abs(
                np.concatenate([g.ravel() for g in zeros])[
                    np.concatenate([g.ravel() for g in zeros]) != 0
                ]
            )
        )
    stats = GradientStats.from_gradients(zeros)
    assert stats.min_val == 0.0 and stats.norm == 0.0 and stats.num_zeros == 20
    healthy, messages = stats.is_healthy()
    assert not healthy and messages[0].startswith("Norm too small")


def test_nan_and_inf_do_not_poison_the_other_statistics():
    stats = GradientStats.from_gradients([np.array([3.0, np.nan, 4.0, np.inf, -np.inf])])
    assert stats.norm == pytest.approx(5.0) and stats.mean == pytest.approx(3.5)
    assert (stats.num_nans, stats.num_infs, stats.total_elements) == (1, 2, 5)
    assert math.isnan(stats.global_norm)
    healthy, messages = stats.is_healthy()
    assert not healthy and messages == ["NaN gradients: 1", "Inf gradients: 2"]


def test_gradient_stats_healthy_negative_case_and_empty_input():
    assert GradientStats.from_gradients([np.full(100, 0.1)]).is_healthy() == (True, [])
    assert GradientStats.from_gradients([]) == GradientStats()
    big = GradientStats.from_gradients([np.full(100, 1000.0)])
    assert big.is_healthy()[1] == ["Norm too large: 10000.00"]


def test_gradient_stats_same_for_tensors_arrays_mappings_and_modules():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    model(torch.randn(7, 5)).pow(2).sum().backward()
    tensors = [p.grad for p in model.parameters()]
    arrays = [t.numpy().copy() for t in tensors]
    reference = GradientStats.from_gradients(arrays)
    for source in (tensors, {n: p.grad for n, p in model.named_parameters()}, model):
        assert GradientStats.from_gradients(source) == reference
    # no NumPy bfloat16
    half = GradientStats.from_gradients([t.to(torch.bfloat16) for t in tensors])
    assert half.norm == pytest.approx(reference.norm, rel=1e-2)


# ---------------------------------------------------------------- clip_gradients


def test_clip_gradients_scales_to_max_norm_and_keeps_types():
    arrays = [np.array([3.0, 0.0], dtype=np.float32), np.array([4.0], dtype=np.float32)]
    clipped, norm = clip_gradients(arrays, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    assert all(isinstance(c, np.ndarray) and c.dtype == np.float32 for c in clipped)
    assert np.concatenate(clipped) == pytest.approx([0.6, 0.0, 0.8], rel=1e-5)

    tensors = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]
    t_clipped, t_norm = clip_gradients(tensors, max_norm=1.0)
    assert t_norm == pytest.approx(norm)
    assert all(isinstance(c, torch.Tensor) and c.dtype == torch.float32 for c in t_clipped)
    assert torch.cat(t_clipped).tolist() == pytest.approx([0.6, 0.0, 0.8], rel=1e-5)
    assert tensors[0].tolist() == [3.0, 0.0]  # inputs untouched


def test_clip_gradients_below_max_norm_is_identity():
    clipped, norm = clip_gradients([np.array([0.3, 0.4])], max_norm=1.0)
    assert norm == pytest.approx(0.5)
    assert clipped[0] == pytest.approx([0.3, 0.4], rel=1e-5)


def test_clip_gradients_non_finite_norm_returns_unchanged_and_reports_it():
    clipped, norm = clip_gradients([np.array([np.inf, 1.0])], max_norm=1.0)
    assert math.isinf(norm)
    assert clipped[0][1] == 1.0
    with pytest.raises(ValueError):
        clip_gradients([np.ones(2)], max_norm=0.0)


# ---------------------------------------------------------------- activations


def _monitor_with(name, batches, activation=None, **kw) -> ActivationMonitor:
    monitor = ActivationMonitor(**kw)
    for b in batches:
        monitor.record(name, b, activation)
    return monitor


def test_seed_defect_relu_with_large_outputs_is_not_saturated():
    rng = np.random.default_rng(0)
    batches = [np.maximum(0.0, rng.normal(0.0, 5.0, (64, 32))) for _ in range(5)]
    seed_ratio = np.mean([np.mean(np.abs(b) > 0.99) for b in batches])
    assert seed_ratio > 0.1  # the naive |x| > 0.99 rule would report "Saturated"
    for activation in (None, "relu", nn.ReLU()):
        monitor = _monitor_with("fc", batches, activation)
        assert monitor.diagnose() == {}
        assert monitor.summary()["fc"]["saturation"] == 0.0
        assert monitor.summary()["fc"]["activation"] == "relu"
    assert _monitor_with("fc", [b - 3.0 for b in batches], "gelu").diagnose() == {}


def test_sigmoid_and_tanh_saturation_and_their_negatives():
    rng = np.random.default_rng(0)
    x = [rng.normal(0.0, 1.0, (64, 32)) for _ in range(5)]
    sig = _monitor_with("s", [1 / (1 + np.exp(-20 * b)) for b in x])
    assert sig.summary()["s"]["activation"] == "sigmoid"
    assert sig.diagnose()["s"][0].startswith("Saturated")
    assert _monitor_with("s", [1 / (1 + np.exp(-0.5 * b)) for b in x]).diagnose() == {}
    tanh = _monitor_with("t", [np.tanh(10 * b) for b in x], nn.Tanh())
    assert tanh.diagnose()["t"][0].startswith("Saturated")
    # exact answer: a quarter of the values pinned at +-1
    pinned = np.concatenate([np.full((8, 4), 1.0), np.full((8, 12), 0.2)], axis=1)
    assert _monitor_with("p", [pinned], "tanh").summary()["p"]["saturation"] == pytest.approx(0.25)
    assert _monitor_with("t", [np.tanh(0.3 * b) for b in x], "tanh").diagnose() == {}


def test_inferred_kind_widens_when_values_leave_the_bounds():
    first = np.linspace(0.991, 0.999, 16).reshape(4, 4)  # looks like saturated sigmoid output
    later = np.linspace(1.0, 5.0, 16).reshape(4, 4)
    monitor = _monitor_with("x", [first, later])
    assert monitor.summary()["x"]["activation"] == "relu"
    assert monitor.diagnose() == {}
    assert infer_kind(0.1, 0.9, False) == "sigmoid"
    assert infer_kind(0.0, 0.9, True) == "relu"
    assert infer_kind(-0.9, 0.9, False) == "tanh"
    assert infer_kind(-3.0, 2.0, False) == "unbounded"
    with pytest.raises(ValueError, match="unknown activation"):
        activation_kind("sigmoidd")


def test_dead_units_are_units_that_never_fire_not_zero_ratio():
    rng = np.random.default_rng(0)
    # Half the values are zero at any moment, yet every unit fires for some inputs: healthy.
    busy = [np.maximum(0.0, rng.normal(-0.2, 1.0, (64, 40))) for _ in range(5)]
    assert np.mean([np.mean(b == 0) for b in busy]) > 0.5  # a zero-ratio test would say "Dead"
    assert _monitor_with("fc", busy).diagnose() == {}
    # 30 of 40 units never fire: exactly 75% dead.
    dead = [b.copy() for b in busy]
    for b in dead:
        b[:, :30] = 0.0
    monitor = _monitor_with("fc", dead)
    assert monitor.summary()["fc"]["dead_fraction"] == pytest.approx(0.75)
    assert monitor.diagnose()["fc"][0].startswith("Dead: 75%")


def test_dead_units_over_the_window_and_conv_channels():
    alive_once = np.zeros((8, 10))
    alive_once[0, :] = 1.0
    silent = np.zeros((8, 10))
    silent[:, :2] = 1.0
    monitor = _monitor_with("fc", [alive_once] + [silent] * 3, window_size=5)
    assert monitor.summary()["fc"]["dead_fraction"] == 0.0  # all fired within the window
    monitor = _monitor_with("fc", [alive_once] + [silent] * 5, window_size=5)
    # the firing batch left the window
    assert monitor.summary()["fc"]["dead_fraction"] == pytest.approx(0.8)

    conv = np.abs(np.random.default_rng(0).normal(size=(4, 6, 5, 5)))
    conv[:, 1:4] = 0.0  # channels 1..3 dead
    assert _monitor_with("conv", [conv], "relu").summary()["conv"][
        "dead_fraction"
    ] == pytest.approx(0.5)


def test_vanishing_and_exploding_activations_and_negative():
    rng = np.random.default_rng(0)
    normal = [rng.normal(0.0, 1.0, (32, 16)) for _ in range(3)]
    assert _monitor_with("n", normal, "linear").diagnose() == {}
    assert (
        _monitor_with("v", [1e-5 * b for b in normal], "linear")
        .diagnose()["v"][0]
        .startswith("Vanishing")
    )
    assert (
        _monitor_with("e", [1e5 * b for b in normal], "linear")
        .diagnose()["e"][0]
        .startswith("Exploding")
    )
    with_nan = normal[0].copy()
    with_nan[0, 0] = np.nan
    assert "non-finite" in _monitor_with("x", [with_nan], "linear").diagnose()["x"][0]


def test_activation_monitor_same_for_tensors_and_arrays():
    rng = np.random.default_rng(0)
    batches = [np.maximum(0.0, rng.normal(0.0, 1.0, (16, 8))).astype(np.float32) for _ in range(3)]
    for b in batches:
        b[:, :5] = 0.0
    a = _monitor_with("fc", batches)
    t = _monitor_with("fc", [torch.from_numpy(b) for b in batches])
    assert a.summary() == t.summary()
    assert a.diagnose() == t.diagnose() != {}


def test_detect_dead_neurons_known_counts_and_negative():
    acts = np.ones((200, 10))
    acts[:, :3] = 0.0
    acts[:, 3] = 0.0
    acts[0, 3] = (
        1.0  # fires for one sample out of 200: alive (a mean test, 0.005 < 0.01, would call it dead)
    )
    assert detect_dead_neurons(acts, threshold=0.01) == (3, 0.3)
    assert detect_dead_neurons(torch.from_numpy(acts), threshold=0.01) == (3, 0.3)
    assert detect_dead_neurons(np.ones((5, 4))) == (0, 0.0)
    conv = np.ones((2, 3, 2, 2))
    conv[:, 0] = 0.0
    assert detect_dead_neurons(conv) == (4, 4 / 12)


# ---------------------------------------------------------------- check_initialization


def test_seed_defect_fan_in_of_a_torch_linear_weight():
    torch.manual_seed(0)
    layer = nn.Linear(784, 10)  # weight shape (10, 784): fan-in is 784
    w = layer.weight.detach().numpy()
    seed_expected = math.sqrt(2.0 / w.shape[0])
    assert w.std() < 0.1 * seed_expected  # fan-in = shape[0] calls torch's default init "too_small"
    result = check_initialization([layer.weight])
    entry = result["layers"][0]
    assert (entry["fan_in"], entry["fan_out"]) == (784, 10)
    assert entry["he_std"] == pytest.approx(math.sqrt(2.0 / 784))
    assert entry["xavier_std"] == pytest.approx(math.sqrt(2.0 / 794))
    assert entry["status"] == "ok" and result["all_ok"] is True


def test_check_initialization_conv_fan_in_and_module_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4))
    result = check_initialization(model)
    assert [r["layer"] for r in result["layers"]] == ["0.weight", "3.weight"]
    assert (result["layers"][0]["fan_in"], result["layers"][0]["fan_out"]) == (27, 144)
    assert result["all_ok"] is True and result["issues"] == []


def test_check_initialization_too_small_too_large_and_biases():
    rng = np.random.default_rng(0)
    fan_in = 256
    he = math.sqrt(2.0 / fan_in)
    weights = [
        rng.normal(0, he, (128, fan_in)),
        rng.normal(0, he * 1e-3, (128, fan_in)),
        rng.normal(0, he * 100, (128, fan_in)),
        np.zeros(128),
    ]
    result = check_initialization(weights)
    assert [r["status"] for r in result["layers"]] == [
        "ok",
        "too_small",
        "too_large",
        "not_applicable",
    ]
    assert result["all_ok"] is False
    assert [i["code"] for i in result["issues"]] == ["BAD_INITIALIZATION"] * 2
    assert [i["layer"] for i in result["issues"]] == ["1", "2"]
    assert check_initialization([weights[0], weights[3]])["all_ok"] is True  # a zero bias is fine


def test_check_initialization_in_out_layout_and_tensor_equals_array():
    rng = np.random.default_rng(0)
    # x @ W, as a NumPy MLP lays out its weights
    w_in_out = rng.normal(0, math.sqrt(2.0 / 784), (784, 10))
    assert check_initialization([w_in_out], layout="in_out")["layers"][0]["fan_in"] == 784
    assert check_initialization([w_in_out])["layers"][0]["fan_in"] == 10
    a = check_initialization([w_in_out.T])
    t = check_initialization([torch.from_numpy(w_in_out.T)])
    assert a == t


# ---------------------------------------------------------------- simulate_training + diagnose

EXPECTED = {
    "healthy": set(),
    "lr_high": {"LOSS_EXPLOSION", "NONFINITE_GRADIENTS", "EXPLODING_GRADIENTS"},
    "lr_low": {"SLOW_CONVERGENCE"},
    "overfit": {"OVERFITTING"},
    "plateau": {"LOSS_PLATEAU"},
    "oscillation": {"LOSS_OSCILLATION"},
}


@pytest.mark.parametrize("steps", [300, 1000])
@pytest.mark.parametrize("issue", ISSUES)
def test_diagnose_finds_each_simulated_issue_across_seeds(issue, steps):
    for seed in range(5):
        diagnosis = simulate_training(issue, steps=steps, seed=seed).diagnose()
        assert set(diagnosis["issues"]) == EXPECTED[issue], (
            issue,
            steps,
            seed,
            diagnosis["details"],
        )
        if issue == "healthy":
            assert diagnosis["status"] == "healthy"
        else:
            primary = "LOSS_EXPLOSION" if issue == "lr_high" else next(iter(EXPECTED[issue]))
            assert diagnosis["issues"][0] == primary


def test_simulated_curves_have_the_documented_shape():
    high = simulate_training("lr_high", steps=500, seed=0)
    assert any(math.isinf(v) for v in high.loss) and math.isnan(high.loss[-1])
    over = simulate_training("overfit", steps=500, seed=0)
    assert over.val_step == list(range(24, 500, 25))
    assert over.loss[-1] < over.loss[0] / 10 and over.val_loss[-1] > min(over.val_loss) * 1.5
    assert simulate_training("plateau", seed=3).loss == simulate_training("plateau", seed=3).loss
    assert simulate_training("plateau", seed=3).loss != simulate_training("plateau", seed=4).loss


def test_simulate_unknown_issue_lists_the_choices():
    with pytest.raises(ValueError, match="healthy, lr_high, lr_low, overfit, plateau, oscillation"):
        simulate_training("exploding")


# ---------------------------------------------------------------- debugger folds activation findings in


def test_debugger_report_includes_dead_units_and_healthy_negative():
    rng = np.random.default_rng(0)
    sick, well = TrainingDebugger(), TrainingDebugger()
    for step in range(20):
        act = np.maximum(0.0, rng.normal(0.0, 1.0, (32, 10)))
        grads = [rng.normal(0.0, 0.1, (10, 10))]
        well.step(step, 1.0 / (step + 1), grads, 0.01, activations={"fc1": act})
        act = act.copy()
        act[:, :8] = 0.0
        sick.step(step, 1.0 / (step + 1), grads, 0.01, activations={"fc1": act})
    report = sick.report()
    assert report["issues"] == ["DEAD_NEURONS"] and report["status"] == "warning"
    assert report["activation_issues"]["fc1"][0].startswith("Dead: 80%")
    assert well.report()["issues"] == [] and well.report()["status"] == "healthy"


# ---------------------------------------------------------------- properties on arbitrary inputs

finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(finite_or_not, min_size=0, max_size=20), min_size=1, max_size=4))
def test_gradient_stats_match_numpy_over_the_finite_entries(chunks):
    arrays = [np.asarray(c, dtype=np.float32) for c in chunks]
    stats = GradientStats.from_gradients(arrays)
    flat = np.concatenate(arrays).astype(np.float64)
    finite = flat[np.isfinite(flat)]
    assert stats.total_elements == flat.size
    assert (stats.num_nans, stats.num_infs) == (
        int(np.isnan(flat).sum()),
        int(np.isinf(flat).sum()),
    )
    assert stats.norm == pytest.approx(
        float(np.linalg.norm(finite)) if finite.size else 0.0, rel=1e-9
    )
    nonzero = np.abs(finite[finite != 0])
    assert stats.min_val == (float(nonzero.min()) if nonzero.size else 0.0)
    assert GradientStats.from_gradients([torch.from_numpy(a) for a in arrays]) == stats


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=30), st.floats(1e-3, 1e3))
def test_clipped_norm_never_exceeds_max_norm(values, max_norm):
    clipped, norm = clip_gradients([np.asarray(values, dtype=np.float64)], max_norm=max_norm)
    assert norm == pytest.approx(float(np.linalg.norm(values)), rel=1e-9, abs=1e-12)
    assert float(np.linalg.norm(clipped[0])) <= max_norm * (1 + 1e-9) or norm <= max_norm
