"""Seed 6's misses of issue 21, each by its mechanism, on the real policy with real FitState objects:

- ordinary overfitting (a loss that swings back, or a fall without a train-validation gap) is not changed
  mid-run; a sustained, costly one is regularised (:mod:`runner.autotrainer.overfit_evidence`);
- early stopping's best weights are tested only when the diagnosis at the end still names overfitting,
  or when the policy repaired the run and it ends on a swing;
- a restart's LR cut reads the update ratio at the recipe's LR (:mod:`runner.autotrainer.lr_evidence`);
- a batch of 2 restarts at a batch that keeps the run's steps (:mod:`runner.autotrainer.restart_batch`).
"""

from __future__ import annotations

import pytest
import torch
from helpers import compose_cfg
from test_autotrainer_causes import net, policy_for, spec

from runner.autotrainer import overfit_evidence, restart_batch
from runner.autotrainer.setting_causes import find
from runner.autotrainer.settings import Settings

RULES = Settings.from_config(spec()).setting_causes

# seed 6's healthy CNN on 10%-noisy labels (healthy-baa86265de01), epochs 4-17 as validated: the
# validation loss rose from 0.305 and accuracy fell from 0.979 to 0.868, training accuracy 0.04 above
NOISY_VAL_LOSS = [
    0.832,
    0.485,
    0.368,
    0.305,
    0.351,
    0.407,
    0.435,
    0.543,
    0.612,
    0.672,
    0.712,
    0.695,
]
NOISY_VAL_ACC = [0.799, 0.889, 0.917, 0.951, 0.958, 0.965, 0.965, 0.979, 0.958, 0.91, 0.938, 0.868]
# a model memorising its training examples: training accuracy 1.0, validation falling and its loss rising
MEMO_VAL_LOSS = [0.9, 0.6, 0.45, 0.40, 0.52, 0.60, 0.71, 0.80, 0.92]
MEMO_VAL_ACC = [0.70, 0.82, 0.88, 0.90, 0.86, 0.84, 0.83, 0.81, 0.80]


def _evidence(loss, acc, train, n: int = 144) -> str | None:
    return overfit_evidence.sustained(
        loss, acc, train, n, window=4, min_rise=0.05, z=2.0, min_gap=0.08
    )


def test_sustained_overfitting_needs_a_rise_a_fall_beyond_noise_and_a_gap() -> None:
    memo_train = [min(1.0, a + 0.2) for a in MEMO_VAL_ACC[:4]] + [1.0] * 5
    assert _evidence(MEMO_VAL_LOSS, MEMO_VAL_ACC, memo_train) is not None
    # the same fall without a gap: the noisy-label CNN fitted its training examples no better (0.04)
    noisy_train = [a + 0.04 for a in NOISY_VAL_ACC]
    assert _evidence(NOISY_VAL_LOSS, NOISY_VAL_ACC, noisy_train) is None
    # a loss back at its best within the window is a swing, not sustained
    swing = [*MEMO_VAL_LOSS[:-2], 0.39, 0.92]
    assert _evidence(swing, MEMO_VAL_ACC, memo_train) is None
    # a fall of 1.5 points on 144 examples is within two standard errors (about 5 points at 0.85)
    flat = [0.90, 0.90, 0.90, 0.90, 0.885, 0.885, 0.885, 0.885, 0.885]
    assert _evidence(MEMO_VAL_LOSS, flat, memo_train) is None
    # on 5000 examples the same 1.5 points is beyond the noise
    assert _evidence(MEMO_VAL_LOSS, flat, memo_train, n=5000) is not None
    assert overfit_evidence.accuracy_noise(0.85, 144, 4) == pytest.approx(
        (0.85 * 0.15 * (1 / 144 + 1 / 576)) ** 0.5
    )


def _epoch(policy, state, loss: float, acc: float, train: float) -> None:
    """One validation as the loop reports it: the diagnosis's per-epoch series and the policy's hook."""
    series = policy.diagnostics.series
    series.epoch_val_loss.append(loss)
    series.epoch_val_acc.append(acc)
    series.epoch_train_acc.append(train)
    series.epoch_train_loss.append(0.1)
    state.metrics.update({"val/acc": acc, "val/loss": loss})
    state.val_examples = 144
    policy.on_validation_end(state)


