"""Issue 21's remaining misses, each by its mechanism, in real tiny runs and on real models:

- a setting read from the config (a one-unit layer, dropout 0.95) is repaired at fit start, before any
  step: a restart widened within the budget, dropout lowered in place to the default in one action;
- a restart after an LR-caused fault carries an LR cut sized by the measured update ratio;
- a mild OVERFITTING warning on a run whose validation accuracy is not falling is left alone;
- ``may_treat`` (what ``stop_on`` asks) answers as the policy acts: a setting cause makes a symptom treatable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg
from omegaconf import OmegaConf
from test_autotrainer_causes import NamesCause, fit, net, policy_for

TINY = ["data.subset=256", "trainer.max_epochs=3", "optimizer=sgd", "optimizer.lr=0.1"]


@pytest.fixture(scope="module")
def one_unit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with a one-unit layer (``hidden=[1]``), trained once for the tests that only read it."""
    from runner.app import run

    root = tmp_path_factory.mktemp("one_unit")
    cfg = compose_cfg([*TINY, "model.hidden=[1]", "autotrainer=default"], root)
    out = root / "run"
    run(cfg, out)
    return out


@pytest.mark.slow
def test_a_one_unit_layer_restarts_widened_before_any_step_and_the_attempt_learns(
    one_unit_run: Path,
) -> None:
    """hidden=[1] for ten classes: at chance at any LR. Restarted at step 0 (no step spent), attempt-1
    at [256, 256] (capacity.width, within the budget) learns. Nothing was measured before it (no
    step), so its effect is "not measured"; its outcome says how attempt-1 ended."""
    out = one_unit_run
    report = json.loads((out / "report.json").read_text())
    (restart,) = report["autotrainer"]["actions"]
    assert (restart["action"], restart["cause"], restart["step"], restart["code"]) == (
        "restart",
        "capacity_too_small",
        0,
        "UNDERFITTING",
    )
    assert restart["changes"] == {"model.hidden": [256, 256]}
    first, second = report["autotrainer"]["attempts"]
    assert first["steps"] == 0 and second["dir"] == "attempt-1"
    used = OmegaConf.load(out / "attempt-1" / ".hydra" / "config.yaml")
    assert list(used.model.hidden) == [256, 256]
    assert report["metrics"]["test_acc"] > 0.5  # chance is 0.1
    assert restart["measured"]["verdict"] == "not measured"
    assert restart["outcome"].startswith("attempt-1 ended") and "test_acc" in restart["outcome"]


def test_dropout_far_too_strong_is_lowered_to_the_default_at_fit_start(tmp_path: Path) -> None:
    """dropout 0.95 in the config: lowered in place to 0.1 at step 0, in one action, the LR untouched,
    and the run trains with it from its first step (no rollback needed: nothing was thrown out yet)."""
    got = fit([*TINY, "model.dropout=0.95", "autotrainer=default"], tmp_path, "fixed")
    (action,) = [a for a in got["actions"] if a["action"] != "give_up"]
    assert (action["action"], action["cause"], action["step"], action["code"]) == (
        "lower_dropout",
        "dropout_too_strong",
        0,
        "TOO_MUCH_REGULARIZATION",
    )
    assert action["changes"] == {"model.dropout": 0.1}
    assert action["lr_before"] == action["lr_after"]
    drops = [m for m in got["state"].model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.1 for m in drops)
    assert got["acc"] > 0.5


