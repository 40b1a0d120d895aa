"""When the live diagnosis ends a run: blow-ups at once, stuck runs after the grace, AutoTrainer first."""

from __future__ import annotations

import json

import pytest
from helpers import compose_cfg
from omegaconf import OmegaConf
from torch import nn

from diag.hooks import FitState
from diag.live import DiagnosticsHook
from diag.series import RunSeries
from runner.app import run
from runner.autotrainer import AutoTrainer
from runner.stop_on import StopOnDiagnosis, project


def _state(step: int, issues: list[dict], actions: list[dict] | None = None) -> FitState:
    state = FitState(model=nn.Linear(2, 2), step=step, max_steps=400)
    state.issues, state.actions = issues, list(actions or [])
    return state


def issue(code: str, severity: str = "critical") -> dict:
    return {"code": code, "severity": severity, "evidence": "test", "first_step": 10}


def test_a_blow_up_stops_at_once_and_says_what_it_saved():
    hook = StopOnDiagnosis(level="critical")
    state = _state(20, [issue("LOSS_EXPLOSION")])
    hook.on_train_batch_end(state)
    assert state.stop_training and state.stop_reason.startswith("stop_on=critical: LOSS_EXPLOSION")
    assert hook.stopped == {
        "code": "LOSS_EXPLOSION",
        "severity": "critical",
        "step": 20,
        "max_steps": 400,
        "saved_steps": 380,
    }


@pytest.mark.parametrize("step, stops", [(60, False), (100, True)])
def test_a_stuck_run_stops_only_after_the_grace(step, stops):
    state = _state(step, [issue("STUCK_AT_CHANCE")])
    StopOnDiagnosis(level="critical", grace=0.25).on_epoch_end(state)
    assert state.stop_training is stops


@pytest.mark.parametrize(
    "step, val_acc, stops",
    [
        (30, 0.09, False),  # before the early grace (a tenth of 400 steps)
        (40, 0.09, True),  # at chance by its accuracy too: stops at the early grace
        (60, 0.30, False),  # a stuck finding, but its accuracy is off chance: waits for the grace
        (100, 0.30, True),
    ],
)
def test_a_run_stuck_at_chance_by_its_accuracy_too_stops_at_the_early_grace(step, val_acc, stops):
    # MLP with SGD at 0.81 on digits: STUCK_AT_CHANCE from step 60, validation accuracy 0.097 there
    # and at the end of its 400 steps
    state = _state(step, [issue("STUCK_AT_CHANCE")])
    state.num_classes, state.metrics["val/acc"] = 10, val_acc
    StopOnDiagnosis(level="critical", grace=0.25, early_grace=0.1).on_epoch_end(state)
    assert state.stop_training is stops


@pytest.mark.parametrize("code", ["DEAD_NEURONS", "VANISHING_GRADIENTS"])
@pytest.mark.parametrize("val_acc, stops", [(0.09, True), (0.93, False)])
def test_dead_or_vanishing_stops_a_run_only_while_it_is_at_chance(code, val_acc, stops):
    # Adam at lr 0.066 on digits: dead units diagnosed, and still 0.95 validation accuracy at the end
    state = _state(100, [issue(code)])
    state.num_classes, state.metrics["val/acc"] = 10, val_acc
    hook = StopOnDiagnosis(level="critical", grace=0.25)
    hook.on_epoch_end(state)
    assert state.stop_training is stops and (hook.stopped is not None) is stops


def test_warnings_symptoms_and_no_level_never_stop():
    for hook, found in [
        (StopOnDiagnosis(level="critical"), [issue("LOSS_EXPLOSION", "warning")]),
        (StopOnDiagnosis(level="critical"), [issue("OVERFITTING"), issue("LOSS_OSCILLATION")]),
        (StopOnDiagnosis(level=None), [issue("LOSS_EXPLOSION")]),
    ]:
        state = _state(200, found)
        hook.on_epoch_end(state)
        assert not state.stop_training and hook.stopped is None


def autotrainer(*overrides: str) -> AutoTrainer:
    """The AutoTrainer of ``autotrainer=default``, with the settings that config ships."""
    cfg = compose_cfg(["autotrainer=default", *overrides])
    settings = OmegaConf.to_container(cfg.callbacks.autotrainer)
    assert isinstance(settings, dict)
    return AutoTrainer(cfg=cfg, **{str(k): v for k, v in settings.items()})


