"""The rules engine on synthetic series where the answer is known, each with a negative case."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.series import converging_run
from torch import nn

from diag.activation_hooks import ActivationRecorder
from diag.codes import CODES, Issue, recommendations
from diag.diagnosis import diagnose
from diag.live import init_scale_ratios
from diag.series import RunSeries

LN10 = math.log(10)


def healthy(n: int = 40, seed: int = 0) -> RunSeries:
    """A converging 10-class run: loss decays from ln(10), val tracks train, weights move steadily (no
    optimizer settings or input scale recorded, a small dead share in ``act1``)."""
    return converging_run(
        n,
        seed,
        weight_norm=[],
        momentum=None,
        weight_decay=None,
        decoupled_weight_decay=None,
        input_mean=None,
        input_std=None,
        layer_dead_fraction={"act1": [0.05] * 8},
        layer_saturation={},
    )


def codes(series: RunSeries) -> set[str]:
    return {i.code for i in diagnose(series)}


@pytest.mark.parametrize("seed", range(5))
def test_healthy_series_has_no_issue(seed):
    assert codes(healthy(seed=seed)) == set()


def test_nan_loss_is_an_explosion_at_its_step():
    s = healthy()
    s.loss[12] = math.nan
    (issue,) = [i for i in diagnose(s) if i.code == "LOSS_EXPLOSION"]
    assert issue.severity == "critical" and issue.first_step == s.step[12]


def test_loss_growing_tenfold_is_an_explosion_but_a_fast_early_drop_is_not():
    s = healthy()
    s.loss[20:] = [30.0] * (len(s.loss) - 20)
    assert "LOSS_EXPLOSION" in codes(s)
    fast = RunSeries(
        step=list(range(10, 130, 10)),
        loss=[10, 0.5, 0.4, 0.35, 0.3, 0.28, 0.25, 0.2, 0.19, 0.18, 0.17, 0.16],
    )
    assert "LOSS_EXPLOSION" not in codes(fast)


def test_many_skipped_steps_are_nonfinite_gradients_a_few_fp16_startup_skips_are_not():
    s = healthy()
    s.skipped_steps = [3, 4, 5]  # GradScaler finding its scale
    assert "NONFINITE_GRADIENTS" not in codes(s)
    s.skipped_steps = [3, 4, 5, 150, 151, 152]
    s.first_nonfinite_layer = "fc1"
    (issue,) = [i for i in diagnose(s) if i.code == "NONFINITE_GRADIENTS"]
    assert issue.layer == "fc1"


def test_vanishing_gradients_from_first_to_last_layer_ratio():
    s = healthy()
    s.layer_grad_norm = {"fc1": [1e-7] * 8, "fc2": [1e-4] * 8, "fc3": [1.0] * 8}
    (issue,) = [i for i in diagnose(s) if i.code == "VANISHING_GRADIENTS"]
    assert issue.layer == "fc1" and "1.0e-07" in issue.evidence


def test_growing_gradient_norm_is_exploding():
    s = healthy()
    s.grad_norm[25:] = [1e4] * (len(s.grad_norm) - 25)
    assert "EXPLODING_GRADIENTS" in codes(s)


def test_dead_units_above_half_of_a_layer():
    s = healthy()
    s.layer_dead_fraction = {"act1": [0.1, 0.7, 0.95, 0.97, 0.97, 0.98, 0.98, 0.98]}
    (issue,) = [i for i in diagnose(s) if i.code == "DEAD_NEURONS"]
    assert issue.severity == "critical" and issue.first_step == s.layer_step[1]
    s.layer_dead_fraction = {"act1": [0.2] * 8}
    assert "DEAD_NEURONS" not in codes(s)


def test_saturation_is_reported_only_where_measured():
    s = healthy()
    s.layer_saturation = {"sig1": [0.9] * 8}
    assert "SATURATED_ACTIVATIONS" in codes(s)
    s.layer_saturation = {"sig1": [0.05] * 8}
    assert "SATURATED_ACTIVATIONS" not in codes(s)


def test_init_scale_far_from_he_is_bad_initialization():
    s = healthy()
    s.init_scale_ratio = {"fc1": 0.4, "fc2": 100.0}
    (issue,) = [i for i in diagnose(s) if i.code == "BAD_INITIALIZATION"]
    assert issue.layer == "fc2" and issue.severity == "critical"
    s.init_scale_ratio = {"fc1": 0.4, "fc2": 1.0}  # PyTorch's default init sits near 0.4x He: fine
    assert "BAD_INITIALIZATION" not in codes(s)


def test_tiny_updates_with_flat_loss_are_slow_convergence_and_no_learning():
    s = healthy()
    s.loss = [LN10 - 0.001 * i for i in range(len(s.loss))]
    s.update_ratio = [1e-8] * 8
    s.epoch_val_acc = [0.1] * len(s.epoch_val_acc)
    s.epoch_val_loss = [LN10] * len(s.epoch_val_loss)
    found = codes(s)
    assert {"SLOW_CONVERGENCE", "NO_LEARNING"} <= found
    assert "STUCK_AT_CHANCE" not in found  # explained by weights that do not move


def test_chance_level_with_moving_weights_is_stuck_at_chance():
    s = healthy()
    s.loss = [LN10 + 0.01 * math.sin(i) for i in range(len(s.loss))]
    s.epoch_val_acc = [0.1] * len(s.epoch_val_acc)
    s.epoch_val_loss = [LN10] * len(s.epoch_val_loss)
    s.epoch_train_loss = [LN10] * len(s.epoch_train_loss)
    assert "STUCK_AT_CHANCE" in codes(s) and "SLOW_CONVERGENCE" not in codes(s)


def test_swinging_loss_is_oscillation_a_noisy_descent_is_not():
    s = healthy()
    s.loss = [0.3 + (0.6 if i % 2 else 0.0) for i in range(len(s.loss))]
    s.epoch_train_loss = [0.6] * len(
        s.epoch_train_loss
    )  # the epochs' mean of that swing: no descent
    assert "LOSS_OSCILLATION" in codes(s)
    assert "LOSS_OSCILLATION" not in codes(healthy())


def test_swings_within_falling_epochs_are_step_noise():
    """The same swing while the epoch training loss keeps falling: batch noise at the scale of epochs."""
    s = healthy()
    s.loss = [0.3 + (0.6 if i % 2 else 0.0) for i in range(len(s.loss))]
    assert "LOSS_OSCILLATION" not in codes(s)


def test_swings_batch_noise_explains_are_not_oscillation():
    """Interval means of 10 steps of batch 8 vary by ~1/sqrt(80) of their level: a swing of a few of those
    is noise; the same swing with batch 512 behind each step is not."""
    s = healthy()
    rng = np.random.default_rng(0)
    s.loss = list(1.0 + 0.1 * rng.standard_normal(len(s.loss)))
    s.epoch_train_loss = [1.0] * len(s.epoch_train_loss)
    s.batch_size = 8
    assert "LOSS_OSCILLATION" not in codes(s)
    s.batch_size = 512
    assert "LOSS_OSCILLATION" in codes(s)


def test_val_rising_while_train_falls_is_overfitting():
    s = healthy()
    n = len(s.epoch_val_loss)
    s.epoch_train_loss = list(np.geomspace(1.0, 0.001, n))
    s.epoch_val_loss = [0.8, 0.6, 0.5] + [0.5 + 0.1 * i for i in range(1, n - 2)]
    s.epoch_train_acc = [1.0] * n
    s.epoch_val_acc = [0.8] * n
    (issue,) = [i for i in diagnose(s) if i.code == "OVERFITTING"]
    assert issue.first_step == s.epoch_step[5]
    assert "at epoch 3 rose to" in issue.evidence and "by epoch 6 " in issue.evidence
    s.epoch_offset = (
        4  # a live series restarted after 4 epochs (an AutoTrainer rollback) names the run's epochs
    )
    (issue,) = [i for i in diagnose(s) if i.code == "OVERFITTING"]
    assert "at epoch 7 rose to" in issue.evidence and "by epoch 10 " in issue.evidence


def test_a_model_near_chance_or_better_on_validation_is_not_overfitting():
    """A chaotic high-LR run: validation loss swings up while training loss dips, but nothing is fitted."""
    s = healthy()
    n = len(s.epoch_val_loss)
    s.epoch_train_loss = [3.2, 3.0, 4.0, 2.3] + [2.2] * (n - 4)  # at ln(10) = 2.30: at chance
    s.epoch_val_loss = [3.7, 1.7, 2.8, 3.7] + [2.8] * (n - 4)
    s.epoch_train_acc, s.epoch_val_acc = [0.15] * n, [0.2] * n
    assert "OVERFITTING" not in codes(s)
    # fitting, but validation accuracy is the higher
    s.epoch_train_loss = list(np.geomspace(1.0, 0.001, n))
    s.epoch_val_loss = [0.8, 0.6, 0.5] + [0.5 + 0.1 * i for i in range(1, n - 2)]
    s.epoch_train_acc, s.epoch_val_acc = [0.90] * n, [0.95] * n
    assert "OVERFITTING" not in codes(s)


def test_lr_cut_early_while_loss_falls_is_decayed_too_early_but_a_late_cut_is_not():
    s = healthy()
    s.lr = [1e-3] * 5 + [1e-5] * (len(s.lr) - 5)
    assert "LR_DECAYED_TOO_EARLY" in codes(s)
    s.lr = [1e-3] * 35 + [1e-4] * (len(s.lr) - 35)
    assert "LR_DECAYED_TOO_EARLY" not in codes(s)


def test_every_issue_uses_the_vocabulary_with_recommendations():
    with pytest.raises(ValueError):
        Issue("NOT_A_CODE", "warning", 0, "x")
    issue = Issue("DEAD_NEURONS", "warning", 3, "x")
    assert issue.recommendations == CODES["DEAD_NEURONS"]["recommendations"]
    documented = (Path(__file__).resolve().parents[3] / "docs" / "diagnostics.md").read_text()
    for code, entry in CODES.items():
        assert f"| `{code}` | {entry['meaning']} |" in documented
        for text in recommendations(code, "runner"):
            assert "{" not in text, (code, text)


def test_new_cause_codes_render_their_knobs_for_each_reader():
    assert recommendations("TOO_MUCH_REGULARIZATION", "runner")[0] == (
        "Lower the weight decay (optimizer.weight_decay=1e-4)"
    )
    assert "model.dropout=0.1" in recommendations("TOO_MUCH_REGULARIZATION", "runner")[1]
    assert "optimizer.momentum=0.9" in recommendations("MOMENTUM_TOO_HIGH", "runner")[0]
    assert "betas=(0.9, 0.999)" in recommendations("MOMENTUM_TOO_HIGH", "lightning")[0]
    assert recommendations("INPUTS_NOT_NORMALIZED")[0] == (
        "Normalise inputs with the training set's own mean and std (measured on the training split)"
    )


def test_activation_recorder_counts_dead_relu_units_and_ignores_relu_saturation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Sigmoid())
    with torch.no_grad():
        model[0].bias[3:] = 5.0  # the other three always fire
        model[0].bias[:3] = -100.0  # three of six units can never fire
        model[2].weight.mul_(100)  # push the sigmoid to its bounds
    rec = ActivationRecorder(model)
    rec.attach()
    model(torch.randn(64, 4))
    stats = rec.collect()
    rec.detach()
    # each activation under the weight layer it follows: the ReLU at "1" is "0", the sigmoid at "3" is "2"
    assert stats["0"]["dead_fraction"] == pytest.approx(0.5)
    assert "saturation" not in stats["0"]  # ReLU is unbounded: no saturation measure
    assert stats["2"]["saturation"] > 0.5
    assert not rec._handles  # detached: no cost on later forwards


def test_init_scale_ratio_uses_fan_in_of_torch_layouts():
    lin = nn.Linear(400, 10)  # weight (out=10, in=400): fan-in is 400, not 10
    nn.init.kaiming_normal_(lin.weight)
    ratios = init_scale_ratios({"lin": lin.weight})
    assert ratios["lin"] == pytest.approx(1.0, rel=0.1)


def test_a_reset_live_series_counts_the_epochs_before_it():
    from diag.live import DiagnosticsHook

    hook = DiagnosticsHook()
    hook.series.epoch_step = [10, 20, 30]
    hook.reset(35)
    assert hook.series.epoch_offset == 3 and hook.series.epoch_step == []
    hook.series.epoch_step = [40, 50]
    hook.reset(55)
    assert hook.series.epoch_offset == 5


def test_concat_joins_segments_and_keeps_layers_aligned_with_their_steps():
    a = RunSeries(
        num_classes=10,
        step=[10, 20],
        loss=[2.3, 2.0],
        epoch_step=[20],
        epoch_val_loss=[2.1],
        layer_step=[10, 20],
        layer_grad_norm={"fc1": [1.0, 1.1], "fc2": [2.0, 2.1]},
        layer_dead_fraction={"act1": [0.5]},
        first_nonfinite_step=15,
    )
    b = RunSeries(
        num_classes=10,
        step=[30],
        loss=[1.5],
        epoch_step=[30],
        epoch_val_loss=[1.6],
        epoch_offset=1,
        layer_step=[30],
        layer_grad_norm={"fc2": [3.0], "fc1": [3.1]},
        layer_dead_fraction={},
    )
    c = RunSeries.concat([a, b])
    assert c.step == [10, 20, 30] and c.loss == [2.3, 2.0, 1.5] and c.epoch_val_loss == [2.1, 1.6]
    # the model's layer order, as the heat map shows it
    assert list(c.layer_grad_norm) == [
        "fc1",
        "fc2",
    ]
    assert c.layer_grad_norm == {"fc1": [1.0, 1.1, 3.1], "fc2": [2.0, 2.1, 3.0]}
    dead = c.layer_dead_fraction["act1"]
    assert (
        dead[0] == 0.5
        and math.isnan(dead[1])
        and math.isnan(dead[2])
        and len(dead) == len(c.layer_step)
    )
    assert c.first_nonfinite_step == 15 and c.num_classes == 10 and c.epoch_offset == 0
    assert RunSeries.concat([b]) is b


def test_a_reset_hook_keeps_the_earlier_segment_for_the_figure_and_checkpoints(tmp_path):
    from diag.live import DiagnosticsHook
    from diag.summary_plot import plot_summary

    hook = DiagnosticsHook()
    hook.series = RunSeries(num_classes=10, step=[10, 20], loss=[2.3, 40.0], lr=[1.0, 1.0])
    hook.reset(20)
    hook.series.step, hook.series.loss, hook.series.lr = [30, 40], [1.0, 0.5], [0.1, 0.1]
    restored = DiagnosticsHook()
    restored.load_state_dict(hook.state_dict())
    whole = RunSeries.concat([*restored._past, restored.series])
    assert whole.step == [10, 20, 30, 40] and whole.loss == [2.3, 40.0, 1.0, 0.5]
    out = plot_summary(
        whole, tmp_path / "summary.png", annotations=[(20, "rollback"), (40, "restore_best")]
    )
    assert out.stat().st_size > 10_000


def _oscillating_reference(loss: np.ndarray, scale: float, w: int = 8) -> list[bool]:
    """The rule as first written: one window at a time."""
    out = []
    for end in range(w, loss.size + 1):
        win = loss[end - w : end]
        amplitude = (win.max() - win.min()) / scale
        trend = (np.mean(win[-(w // 4) :]) - np.mean(win[: w // 4])) / max(
            win.max() - win.min(), 1e-12
        )
        moves = np.diff(win)
        big = moves[np.abs(moves) > 0.25 * (win.max() - win.min())]
        reversals = int(np.sum(np.sign(big[1:]) != np.sign(big[:-1]))) if big.size > 1 else 0
        spike = (
            win[int(np.argmax(win)) :].size > 1
            and win.max() > 3 * win[: int(np.argmax(win)) + 1].min()
        )
        out.append(
            bool(
                amplitude > 0.1
                and trend > -0.5
                and win.min() < 0.9 * scale
                and (reversals >= 2 or (spike and amplitude > 0.15))
            )
        )
    return out


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_oscillation_windows_equal_the_one_window_at_a_time_rule(seed):
    from diag.diagnosis import oscillating_windows

    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    kind = seed % 4
    if kind == 0:  # noisy descent
        loss = LN10 * np.exp(-np.arange(n) / 50) + rng.normal(0, 0.05, n)
    elif kind == 1:  # swings
        loss = 1.2 + rng.choice([-0.6, 0.6], n) + rng.normal(0, 0.05, n)
    elif kind == 2:  # spikes on a plateau, plateaus with repeated values
        loss = np.round(np.full(n, 0.5) + rng.normal(0, 0.02, n), 2)
        loss[rng.integers(0, n, max(1, n // 20))] *= 5
    else:
        loss = np.abs(rng.normal(1.0, 0.8, n))
    loss = np.abs(loss) + 1e-3
    got = oscillating_windows(loss, LN10)
    assert got.tolist() == _oscillating_reference(loss, LN10)
    assert kind != 1 or got.any()


def test_long_runs_are_diagnosed_at_most_once_per_gap_share_of_the_steps_so_far():
    from diag.hooks import FitState
    from diag.live import DiagnosticsHook

    hook = DiagnosticsHook(diagnose_gap=0.02)
    hook.series = healthy()
    state = FitState(model=nn.Linear(2, 2))
    ran = []
    for step in (50, 100, 1000, 1010, 1019, 1020, 1030, 1041):
        state.step = step
        hook._diagnose(state, "step")
        ran.append(hook._diagnosed_at["step"] == step)
    # after 1000: 2% of 1020 is 20.4, etc.
    assert ran == [
        True,
        True,
        True,
        False,
        False,
        False,
        True,
        False,
    ]
    hook._diagnose(state, "epoch")  # an epoch end brings new evidence: its own clock
    assert hook._diagnosed_at["epoch"] == 1041
    state.issues = None
    hook._diagnose(state, "final")  # the report at the end is always current
    assert state.issues is not None


def test_series_to_dict_equals_asdict_is_a_copy_and_loads_with_weights_only(tmp_path):
    import json
    from dataclasses import asdict

    # host floats, as a live run has
    s = RunSeries(**json.loads(json.dumps(asdict(healthy()), default=float)))
    s.init_scale_ratio = {"fc1": 1.1}
    d = s.to_dict()
    assert d == asdict(s)
    d["loss"].append(99.0)
    d["layer_grad_norm"]["fc1"].append(99.0)
    assert s.loss[-1] != 99.0 and s.layer_grad_norm["fc1"][-1] != 99.0
    torch.save({"series": s.to_dict()}, tmp_path / "c.pt")
    back = RunSeries(**torch.load(tmp_path / "c.pt", weights_only=True)["series"])
    assert back == s


@pytest.mark.parametrize("layer_steps", [[25], [25, 50, 75]])
def test_summary_heat_map_of_a_short_run_draws_without_warnings(tmp_path, layer_steps):
    """A run with one per-layer sample (two epochs of digits) must not set identical x limits (a warning)."""
    import warnings

    from diag.summary_plot import plot_summary

    k = len(layer_steps)
    series = RunSeries(
        num_classes=10,
        step=[10, 20, 30],
        loss=[2.3, 2.0, 1.8],
        lr=[1e-3] * 3,
        grad_norm=[1.0] * 3,
        layer_step=layer_steps,
        layer_grad_norm={"fc1": [0.5] * k, "fc2": [1.5] * k},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_summary(series, tmp_path / "summary.png")
    assert out.stat().st_size > 10_000


def test_summary_heat_map_draws_a_zero_gradient_black_not_blank_like_a_missing_sample(tmp_path):
    """A layer whose gradient is exactly 0 (no gradient reaches it) is a finding, not a gap: the heat map used
    to draw it blank, as if it were NaN/Inf."""
    import matplotlib.image as mpimg

    from diag.summary_plot import plot_summary

    def black_pixels(value):
        series = RunSeries(
            num_classes=10,
            step=[10, 20, 30],
            loss=[2.3, 2.0, 1.8],
            lr=[1e-3] * 3,
            grad_norm=[1.0] * 3,
            layer_step=[10, 20, 30],
            layer_grad_norm={"fc1": [0.5, value, 0.4], "fc2": [1.5, 1.2, 1.1]},
        )
        rgb = mpimg.imread(plot_summary(series, tmp_path / f"summary_{value}.png"))[..., :3]
        return int((rgb.sum(axis=-1) == 0).sum())

    # one cell of the heat map, at least 1000 pixels
    assert black_pixels(0.0) > black_pixels(None) + 1000


def _at_chance(s: RunSeries) -> RunSeries:
    s.loss = [LN10 + 0.01 * math.sin(i) for i in range(len(s.loss))]
    s.epoch_val_acc = [0.1] * len(s.epoch_val_acc)
    s.epoch_val_loss = [LN10] * len(s.epoch_val_loss)
    s.epoch_train_loss = [LN10] * len(s.epoch_train_loss)
    return s


def test_a_cause_is_as_severe_as_the_chance_level_run_it_explains():
    """Six sigmoid layers: a first/last gradient ratio that alone is a warning, and the run never leaves chance."""
    s = healthy()
    s.layer_grad_norm = {"fc1": [1e-4] * 8, "fc2": [1e-2] * 8, "fc3": [1.0] * 8}
    (alone,) = [i for i in diagnose(s) if i.code == "VANISHING_GRADIENTS"]
    assert alone.severity == "warning" and "STUCK_AT_CHANCE" not in alone.evidence
    found = {i.code: i for i in diagnose(_at_chance(s))}
    assert "STUCK_AT_CHANCE" not in found  # explained, so not listed on its own
    assert found["VANISHING_GRADIENTS"].severity == "critical"
    assert "it explains STUCK_AT_CHANCE (critical)" in found["VANISHING_GRADIENTS"].evidence


def test_an_info_level_cause_is_not_raised_by_what_it_could_explain():
    from diag.diagnosis import _inherit_severity

    cause = Issue("OVERFITTING", "info", 40, "val loss up 5%")
    _inherit_severity(cause, Issue("LOSS_PLATEAU", "warning", 50, "flat"))
    assert cause.severity == "info" and cause.evidence == "val loss up 5%"


def test_weights_stilled_by_a_schedule_are_not_no_learning_a_tiny_constant_lr_is():
    """A plateau scheduler cutting the LR 10x every few epochs after the model converged (as after a restore_lr)."""
    s = healthy()
    n, e = len(s.step), len(s.epoch_step)
    s.loss = [0.12 + 0.005 * math.sin(i) for i in range(n)]  # a segment that starts converged
    s.epoch_train_loss, s.epoch_val_loss = [0.1] * e, [0.12] * e
    s.epoch_train_acc, s.epoch_val_acc = [0.98] * e, [0.96] * e
    s.lr = [1e-3 if i < 8 else 1e-3 * 0.1 ** ((i - 5) // 3) for i in range(n)]
    s.update_ratio = [1e-3 * lr / 1e-3 for lr in np.interp(s.layer_step, s.step, s.lr)]
    assert np.median(s.update_ratio) < 1e-6  # most samples come after the cuts
    assert "NO_LEARNING" not in codes(s) and "LR_DECAYED_TOO_EARLY" not in codes(s)
    s.lr = [1e-9] * len(s.step)  # the same tiny steps with no schedule behind them
    s.update_ratio = [1e-8] * 8
    assert "NO_LEARNING" in codes(s)


def test_a_loss_within_5pct_of_ln_k_is_stuck_at_chance_whatever_the_accuracy():
    """Five sigmoid layers: val loss 0.994 ln 10 after 20 epochs, accuracy 0.18 from a few lucky argmaxes."""
    s = _at_chance(healthy())
    s.epoch_val_acc = [0.1] * (len(s.epoch_val_acc) - 2) + [0.18, 0.18]
    s.epoch_val_loss = [0.994 * LN10] * len(s.epoch_val_loss)
    assert "STUCK_AT_CHANCE" in codes(s)
    s.epoch_val_loss = [1.8 * LN10] * len(s.epoch_val_loss)  # confidently wrong is not uniform
    assert "STUCK_AT_CHANCE" not in codes(s)


def test_weights_barely_moving_with_a_flat_loss_is_slow_but_not_during_a_warmup():
    """An 8-layer tanh MLP under SGD 0.01: 3.7e-4 of the weights per step, loss at ln 10 for a quarter of the run."""
    s = healthy()
    n = len(s.step)
    s.loss = [LN10 - 0.001 * i for i in range(n)]
    s.update_ratio = [3.7e-4] * 8
    found = codes(s)
    assert "SLOW_CONVERGENCE" in found
    # a warmup from 1e-5 to 1e-3: steps that would be a healthy 5e-3 at the peak LR, smaller before it
    s.lr = list(np.geomspace(1e-5, 1e-3, n))
    s.update_ratio = [5e-3 * lr / 1e-3 for lr in np.interp(s.layer_step, s.step, s.lr)]
    assert np.median(s.update_ratio) < 1e-3 and "SLOW_CONVERGENCE" not in codes(s)


def test_a_first_loss_far_above_ln_k_is_bad_initialization():
    s = healthy()
    s.initial_loss = 7.1
    (issue,) = [i for i in diagnose(s) if i.code == "BAD_INITIALIZATION"]
    assert issue.severity == "warning" and "3.1x ln(10)" in issue.evidence
    s.initial_loss = 2.35
    assert "BAD_INITIALIZATION" not in codes(s)


def test_a_run_that_ends_still_learning_far_from_fitting_is_underfitting_but_not_mid_run():
    """8 tanh layers under SGD 0.01: the loss sat at ln 10 for a quarter of the run, was still falling fast when the
    cosine schedule ran out, and training accuracy ended at 0.55."""
    s = healthy()
    e = len(s.epoch_step)
    s.epoch_train_loss = list(np.linspace(LN10, 1.3, e))
    s.epoch_val_loss = [x * 1.02 for x in s.epoch_train_loss]
    s.epoch_train_acc = list(np.linspace(0.1, 0.55, e))
    s.epoch_val_acc = list(np.linspace(0.1, 0.51, e))
    s.planned_steps = s.epoch_step[-1]
    (issue,) = [i for i in diagnose(s) if i.code == "UNDERFITTING"]
    assert "still learning" in issue.evidence and issue.severity == "warning"
    s.planned_steps = 2 * s.epoch_step[-1]  # the same numbers halfway through a longer run
    assert "UNDERFITTING" not in codes(s)


@pytest.mark.parametrize("val_acc, plateau", [(0.95, False), (0.70, True)])
def test_a_loss_floor_set_by_noisy_training_labels_is_not_a_plateau(val_acc, plateau):
    """Training loss flat at a high level after early progress: a stalled optimizer, unless validation
    accuracy sits above training accuracy (the training labels are noisier: the floor is the data's)."""
    s = healthy(n=60)
    n = len(s.loss)
    s.loss = [LN10 * 0.5 if i < n // 3 else 1.2 for i in range(n)]
    s.loss[0] = s.loss[1] = s.loss[2] = LN10
    epochs = len(s.epoch_step)
    s.epoch_train_acc = [0.78] * epochs
    s.epoch_val_acc = [val_acc] * epochs
    found = {i.code for i in diagnose(s)}
    assert ("LOSS_PLATEAU" in found) is plateau, found


def test_a_conv_channel_is_dead_only_if_no_example_and_no_position_fired():
    """The recorder's dead fraction of a conv ReLU, against (out > 0).any() over batch and positions."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.bias[:3] = -100.0  # three channels never fire
        conv.bias[3] = -1.5  # one fires at a few positions of a few examples
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(16, 3, 12, 12)
    rec = ActivationRecorder(model)
    rec.attach()
    out = model(x)
    stats = rec.collect()
    rec.detach()
    fired = (out > 0).flatten(2).any(2).any(0)
    assert (
        0 < int((out[:, 3] > 0).sum()) < out[:, 3].numel() // 10
    )  # channel 3: rarely, but it fires
    assert stats["0"]["dead_fraction"] == pytest.approx(1.0 - fired.float().mean().item()) == 3 / 8
