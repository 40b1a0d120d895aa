"""The cause rules that read the run's state (weight decay, dropout, input scale, momentum), the rules that
judge symptoms against the run (batch noise, ln(k), accuracy), and live findings kept unless resolved:
each on simulated series with a negative case, and the state read from a real torch loop."""

from __future__ import annotations

import math

import numpy as np
import torch
from helpers.series import converging_run
from torch import nn

from diag import TrainingDebugger
from diag.advice import render_all
from diag.codes import Issue, advice_of
from diag.diagnosis import diagnose, keep_unresolved
from diag.run_state import InputProbe, max_dropout, optimizer_settings
from diag.series import RunSeries

LN10 = math.log(10)


def run(n: int = 40, seed: int = 0) -> RunSeries:
    return converging_run(n, seed)


def stalled(s: RunSeries, level: float = 1.6) -> RunSeries:
    """The same run whose training loss stops at ``level`` (x ln(10) ~ 0.7) with accuracy ~0.5."""
    n, epochs = len(s.loss), len(s.epoch_step)
    s.loss = list(np.linspace(LN10, level, 6)) + [level] * (n - 6)
    s.epoch_train_loss = [level] * epochs
    s.epoch_val_loss = [level * 0.98] * epochs
    s.epoch_train_acc = [0.5] * epochs
    s.epoch_val_acc = [0.5] * epochs
    return s


def by_code(s: RunSeries) -> dict[str, Issue]:
    return {i.code: i for i in diagnose(s)}


# -- weight decay ------------------------------------------------------------------------------------------
def test_decoupled_decay_that_shrinks_the_weights_of_a_stalled_run_is_too_much_regularization():
    s = stalled(run())
    s.weight_decay, s.lr = 10.0, [2e-3] * len(s.step)  # 2e-2 of every weight per step
    s.weight_norm = [10.0, 9.0, 7.0, 5.0, 4.0, 3.5, 3.2, 3.0]
    found = by_code(s)
    issue = found["TOO_MUCH_REGULARIZATION"]
    assert issue.first_step == s.layer_step[2]  # where the norm first fell below 0.8 of its start
    assert (
        "2.0e-02 of every weight per step" in issue.evidence
        and "fell from 10 to 3" in issue.evidence
    )
    # the symptoms it makes are not listed beside it
    assert not {"UNDERFITTING", "LOSS_PLATEAU", "SLOW_CONVERGENCE"} & found.keys()