def test_with_the_autotrainer_a_code_it_treats_stops_the_run_only_once_it_gave_up():
    repairer = autotrainer()
    hook = StopOnDiagnosis(level="critical", autotrainer=repairer)
    explosion = issue("LOSS_EXPLOSION")
    state = _state(50, [explosion])
    hook.on_epoch_end(state)
    assert not state.stop_training  # the AutoTrainer's rollback comes first
    repairer._give_up(state, explosion, "LOSS_EXPLOSION was already treated 3 times (limit 3)")
    hook.on_epoch_end(state)
    assert state.stop_training and hook.stopped is not None
    assert hook.stopped["code"] == "LOSS_EXPLOSION"


@pytest.mark.parametrize("code", ["STUCK_AT_CHANCE", "NO_LEARNING"])
def test_with_the_autotrainer_a_stuck_code_it_has_no_repair_for_still_stops_after_the_grace(code):
    # STUCK_AT_CHANCE is treated only after an explosion was rolled back; NO_LEARNING only by a capacity
    # restart, which the default model (not small) never gets: waiting for them would wait for ever
    hook = StopOnDiagnosis(level="critical", grace=0.25, autotrainer=autotrainer())
    state = _state(60, [issue(code)])
    hook.on_epoch_end(state)
    assert not state.stop_training  # the grace first
    state.step = 100
    hook.on_epoch_end(state)
    assert state.stop_training and hook.stopped is not None and hook.stopped["code"] == code


def test_with_the_autotrainer_no_learning_waits_for_the_capacity_restart_only_on_a_small_model():
    assert autotrainer("model.hidden=[2]").may_treat(issue("NO_LEARNING"))
    assert not autotrainer().may_treat(issue("NO_LEARNING"))


def test_with_the_autotrainer_stuck_at_chance_after_an_explosion_waits_for_its_second_rollback():
    repairer = autotrainer()
    repairer.session.actions.append(
        {"code": "LOSS_EXPLOSION", "action": "rollback", "attempt": repairer.session.attempt}
    )
    hook = StopOnDiagnosis(level="critical", autotrainer=repairer)
    state = _state(200, [issue("STUCK_AT_CHANCE")])
    hook.on_epoch_end(state)
    assert not state.stop_training


def test_with_the_autotrainer_a_restart_code_waits_only_at_the_severity_that_restarts():
    repairer = autotrainer()
    assert repairer.may_treat(issue("DEAD_NEURONS", "critical"))
    assert not repairer.may_treat(issue("DEAD_NEURONS", "warning"))  # restarts need critical
    assert repairer.may_treat(issue("BAD_INITIALIZATION", "warning"))  # its own floor: warning


def test_a_bad_level_is_refused():
    with pytest.raises(ValueError, match="stop_on='fatal'"):
        StopOnDiagnosis(level="fatal")


@pytest.mark.slow
def test_a_stopped_run_returns_the_sweep_penalty(tmp_path):
    cfg = compose_cfg(
        [
            "optimizer=sgd",
            "optimizer.lr=20",
            "stop_on=critical",
            "trainer.max_epochs=3",
            "objective_penalty=123.0",
        ],
        tmp_path,
    )
    assert run(cfg, tmp_path / "run") == 123.0