def test_a_restart_after_a_too_high_lr_carries_a_cut_sized_by_the_update_ratio(
    tmp_path: Path,
) -> None:
    """SGD at LR 30 (300x the recipe's): the weights move far more than their norm in a step. Units
    named dead at step 20 (critical): the restart's LR is cut to target/peak of the recipe's, far below
    what the dead-unit rule's halving (and the rollback's x0.1) would have left."""
    over = ["data.subset=256", "data.batch_size=16", "trainer.max_epochs=2", "optimizer=sgd"]
    over += ["optimizer.lr=30"]
    over += ["trainer.clip.max_norm=null", "autotrainer=default"]
    got = fit(over, tmp_path, "run", NamesCause("DEAD_NEURONS", 20, "critical"))
    restart = got["actions"][-1]
    assert (restart["action"], restart["code"]) == ("restart", "DEAD_NEURONS")
    peak = _peak(restart["detail"])
    assert peak > 0.3  # the evidence: far above healthy (under 0.21 on the benchmark's recipes)
    lr = restart["changes"]["optimizer.lr"]
    # sized by the peak read at the recipe's LR (the schedule's decay undone: at least the peak sampled)
    sized = float(restart["detail"].split(" read at the recipe's LR", 1)[0].rsplit(" ", 1)[1])
    assert sized >= peak
    assert lr == pytest.approx(30 * 0.03 / sized, rel=1e-3)
    assert lr < 30 * 0.1 * 0.5
    assert "the LR cut x" in restart["detail"]


def test_weight_decay_far_too_strong_is_lowered_at_fit_start_and_the_moments_reset() -> None:
    """weight decay 3 in the config and in the optimizer: lowered in place at step 0, before any step."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3.0)
    policy, _ = policy_for(model, opt, cfg=("optimizer.weight_decay=3",))
    (action,) = policy.actions
    assert (action["action"], action["cause"], action["step"]) == (
        "lower_weight_decay",
        "weight_decay_too_strong",
        0,
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4]
    assert action["changes"]["optimizer.weight_decay"] == 1e-4


def test_a_second_rollback_cuts_the_lr_as_far_as_the_update_ratio_shows() -> None:
    """An LR 1000x too high: the first rollback's x0.1 (an init far too large makes huge first steps too);
    exploding again, the cut the peak update ratio asks for (0.03 / (100 x 0.1)), not another x0.1."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    policy, state = policy_for(model, opt)
    policy.carried.peak_update_ratio = (
        100.0  # at the recipe's LR: the weights moved 100x their norm
    )
    boom = {"code": "LOSS_EXPLOSION", "severity": "critical"}
    policy.on_train_batch_end(_at(state, 10, boom))
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    policy.on_train_batch_end(_at(state, 70, boom))
    second = policy.actions[-1]
    assert (
        second["action"] == "rollback" and "the LR cut the update ratio shows" in second["detail"]
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0 * 0.03 / 10.0)


def _peak(detail: str) -> float:
    """The update ratio the restart's detail names ('the weights moved 4.2 of their norm in one step')."""
    return float(detail.split("the weights moved ", 1)[1].split(" ", 1)[0])


def test_a_restart_without_lr_evidence_keeps_the_rule_s_lr() -> None:
    """A dead-unit restart in a run whose weights never moved far: the rule's x0.5, no evidence cut."""
    policy, state = policy_for(net(), torch.optim.SGD(net().parameters(), lr=0.1))
    policy.carried.peak_update_ratio = 0.05  # a healthy step
    assert policy._lr_cut("DEAD_NEURONS") is None
    policy.carried.peak_update_ratio = 3.0
    factor, words = policy._lr_cut("DEAD_NEURONS")
    assert factor == pytest.approx(0.01) and "moved 3 of their norm" in words
    assert policy._lr_cut("VANISHING_GRADIENTS") is None  # not an LR code, no LR repair before it
    policy.record(state, {"code": "LOSS_EXPLOSION"}, "rollback", 0.1, 0.01, {}, "t", "applied")
    assert policy._lr_cut("VANISHING_GRADIENTS") is not None  # after an LR repair: any restart
    assert policy._lr_cut("BAD_INITIALIZATION") is None  # the init's scale made the big steps