def test_strong_decay_the_data_holds_up_or_a_fitted_run_or_ordinary_decay_is_not_flagged():
    held = stalled(run())
    held.weight_decay, held.lr = 10.0, [2e-3] * len(held.step)  # norm steady at 10
    assert "TOO_MUCH_REGULARIZATION" not in by_code(held)
    fitted = run()
    fitted.weight_decay, fitted.lr = 10.0, [2e-3] * len(fitted.step)
    fitted.weight_norm = [10.0, 5.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    fitted.loss = list(np.linspace(LN10, 0.1, len(fitted.loss)))  # fits all the same
    assert "TOO_MUCH_REGULARIZATION" not in by_code(fitted)
    ordinary = stalled(run())
    ordinary.weight_decay, ordinary.lr = 0.05, [3e-3] * len(ordinary.step)  # 1.5e-4 per step
    ordinary.weight_norm = [10.0, 5.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert "TOO_MUCH_REGULARIZATION" not in by_code(ordinary)


# -- dropout ----------------------------------------------------------------------------------------------
def test_dropout_that_keeps_training_loss_far_above_validation_is_too_much_regularization():
    s = stalled(run(), level=2.25)
    s.dropout = 0.9
    s.epoch_train_loss = [3.3, 2.9] + [2.4] * (len(s.epoch_step) - 2)  # with dropout on
    s.epoch_val_loss = [2.3] * len(s.epoch_step)  # without it
    s.epoch_train_acc = s.epoch_val_acc = [0.11] * len(s.epoch_step)
    issue = by_code(s)["TOO_MUCH_REGULARIZATION"]
    assert issue.first_step == s.epoch_step[0] and issue.severity == "critical"
    assert issue.evidence.startswith("dropout 0.9:")
    s.dropout = 0.5  # the healthy range: the same curves are something else's doing
    assert "TOO_MUCH_REGULARIZATION" not in by_code(s)


def test_dropout_near_one_that_blows_up_is_named_as_the_cause():
    s = run()
    s.dropout = 0.95
    s.loss[4:] = [1e5] + [math.nan] * (len(s.loss) - 5)
    found = by_code(s)
    assert found["TOO_MUCH_REGULARIZATION"].first_step == s.step[4]
    assert "by 20 in training" in found["TOO_MUCH_REGULARIZATION"].evidence
    assert "LOSS_EXPLOSION" in found  # the blow-up itself stays reported
    s.dropout = 0.3
    assert "TOO_MUCH_REGULARIZATION" not in by_code(s)


# -- inputs -----------------------------------------------------------------------------------------------
def test_inputs_on_the_wrong_scale_are_named_and_explain_the_first_loss():
    s = run()
    s.input_mean, s.input_std = -60.0, 37.0  # (x - 0.9) / 0.01 on pixels in [0, 1]
    s.initial_loss = 4 * LN10
    found = by_code(s)
    assert "mean -60 and std 37" in found["INPUTS_NOT_NORMALIZED"].evidence
    assert "BAD_INITIALIZATION" not in found  # the first loss far above ln(10) is the inputs' doing
    for mean, std in ((0.0, 1.0), (0.13, 0.31)):  # normalised; raw pixels in [0, 1]
        s.input_mean, s.input_std, s.initial_loss = mean, std, None
        assert "INPUTS_NOT_NORMALIZED" not in by_code(s)


# -- momentum ---------------------------------------------------------------------------------------------
def test_momentum_near_one_with_a_loss_that_climbs_back_is_named_above_its_oscillation():
    s = run()
    s.momentum = 0.999
    s.loss = list(np.linspace(LN10, 0.5, 10)) + [0.9, 1.6, 1.8, 1.2, 2.0, 1.4] * 5
    s.epoch_train_loss = [1.0] * len(s.epoch_step)
    found = by_code(s)
    assert "MOMENTUM_TOO_HIGH" in found and "LOSS_OSCILLATION" not in found
    assert "momentum 0.999" in found["MOMENTUM_TOO_HIGH"].evidence
    s.momentum = 0.9  # the same curve at an ordinary momentum is the LR's oscillation
    found = by_code(s)
    assert "LOSS_OSCILLATION" in found and "MOMENTUM_TOO_HIGH" not in found


def test_momentum_near_one_on_a_run_that_converges_is_not_flagged():
    s = run()
    s.momentum = 0.995
    assert by_code(s) == {}


# -- symptoms judged against the run ----------------------------------------------------------------------
def test_a_spike_to_several_times_ln_k_is_an_explosion():
    s = run()
    s.loss[3] = (
        5 * LN10
    )  # x5 ln(10) after a start at ln(10): under 10x the start, a blow-up all the same
    issue = by_code(s)["LOSS_EXPLOSION"]
    assert issue.first_step == s.step[3] and "x ln(10)" in issue.evidence
    s.loss[3] = 2 * LN10
    assert "LOSS_EXPLOSION" not in by_code(s)


def test_a_validation_loss_far_above_ln_k_while_training_is_unfitted_is_an_explosion():
    s = run()
    s.epoch_val_loss[0] = 44 * LN10
    issue = by_code(s)["LOSS_EXPLOSION"]
    assert issue.first_step == s.epoch_step[0] and "validation loss reached" in issue.evidence


def test_chance_evidence_agrees_with_the_accuracy_it_quotes():
    s = run()
    epochs = len(s.epoch_step)
    s.loss = [LN10] * len(s.loss)
    s.epoch_val_loss = [LN10 * 0.99] * epochs  # within 5% of ln(10)
    s.epoch_val_acc = [0.615] * epochs
    assert "STUCK_AT_CHANCE" not in by_code(s)
    s.epoch_val_acc = [0.12] * epochs
    issue = by_code(s).get("STUCK_AT_CHANCE")
    assert issue is not None and "accuracy 0.120 vs chance 0.100" in issue.evidence


def test_validation_swinging_epoch_to_epoch_is_oscillation_not_overfitting():
    s = run()
    s.epoch_val_loss = [1.8, 0.64, 0.97, 1.37, 2.08, 0.67, 1.8, 0.42, 1.16, 1.2]
    s.epoch_val_acc = [0.42, 0.76, 0.65, 0.41, 0.35, 0.77, 0.46, 0.91, 0.74, 0.6]
    found = by_code(s)
    assert (
        "LOSS_OSCILLATION" in found
        and "validation loss jumped" in found["LOSS_OSCILLATION"].evidence
    )


def test_whole_epochs_whose_training_loss_climbs_back_twice_at_a_steady_lr_are_oscillation():
    # bench/faults.py's lr_too_high (Adam 0.03, batch 16): the epoch means climb back twice, then fall again
    s = run()
    s.batch_size = 32  # 40 steps an epoch: 1280 examples, as lr_too_high's epochs (80 steps of 16)
    s.epoch_train_loss = [1.18, 0.54, 0.446, 0.547, 0.447, 0.43, 0.345, 0.286, 0.384, 0.269]
    issue = by_code(s)["LOSS_OSCILLATION"]
    assert (
        issue.first_step == s.epoch_step[8]
        and "0.286 (epoch 8) -> 0.384 (epoch 9)" in issue.evidence
    )
    one = [1.18, 0.54, 0.446, 0.547, 0.447, 0.43, 0.345, 0.286, 0.27, 0.269]  # one climb: noise
    s.epoch_train_loss = one
    assert "LOSS_OSCILLATION" not in by_code(s)
    s.epoch_train_loss = [
        1.0,
        0.5,
        0.3,
        0.2,
        0.1,
        0.05,
        0.02,
        0.012,
        0.029,
        0.01,
    ]  # fitted: 0.01 -> 0.03
    assert "LOSS_OSCILLATION" not in by_code(s)
    s.epoch_train_loss = [1.18, 0.54, 0.446, 0.547, 0.447, 0.43, 0.345, 0.286, 0.384, 0.269]
    s.epoch_lr = [1e-3] * 3 + [2e-3] * 7  # the LR rose (warm-up): a climb the schedule made
    assert "LOSS_OSCILLATION" not in by_code(s)


def test_a_finished_run_whose_loss_still_falls_far_from_fitted_stopped_too_soon():
    # batch = the whole split: 10 epochs of one step each, the loss still falling 5% a step at the end
    s = run()
    s.epoch_step = list(range(1, 11))
    s.planned_steps = 10
    s.epoch_train_loss = [2.29, 2.24, 2.18, 2.13, 2.07, 1.99, 1.91, 1.81, 1.71, 1.6]
    s.epoch_val_loss = [v * 0.95 for v in s.epoch_train_loss]
    s.epoch_train_acc = list(np.linspace(0.12, 0.74, 10))
    s.epoch_val_acc = list(np.linspace(0.24, 0.79, 10))
    s.epoch_lr = [1e-3] * 10
    s.step, s.loss, s.lr = s.epoch_step, s.epoch_train_loss, s.epoch_lr
    issue = by_code(s)["UNDERFITTING"]
    assert issue.first_step == 10 and "still falling (1.86 -> 1.66" in issue.evidence
    # the fix its evidence names comes first, in every reader's words (not "Use a bigger model")
    assert issue.recommendations[0] == "Train longer"
    assert render_all(advice_of(issue), "runner")[0] == "Train longer (trainer.max_epochs)"
    assert Issue(**issue.to_dict()).recommendations == issue.recommendations
    s.planned_steps = 100  # still running: a loss still falling is the normal case
    assert "UNDERFITTING" not in by_code(s)
    s.planned_steps = 10
    s.epoch_train_loss = [2.29, 1.5, 1.0, 0.8, 0.7, 0.65, 0.62, 0.61, 0.605, 0.6]  # converged
    s.loss = s.epoch_train_loss
    assert "UNDERFITTING" not in by_code(s)


def test_a_training_set_memorised_after_a_blow_up_is_overfitting_not_the_blow_up_s_consequence():
    s = run()
    epochs = len(s.epoch_step)
    s.epoch_train_loss = [2.37, 1.66, 1.07, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.02]
    s.epoch_val_loss = [2.25, 13.9, 473.0, 20.0, 2.1, 1.2, 0.9, 0.7, 0.6, 0.6]
    s.epoch_train_acc = [0.12, 0.47, 0.6, 0.8, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0][:epochs]
    s.epoch_val_acc = [0.18, 0.1, 0.1, 0.5, 0.6, 0.7, 0.75, 0.8, 0.81, 0.81][:epochs]
    found = by_code(s)
    assert "LOSS_EXPLOSION" in found and "OVERFITTING" in found
    s.epoch_train_acc[-1] = 0.9  # not fitted: whatever follows the blow-up is its consequence
    assert "OVERFITTING" not in by_code(s)


def test_training_labels_fitted_no_better_than_a_guess_while_validation_is_good_are_noisy_labels():
    # 80% of the training labels replaced: training accuracy 0.27 at a loss near ln(10), validation 0.81
    s = run()
    epochs = len(s.epoch_step)
    s.epoch_train_loss = list(np.linspace(2.3, 2.12, epochs))
    s.epoch_val_loss = list(np.linspace(2.2, 1.63, epochs))
    s.epoch_train_acc = [0.1] + [0.27] * (epochs - 1)
    s.epoch_val_acc = [0.44] + [0.81] * (epochs - 1)
    issue = by_code(s)["STUCK_AT_CHANCE"]
    assert issue.severity == "warning" and "training accuracy 0.270" in issue.evidence
    assert "validation accuracy is 0.810" in issue.evidence and issue.first_step == s.epoch_step[1]
    # 20% noisy labels: training accuracy 0.8 against 0.95, its loss well below ln(10): a noise floor
    s.epoch_train_loss = list(np.linspace(2.3, 0.95, epochs))
    s.epoch_train_acc = list(np.linspace(0.3, 0.8, epochs))
    s.epoch_val_acc = list(np.linspace(0.5, 0.95, epochs))
    assert "STUCK_AT_CHANCE" not in by_code(s)


def test_one_epoch_that_ends_at_ln_k_with_validation_at_chance_is_stuck_though_it_started_high():
    # batch 2: the sampled loss jumped to 3x ln(10) early, then settled at ln(10); the single validation
    # (one epoch of 300 steps) is at chance by accuracy and loss
    s = run(n=30)
    s.loss = [2.9, 3.0, 7.9, 7.5, 6.1, 7.2, 4.0, 5.0, 4.6, 4.6, 3.7, 4.1, 3.2, 2.8, 2.2] + [
        2.33
    ] * 15
    s.epoch_step, s.epoch_lr = [300], [1e-3]
    s.epoch_train_loss, s.epoch_val_loss = [3.57], [2.389]
    s.epoch_train_acc, s.epoch_val_acc = [0.12], [0.056]
    issue = by_code(s)["STUCK_AT_CHANCE"]
    assert issue.severity == "critical" and "stays at ln(10)" in issue.evidence
    s.epoch_val_acc = [0.6]  # validation says it learned: the loss is on its way down
    s.epoch_val_loss = [1.4]
    assert "STUCK_AT_CHANCE" not in by_code(s)


def test_a_memorised_training_set_is_overfitting_even_while_validation_loss_still_falls():
    s = run()
    epochs = len(s.epoch_step)
    s.epoch_train_loss = list(np.geomspace(2.0, 0.01, epochs))
    s.epoch_val_loss = list(np.linspace(2.2, 1.0, epochs))
    s.epoch_train_acc = [0.5, 0.7, 0.9] + [1.0] * (epochs - 3)
    s.epoch_val_acc = [0.5, 0.6, 0.7] + [0.8] * (epochs - 3)
    issue = by_code(s)["OVERFITTING"]
    assert "memorised" in issue.evidence and issue.first_step == s.epoch_step[3]
    s.epoch_val_acc = [0.5, 0.6, 0.7] + [0.95] * (epochs - 3)  # a 5-point gap is a fit
    assert "OVERFITTING" not in by_code(s)


def test_lr_cut_to_nothing_early_that_left_the_loss_high_is_the_schedule():
    s = run()
    n = len(s.step)
    s.lr = [1e-2] * 8 + [1e-4] * (n - 8)  # x0.01 at a fifth of the run
    s.loss = list(np.linspace(LN10, 1.4, 8)) + [1.4] * (n - 8)
    s.epoch_train_loss = [1.4] * len(s.epoch_step)
    issue = by_code(s)["LR_DECAYED_TOO_EARLY"]
    assert issue.first_step == s.step[8] and "stayed at 1.4" in issue.evidence
    s.loss = list(np.linspace(LN10, 1.4, 8)) + list(
        np.linspace(1.4, 0.1, n - 8)
    )  # it kept learning
    s.epoch_train_loss = list(np.linspace(1.4, 0.1, len(s.epoch_step)))
    assert "LR_DECAYED_TOO_EARLY" not in by_code(s)


# -- live findings kept -----------------------------------------------------------------------------------
def test_a_critical_finding_gone_later_stays_unless_the_run_recovered():
    s = stalled(run(), level=LN10 * 0.99)
    s.epoch_val_acc = [0.2] * len(s.epoch_step)
    earlier = {
        "DEAD_NEURONS": Issue("DEAD_NEURONS", "critical", 40, "95% of the units of fc1 never fired")
    }
    kept = {i.code: i for i in keep_unresolved([], earlier, s)}
    assert kept["DEAD_NEURONS"].severity == "critical"
    assert (
        "has not recovered" in kept["DEAD_NEURONS"].evidence
        and kept["DEAD_NEURONS"].first_step == 40
    )
    well = run()  # accuracy 0.97 and a low loss at the end: resolved, and the evidence says so
    (info,) = keep_unresolved([], earlier, well)
    assert info.severity == "info" and "resolved since: validation accuracy 0.970" in info.evidence
    # a cause found since that explains it replaces it
    cause = Issue("INPUTS_NOT_NORMALIZED", "warning", 0, "mean -60")
    assert [i.code for i in keep_unresolved([cause], earlier, s)] == ["INPUTS_NOT_NORMALIZED"]


# -- the run's state read from a real loop ----------------------------------------------------------------
def test_run_state_is_read_from_the_optimizer_the_model_and_the_first_batch():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Dropout(0.85), nn.Linear(8, 2)
    )
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.999), weight_decay=0.5)
    assert optimizer_settings(adamw) == {
        "momentum": 0.95,
        "weight_decay": 0.5,
        "decoupled_weight_decay": True,
    }
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.99, weight_decay=1e-4)
    assert optimizer_settings(sgd)["momentum"] == 0.99
    assert optimizer_settings(sgd)["decoupled_weight_decay"] is False
    assert max_dropout(model) == 0.85 and max_dropout(nn.Linear(2, 2)) is None
    probe = InputProbe(model)
    x = torch.full((16, 4), 50.0) + torch.arange(4.0)
    model(x)
    model(torch.zeros(16, 4))  # only the first batch is measured
    mean, std = probe.read()
    assert mean == x.mean().item() and abs(std - x.std().item()) < 1e-5