def _warn(policy, state) -> None:
    state.step += 10
    state.issues = [
        {"code": "OVERFITTING", "severity": "warning", "first_step": state.step, "evidence": "t"}
    ]
    policy.on_train_batch_end(state)


def test_ordinary_overfitting_is_left_to_the_end_and_a_sustained_one_is_regularised() -> None:
    """The real policy on a real FitState: seed 6's noisy-label run (no train-validation gap) warned
    OVERFITTING is not changed, and may_treat says so; a memorising run's warning is regularised."""
    policy, state = policy_for(net(dropout=0.1), torch.optim.SGD(net().parameters(), lr=0.1))
    state.num_classes = 10
    for loss, acc in zip(NOISY_VAL_LOSS, NOISY_VAL_ACC):
        _epoch(policy, state, loss, acc, acc + 0.04)
    _warn(policy, state)
    assert policy.actions == []
    assert not policy.may_treat({"code": "OVERFITTING", "severity": "warning"})

    policy, state = policy_for(net(dropout=0.1), torch.optim.SGD(net().parameters(), lr=0.1))
    state.num_classes = 10
    for loss, acc in zip(MEMO_VAL_LOSS, MEMO_VAL_ACC):
        _epoch(policy, state, loss, acc, 1.0)
    assert policy.may_treat({"code": "OVERFITTING", "severity": "warning"})
    _warn(policy, state)
    assert [a["action"] for a in policy.actions] == ["regularize"]
    assert state.optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-2)


class _Loop:
    max_epochs = 3
    max_steps = 0
    clip_max_norm = None


@pytest.mark.parametrize("named_at_end", [True, False])
def test_the_best_weights_are_tested_only_when_the_end_still_names_overfitting(
    named_at_end: bool,
) -> None:
    """OVERFITTING warned mid-run and not acted on; the last epoch's loss above its best: the best
    weights are put back only when the diagnosis at the end (the whole run seen) still names it."""
    model = net()
    policy, state = policy_for(model, torch.optim.SGD(model.parameters(), lr=0.1), loop=_Loop())
    state.num_classes = 2
    _epoch(policy, state, 0.30, 0.90, 0.92)  # the best: its weights kept
    best = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state.epoch = 1
    _epoch(policy, state, 0.50, 0.85, 0.93)
    _warn(policy, state)  # seen mid-run, not sustained: no change
    assert policy.actions == []
    state.epoch = 2
    _epoch(policy, state, 0.60, 0.80, 0.95)
    state.issues = (
        [{"code": "OVERFITTING", "severity": "warning", "first_step": 20, "evidence": "t"}]
        if named_at_end
        else []
    )
    policy.on_epoch_end(state)
    restored = [a["action"] for a in policy.actions] == ["restore_best"]
    assert restored == named_at_end
    same = all(torch.equal(p, b) for p, b in zip(model.parameters(), best))
    assert same == named_at_end


@pytest.mark.parametrize(
    ("batch", "steps_per_epoch", "epochs", "max_steps", "expected"),
    [
        (
            2,
            647,
            3,
            300,
            16,
        ),  # seed 6's CNN: 300 steps at batch 2, 243 at 16 (its twin's), 63 at 64
        (2, 647, 30, 500, 64),  # enough epochs: the default batch keeps the steps
        (1294, 1, 10, 500, 64),  # the whole split: 10 steps; any sane batch has more
        (1, 1294, 3, None, 4),  # no sane batch keeps 3882 steps: the smallest sane one
    ],
)
def test_the_restart_batch_keeps_the_run_s_steps(
    batch: int, steps_per_epoch: int, epochs: int, max_steps: int | None, expected: int
) -> None:
    got = restart_batch.choose(
        batch,
        steps_per_epoch,
        epochs,
        max_steps,
        smallest=RULES.min_batch,
        largest=RULES.batch,
        min_steps_per_epoch=RULES.min_steps_per_epoch,
        keep_steps=RULES.keep_steps,
    )
    assert got == expected
    examples = batch * steps_per_epoch
    kept = restart_batch.run_steps(got, examples, epochs, max_steps)
    wanted = RULES.keep_steps * restart_batch.run_steps(batch, examples, epochs, max_steps)
    assert kept >= wanted or got == RULES.min_batch