def test_dead_units_after_steps_far_too_big_restart_already_at_a_warning() -> None:
    """DEAD_NEURONS at a warning: no restart in a run whose steps were sane (restarts need critical);
    with the update ratio's evidence of an LR far too high, a restart with the LR cut; may_treat agrees."""
    dead = {"code": "DEAD_NEURONS", "severity": "warning"}
    for peak, restarts in ((0.05, False), (3.0, True)):
        policy, state = policy_for(net(), torch.optim.SGD(net().parameters(), lr=0.1))
        policy.carried.peak_update_ratio = peak
        assert policy.may_treat(dead) is restarts
        policy.on_train_batch_end(_at(state, 10, dead))
        assert [a["action"] for a in policy.actions] == (["restart"] if restarts else [])
    recipe = policy.cfg.optimizer.lr  # the restart's LR is the config's, cut
    assert policy.restart_request["changes"]["optimizer.lr"] == pytest.approx(recipe * 0.03 / 3.0)


def _unsustained() -> dict:
    """The table with OVERFITTING's sustained-evidence gate off: the tests of the gates before it."""
    from test_autotrainer_causes import spec

    online = spec()["online"]
    online["OVERFITTING"] = {**online["OVERFITTING"], "sustained": None}
    return online


def _validate(policy, state, acc: float) -> None:
    state.metrics.update({"val/acc": acc, "val/loss": 1.0 - acc})
    policy.on_validation_end(state)


def _overfit(policy, state, severity: str) -> None:
    state.step += 10
    state.issues = [
        {"code": "OVERFITTING", "severity": severity, "first_step": state.step, "evidence": "t"}
    ]
    policy.on_train_batch_end(state)


def test_a_mild_overfitting_warning_on_a_run_still_improving_is_left_alone() -> None:
    """Validation accuracy not falling (0.967 -> 0.972): a warning is not acted on, and may_treat says so;
    once it falls more than half a point below its best, the same warning is regularised."""
    policy, state = policy_for(
        net(dropout=0.1), torch.optim.SGD(net().parameters(), lr=0.1), online=_unsustained()
    )
    for acc in (0.90, 0.967, 0.972):
        _validate(policy, state, acc)
    _overfit(policy, state, "warning")
    assert policy.actions == []
    assert not policy.may_treat({"code": "OVERFITTING", "severity": "warning"})
    assert policy.may_treat({"code": "OVERFITTING", "severity": "critical"})
    _validate(policy, state, 0.950)  # 2.2 points below its best, beyond its epoch-to-epoch noise
    assert policy.may_treat({"code": "OVERFITTING", "severity": "warning"})
    _overfit(policy, state, "warning")
    assert [a["action"] for a in policy.actions] == ["regularize"]


def test_an_oscillation_warning_while_validation_accuracy_is_at_its_best_is_left_alone() -> None:
    """Healthy runs' late LOSS_OSCILLATION warnings (accuracy still rising): the LR is not halved; once
    validation accuracy falls beyond its noise, the same warning halves it; a critical one always does."""
    policy, state = policy_for(net(), torch.optim.SGD(net().parameters(), lr=0.1))
    for acc in (0.86, 0.94, 0.944):
        _validate(policy, state, acc)
    warning = {"code": "LOSS_OSCILLATION", "severity": "warning"}
    assert not policy.may_treat(warning)
    assert policy.may_treat({**warning, "severity": "critical"})
    state.step += 10
    state.issues = [{**warning, "first_step": state.step, "evidence": "t"}]
    policy.on_train_batch_end(state)
    assert policy.actions == []
    _validate(policy, state, 0.90)
    assert policy.may_treat(warning)
    state.step += 10
    state.issues = [{**warning, "first_step": state.step, "evidence": "t"}]
    policy.on_train_batch_end(state)
    assert [a["action"] for a in policy.actions] == ["scale_lr"]