@pytest.mark.slow
def test_with_the_autotrainer_a_blow_up_is_rolled_back_before_stop_on_may_end_the_run(tmp_path):
    cfg = compose_cfg(
        [
            "optimizer=sgd",
            "optimizer.lr=20",
            "stop_on=critical",
            "autotrainer=default",
            "trainer.max_epochs=3",
        ],
        tmp_path,
    )
    run(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    actions = report["autotrainer"]["actions"]
    assert actions and actions[0]["code"] in {"LOSS_EXPLOSION", "NONFINITE_GRADIENTS"}
    assert actions[0]["action"] == "rollback"
    events = [
        json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    stops = [e for e in events if e["kind"] == "stopped"]
    if stops:  # only a code the AutoTrainer gave up on, after it did
        given_up = [a for a in actions if a["action"] == "give_up"]
        assert stops[0]["code"] in {a["code"] for a in given_up}
        assert stops[0]["step"] >= given_up[0]["step"]
    else:
        assert not report["stopped"] and report["metrics"]["epochs"] == 3


def _diagnostics(losses: list[float], val_losses: list[float] | None = None) -> DiagnosticsHook:
    """The run's diagnostics hook as stop_on reads it: the losses its rules sampled."""
    hook = DiagnosticsHook()
    hook.series = RunSeries(
        num_classes=10, loss=losses, epoch_val_loss=val_losses or [], initial_loss=losses[0]
    )
    return hook


@pytest.mark.parametrize(
    "losses, val_losses, stops",
    [
        ([2.3, 1e5], None, True),  # x4e4 the chance loss: clear
        ([2.3, float("nan")], None, True),  # non-finite: clear
        ([2.3, 63.4], None, True),  # 28x: the CNN with Adam at 2.85, at chance when trained out
        ([2.3, 2.9], [float("inf")], True),  # a non-finite validation loss
        ([2.3, 13.3], None, False),  # 5.8x: Adam at 0.066 on digits, which trained on to 0.95
        (
            [2.3, 6.75],
            [71.5],
            False,
        ),  # 31x on validation only: the CNN with Adam at 0.81, on to 0.95
    ],
)
def test_a_blow_up_stops_at_once_only_when_it_is_clear(losses, val_losses, stops):
    hook = StopOnDiagnosis(level="critical", diagnostics=_diagnostics(losses, val_losses))
    state = _state(10, [issue("LOSS_EXPLOSION")])
    state.num_classes = 10
    hook.on_train_batch_end(state)
    assert state.stop_training is stops


@pytest.mark.parametrize("val_acc, stops", [(0.09, True), (0.60, False)])
def test_a_smaller_blow_up_stops_after_the_grace_only_at_chance(val_acc, stops):
    hook = StopOnDiagnosis(level="critical", grace=0.25, diagnostics=_diagnostics([2.3, 13.3]))
    state = _state(100, [issue("LOSS_EXPLOSION")])
    state.num_classes, state.metrics["val/acc"] = 10, val_acc
    hook.on_epoch_end(state)
    assert state.stop_training is stops
    assert stops is False or hook.stopped["code"] == "LOSS_EXPLOSION"


def _history(val_losses: list[float], lrs: list[float] | None = None) -> list[dict]:
    """The trainer's epoch history as stop_on reads it: 20 steps an epoch, as digits' 20-epoch runs."""
    lrs = lrs or [0.1] * len(val_losses)
    return [
        {"epoch": i, "step": 20 * (i + 1), "lr": lr, "val/loss": v, "val/acc": 0.2}
        for i, (v, lr) in enumerate(zip(val_losses, lrs))
    ]


def test_the_projection_runs_from_the_best_loss_at_twice_the_pace_of_the_last_validations():
    seen = project(_history([2.30, 2.28, 2.26, 2.24, 2.23]), step=100, max_steps=400)
    assert seen is not None
    # the pace over the last three validations (steps 40 -> 100), doubled, for the 300 steps left
    assert seen["rate_per_step"] == pytest.approx((2.28 - 2.23) / 60)
    assert seen["projected_val_loss"] == pytest.approx(2.23 - 2 * (0.05 / 60) * 300)
    assert seen["best_val_loss"] == 2.23 and seen["remaining_steps"] == 300


@pytest.mark.parametrize(
    "history",
    [
        _history([2.30, 2.29]),  # two validations: no pace yet
        _history([2.30, 2.29, float("nan")]),  # a non-finite validation: the blow-up rules' case
        _history([2.30, 2.29, 2.28], lrs=[0.01, 0.02, 0.03]),  # a warm-up: the LR still rising
    ],
)
def test_no_projection_without_a_pace_to_go_by(history):
    assert project(history, step=60, max_steps=400) is None


def _slow_state(val_losses: list[float], step: int, severity: str = "warning") -> FitState:
    state = _state(step, [issue("SLOW_CONVERGENCE", severity)])
    state.num_classes, state.history = 10, _history(val_losses)
    return state


# digits, 20 epochs, SGD with the MLP unless named; each curve's first five validations (step 100 of
# 400) and where it ended without stop_on (val acc; the grid's best is 0.986 for the MLP, 1.0 for the CNN)
MLP_SGD_1E4 = [2.3035, 2.2985, 2.2934, 2.2884, 2.2837]  # lr 1.2e-4: 0.375
MLP_SGD_1E3 = [2.2659, 2.2051, 2.1402, 2.0694, 1.9918]  # lr 1.5e-3: 0.799, still speeding up
CNN_ADAM_3E5 = [2.3359, 2.3149, 2.2505, 2.1867, 2.1269]  # Adam, lr 3.5e-5: 0.674


def test_a_slow_warning_stops_past_the_grace_when_its_curve_cannot_get_far_from_chance():
    hook = StopOnDiagnosis(level="critical", grace=0.25)
    state = _slow_state(MLP_SGD_1E4, step=100)
    hook.on_epoch_end(state)
    assert state.stop_training and hook.stopped is not None
    assert hook.stopped["code"] == "SLOW_CONVERGENCE" and hook.stopped["saved_steps"] == 300
    projection = hook.stopped["projection"]
    assert projection["projected_val_loss"] >= 0.75 * projection["chance_loss"]
    assert projection["chance_loss"] == pytest.approx(2.302585)
    assert "it cannot get far from chance in its budget" in state.stop_reason
    assert "SLOW_CONVERGENCE (warning) at step 100" in state.stop_reason


@pytest.mark.parametrize("validations", [3, 4, 5])  # from the early grace's first epoch end on
@pytest.mark.parametrize("curve", [MLP_SGD_1E3, CNN_ADAM_3E5])
def test_a_slow_run_whose_pace_can_take_it_far_from_chance_trains_on(curve, validations):
    state = _slow_state(curve[:validations], step=20 * validations)
    StopOnDiagnosis(level="critical", grace=0.25, early_grace=0.1).on_epoch_end(state)
    assert not state.stop_training


@pytest.mark.parametrize(
    "state",
    [
        _slow_state(MLP_SGD_1E4[:2], step=40),  # two validations: no pace to go by yet
        _slow_state(MLP_SGD_1E4, step=100, severity="info"),  # below a warning
        _state(100, []),  # no slow or stuck finding: the curve alone stops nothing
    ],
)
def test_a_flat_curve_stops_only_past_the_grace_with_a_slow_finding(state):
    if not state.history:
        state.num_classes, state.history = 10, _history(MLP_SGD_1E4)
    StopOnDiagnosis(level="critical", grace=0.25).on_epoch_end(state)
    assert not state.stop_training


def test_the_projection_waits_for_the_early_grace():
    # three validations by step 60, but the early grace asks for a fifth of the run here
    state = _slow_state(MLP_SGD_1E4[:3], step=60)
    StopOnDiagnosis(level="critical", grace=0.25, early_grace=0.2).on_epoch_end(state)
    assert not state.stop_training
    state = _slow_state(MLP_SGD_1E4[:4], step=80)
    StopOnDiagnosis(level="critical", grace=0.25, early_grace=0.2).on_epoch_end(state)
    assert state.stop_training


def test_a_run_at_its_last_step_is_never_stopped():
    # nothing left to save: stopping it would only cost it its test pass and its result
    for state in (_slow_state(MLP_SGD_1E4, step=400), _state(400, [issue("STUCK_AT_CHANCE")])):
        state.max_steps = 400
        hook = StopOnDiagnosis(level="critical")
        hook.on_epoch_end(state)
        assert not state.stop_training and hook.stopped is None


def test_with_the_autotrainer_a_slow_run_gets_its_lr_raised_before_the_projection_stops_it():
    repairer = autotrainer()
    slow = issue("SLOW_CONVERGENCE", "warning")
    hook = StopOnDiagnosis(level="critical", autotrainer=repairer)
    state = _slow_state(MLP_SGD_1E4, step=100)
    state.issues = [slow]
    hook.on_epoch_end(state)
    assert not state.stop_training  # raise_lr comes first
    repairer._give_up(state, slow, "SLOW_CONVERGENCE was already treated 3 times (limit 3)")
    hook.on_epoch_end(state)
    assert state.stop_training and hook.stopped is not None and "projection" in hook.stopped


def test_a_real_slow_run_stops_on_its_projection_and_says_so(tmp_path):
    # SGD at 3e-4 on digits: a SLOW_CONVERGENCE warning at step 80 of 120, val loss 2.27 of 2.30
    cfg = compose_cfg(
        [
            "optimizer=sgd",
            "optimizer.lr=3e-4",
            "stop_on=critical",
            "trainer.max_epochs=6",
            "objective_penalty=123.0",
        ],
        tmp_path,
    )
    assert run(cfg, tmp_path / "run") == 123.0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["stopped"] and report["metrics"]["epochs"] == 4
    assert "it cannot get far from chance in its budget" in report["stop_reason"]
    assert report["stop_reason"] in (tmp_path / "run" / "report.md").read_text()
    events = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    (stopped,) = [e for e in map(json.loads, events) if e["kind"] == "stopped"]
    assert stopped["code"] == "SLOW_CONVERGENCE" and stopped["step"] == 80
    assert stopped["saved_steps"] == 40 and stopped["max_steps"] == 120
    p = stopped["projection"]
    assert p["projected_val_loss"] >= p["need"] * p["chance_loss"] > 1.7


@pytest.mark.parametrize("plot", [False, True])
def test_a_stopped_run_draws_its_summary_only_when_asked(tmp_path, plot):
    cfg = compose_cfg(
        [
            "optimizer=sgd",
            "optimizer.lr=20",
            "stop_on=critical",
            "trainer.max_epochs=3",
            f"callbacks.stop_on.plot_stopped={str(plot).lower()}",
        ],
        tmp_path,
    )
    run(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["stopped"]
    assert (tmp_path / "run" / "summary.png").is_file() == plot
    said = "no summary.png for the stopped trial" in report["stop_reason"]
    assert said != plot