def test_a_batch_of_two_is_found_with_the_batch_that_keeps_its_steps() -> None:
    """The setting cause read from the config: batch 2 for 3 epochs within 300 steps restarts at 16."""
    cfg = compose_cfg(["data.batch_size=2", "trainer.max_epochs=3", "trainer.max_steps=300"])
    cause = find(cfg, None, 647, RULES)
    assert cause is not None and cause.name == "batch_extreme"
    assert cause.changes == {"data.batch_size": 16}
    assert "batch 16 keeps the run's steps" in cause.why


def _sized(detail: str) -> float:
    """The ratio read at the recipe's LR that a restart's detail names ('..., 45.3 read at the recipe's LR')."""
    return float(detail.split(" read at the recipe's LR", 1)[0].rsplit(" ", 1)[1])


def test_the_update_ratio_is_read_at_the_recipe_s_lr() -> None:
    """A sample taken at a 25th of the recipe's LR (one-cycle's start) counts 25 times over."""
    from runner.autotrainer.lr_evidence import peak_at_recipe_lr

    assert peak_at_recipe_lr([1.81, 0.1], 34.1 / 25, 34.1) == pytest.approx(1.81 * 25)
    assert peak_at_recipe_lr([float("nan")], 1.0, 34.1) == 0.0
    assert peak_at_recipe_lr([], 1.0, 34.1) == 0.0


def test_each_ratio_sample_is_read_once_and_a_new_series_from_its_start() -> None:
    """The policy reads the live series at every check; after a repair the diagnosis starts a new one."""
    from diag.series import RunSeries
    from runner.autotrainer.lr_evidence import NewSamples

    reader, first, second = NewSamples(), RunSeries(), RunSeries()
    first.update_ratio += [1.8, 0.1]
    assert reader.read(first.update_ratio, first) == [1.8, 0.1]
    first.update_ratio.append(0.05)
    assert reader.read(first.update_ratio, first) == [0.05]
    second.update_ratio.append(0.02)
    assert reader.read(second.update_ratio, second) == [0.02]


@pytest.mark.slow
def test_a_restart_under_one_cycle_cuts_the_lr_by_the_ratio_read_at_its_peak(tmp_path) -> None:
    """SGD under one-cycle at LR 30: its first steps run at a 25th of it. Units named dead at step 20
    (critical): the restart's cut is sized by the ratio read at the recipe's LR, larger than the peak as
    sampled, so the LR lands lower than the sampled peak alone would put it."""
    from test_autotrainer_causes import NamesCause, fit

    over = ["data.subset=256", "data.batch_size=16", "trainer.max_epochs=8", "optimizer=sgd"]
    over += ["optimizer.lr=30", "scheduler=onecycle"]
    over += ["trainer.clip.max_norm=null", "autotrainer=default"]
    got = fit(over, tmp_path, "run", NamesCause("DEAD_NEURONS", 20, "critical"))
    restart = got["actions"][-1]
    assert (restart["action"], restart["code"]) == ("restart", "DEAD_NEURONS")
    peak = float(restart["detail"].split("the weights moved ", 1)[1].split(" ", 1)[0])
    sized = _sized(restart["detail"])
    assert sized > 2 * peak  # the samples at the start of the cycle, read at its peak
    assert restart["changes"]["optimizer.lr"] == pytest.approx(30 * 0.03 / sized, rel=1e-3)


def test_a_repaired_run_that_ends_on_a_swing_is_tested_with_its_best_weights() -> None:
    """Nothing named at the end, but the policy repaired this attempt (momentum lowered): the run ends
    with val loss 2x its best and a lower accuracy, so the best weights are tested, under the repair's code;
    without the repair (see the test above) the same end is left alone."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.999)
    policy, state = policy_for(model, opt, loop=_Loop())
    state.num_classes = 2
    _epoch(policy, state, 0.16, 0.95, 0.96)
    best = [p.detach().clone() for p in model.parameters()]
    state.step, state.epoch = 20, 1
    state.issues = [{"code": "MOMENTUM_TOO_HIGH", "severity": "warning", "first_step": 20}]
    policy.on_train_batch_end(state)
    assert [a["action"] for a in policy.actions] == ["lower_momentum"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state.epoch = 2
    _epoch(policy, state, 0.35, 0.90, 0.97)
    state.issues = []
    policy.on_epoch_end(state)
    restore = policy.actions[-1]
    assert (restore["action"], restore["code"]) == ("restore_best", "MOMENTUM_TOO_HIGH")
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), best))
    assert state.metrics["val/acc"] == pytest.approx(0.95)