def _loop(
    model: nn.Module, optimizer: torch.optim.Optimizer, shift: float = 0.0, scale: float = 1.0
) -> dict:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.randint(0, 4, (512,), generator=g)
    x = (centers[y] + torch.randn(512, 16, generator=g)) * scale + shift
    debugger = TrainingDebugger().watch(model, optimizer, num_classes=4)
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=g).split(16):
            model.train()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            debugger.train_step(loss)
        model.eval()
        with torch.no_grad():
            logits = model(x)
            val = nn.functional.cross_entropy(logits, y).item()
            acc = (logits.argmax(1) == y).float().mean().item()
        debugger.end_epoch(val_loss=val, val_acc=acc)
    return debugger.finish()


def _mlp(p: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 4))


def test_a_hand_loop_with_adamw_decay_30_is_told_too_much_regularization():
    model = _mlp()  # close classes: fitting them needs weights the decay does not allow
    report = _loop(
        model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=30.0), scale=0.3
    )
    assert "TOO_MUCH_REGULARIZATION" in report["issues"], report["details"]
    assert "the weight norm fell from" in report["details"][0]["evidence"]
    model = _mlp()
    report = _loop(
        model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01), scale=0.3
    )
    assert "TOO_MUCH_REGULARIZATION" not in report["issues"], report["details"]


def test_a_hand_loop_fed_inputs_at_minus_ninety_is_told_inputs_not_normalized():
    model = _mlp()
    report = _loop(model, torch.optim.SGD(model.parameters(), lr=1e-3), shift=-90.0, scale=30.0)
    assert "INPUTS_NOT_NORMALIZED" in report["issues"], report["details"]
    model = _mlp()
    report = _loop(model, torch.optim.SGD(model.parameters(), lr=1e-2))
    assert "INPUTS_NOT_NORMALIZED" not in report["issues"], report["details"]