def test_overfitting_on_an_attempt_that_never_learned_is_not_regularised() -> None:
    """Best validation accuracy 0.19 on ten classes (min_learned 0.5: 0.55 needed): the model never
    generalised, so an OVERFITTING finding, even critical, is not treated, and may_treat says so; once the
    attempt has learned (0.8) and then falls, the same finding is regularised."""
    policy, state = policy_for(
        net(dropout=0.1), torch.optim.SGD(net().parameters(), lr=0.1), online=_unsustained()
    )
    state.num_classes = 10
    for acc in (0.12, 0.19, 0.15):
        _validate(policy, state, acc)
    _overfit(policy, state, "critical")
    assert policy.actions == []
    assert not policy.may_treat({"code": "OVERFITTING", "severity": "critical"})
    for acc in (0.80, 0.70):
        _validate(policy, state, acc)
    assert policy.may_treat({"code": "OVERFITTING", "severity": "warning"})
    _overfit(policy, state, "warning")
    assert [a["action"] for a in policy.actions] == ["regularize"]


def test_a_fall_within_the_run_s_own_epoch_to_epoch_noise_is_not_a_fall() -> None:
    """144 validation examples: the accuracy moves by one example (0.7 points) between epochs. Best 142/144,
    last 141/144: a fall of one example, the run's own noise, is mild; three examples below is not."""
    policy, state = policy_for(
        net(dropout=0.1), torch.optim.SGD(net().parameters(), lr=0.1), online=_unsustained()
    )
    for correct in (139, 140, 141, 140, 141, 142, 141, 142, 141):
        _validate(policy, state, correct / 144)
    assert not policy.may_treat({"code": "OVERFITTING", "severity": "warning"})
    _overfit(policy, state, "warning")
    assert policy.actions == []
    _validate(policy, state, 139 / 144)
    _overfit(policy, state, "warning")
    assert [a["action"] for a in policy.actions] == ["regularize"]


def test_may_treat_knows_the_setting_causes() -> None:
    """STUCK_AT_CHANCE is treated only after an explosion's rollback, unless a setting causes it: with
    clipping at 1e-4 the policy would loosen it, so stop_on waits; a sane run's is not waited for."""
    from runner.trainer import Trainer

    stuck = {"code": "STUCK_AT_CHANCE", "severity": "critical"}
    causes = {"at_setup": False}  # the cause left for its symptom, as after a resume
    policy, state = policy_for(net(), torch.optim.SGD(net().parameters(), lr=0.1))
    assert not policy.may_treat(stuck)
    loop = Trainer(max_epochs=1, progress=False, clip_max_norm=1e-4)
    policy, state = policy_for(
        net(),
        torch.optim.SGD(net().parameters(), lr=0.1),
        setting_causes={**_table(), **causes},
        loop=loop,
    )
    assert policy.may_treat(stuck)
    policy.on_train_batch_end(_at(state, 10, stuck))
    assert [a["action"] for a in policy.actions] == ["loosen_clip"] and loop.clip_max_norm is None


def _table() -> dict:
    from test_autotrainer_causes import spec

    return spec()["setting_causes"]


def _at(state, step: int, issue: dict):
    state.step = step
    state.issues = [{**issue, "first_step": step, "evidence": "t"}]
    return state


@pytest.mark.parametrize(("step", "restarts"), [(100, False), (300, True)])
def test_a_late_lr_raise_is_a_restart_at_the_raised_lr(step: int, restarts: bool) -> None:
    """SLOW_CONVERGENCE on an LR far too low: raised in place early in the run; after late_lr_restart
    (0.25) of its 1000 steps, a restart at the raised LR (x10 here: no update ratio measured), so the
    raised LR gets the run's steps and schedule (raised at step 80 of 120, a run ended 9 points short)."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    policy, state = policy_for(model, opt, cfg=("optimizer=sgd", "optimizer.lr=1e-5"))
    policy.on_train_batch_end(
        _at(state, step, {"code": "SLOW_CONVERGENCE", "severity": "critical"})
    )
    (action,) = policy.actions
    if not restarts:
        assert action["action"] == "raise_lr"
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
        assert policy.restart_request is None
        return
    assert (action["action"], action["code"]) == ("restart", "SLOW_CONVERGENCE")
    assert action["detail"].startswith(
        f"LR repair made as a restart at the repaired LR: raise_lr x10 at step {step} of 1000"
    )
    assert policy.restart_request["changes"] == {"optimizer.lr": pytest.approx(1e-4)}
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # this attempt stops, unchanged
    assert state.stop_training


def test_a_restart_that_repairs_the_lr_drops_the_clipping_the_explosion_turned_on(
    tmp_path: Path,
) -> None:
    """SGD at LR 200 without clipping: the explosion's rollback turns clipping on (max_norm 1); units named
    dead later: the restart carries the LR cut the update ratio shows, and not the clipping, a guard and
    not a repair (a max norm of 1 held a CNN at 0.708 where the same LR without it reached 0.919)."""
    over = ["data.subset=256", "data.batch_size=16", "trainer.max_epochs=2", "optimizer=sgd"]
    over += ["optimizer.lr=200", "trainer.clip.max_norm=null", "autotrainer=default"]
    got = fit(over, tmp_path, "run", NamesCause("DEAD_NEURONS", 20, "critical"))
    rollback, restart = [a for a in got["actions"] if a["action"] in ("rollback", "restart")][:2]
    assert rollback["changes"]["trainer.clip.max_norm"] == 1.0
    assert (restart["action"], restart["code"]) == ("restart", "DEAD_NEURONS")
    assert "the LR cut x" in restart["detail"]
    assert "trainer.clip.max_norm" not in restart["changes"]
    assert "clipping (max_norm 1) the explosion turned on is not carried" in restart["detail"]


def test_a_restart_at_set_up_leaves_no_test_pass_or_figures_of_the_attempt_it_abandons(
    one_unit_run: Path,
) -> None:
    """Restarted before any step (a one-unit layer), attempt-0 is not the run's result: no test pass
    of its initial weights, no confusion matrix or summary figure, the reason in its events.jsonl; its
    report and the final attempt's figures stay (the seconds a short run spent on them, issue 21)."""
    out = one_unit_run
    report = json.loads((out / "report.json").read_text())
    first, second = report["autotrainer"]["attempts"]
    assert first["steps"] == 0 and first["test_acc"] is None
    assert second["test_acc"] is not None and report["metrics"]["test_acc"] > 0.5
    assert not (out / "confusion_matrix.png").exists() and not (out / "summary.png").exists()
    for name in ("confusion_matrix.png", "summary.png", "report.json"):
        assert (out / "attempt-1" / name).exists(), name
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    (why,) = [e["reason"] for e in events if e["kind"] == "not_drawn"]
    assert "no test pass" in why and "no confusion_matrix.png" in why


@pytest.mark.parametrize("plot", [False, True])
def test_an_attempt_stopped_after_it_trained_is_tested_and_drawn_only_when_asked(
    tmp_path: Path, plot: bool
) -> None:
    """A bad init (scale 1e-4) restarted after some steps: attempt-0 trained, so it is tested (its
    accuracy is in the attempt list), but its confusion matrix and input grid are drawn only with
    ``plot_stopped_attempts`` (as its summary.png); attempt-1 draws its own either way."""
    from runner.app import run

    asked = f"callbacks.autotrainer.plot_stopped_attempts={str(plot).lower()}"
    cfg = compose_cfg([*TINY, "model.init_scale=0.0001", "autotrainer=default", asked], tmp_path)
    out = tmp_path / "run"
    run(cfg, out)
    report = json.loads((out / "report.json").read_text())
    first, second = report["autotrainer"]["attempts"]
    assert first["stopped_for"] == "BAD_INITIALIZATION" and first["steps"] > 0
    assert first["test_acc"] is not None and second["test_acc"] is not None
    assert (out / "confusion_matrix.png").exists() is plot
    assert (out / "summary.png").exists() is plot
    assert (out / "attempt-1" / "confusion_matrix.png").exists()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    not_drawn = [e["reason"] for e in events if e["kind"] == "not_drawn"]
    assert len(not_drawn) == (0 if plot else 1)
    assert all("no test pass" not in why for why in not_drawn)
