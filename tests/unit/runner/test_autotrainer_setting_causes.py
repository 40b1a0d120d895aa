"""A stalled or stuck run whose cause is one of its settings gets that setting repaired, not the symptom:
clipping far too tight is turned off in place, a batch of 2 (or of the whole split) restarts at a sane
batch, a deep MLP without normalisation restarts with batch norm, ReLU and He init; sane settings are
never touched. Dropout of 0.9+ is lowered after a rollback to before the blow-up it made.

The symptom is named by a stand-in hook (as in test_autotrainer_causes), the runs are real and tiny.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg
from omegaconf import OmegaConf
from test_autotrainer_causes import (
    NamesCause,
    drive,
    fit,
    net,
    policy_for,
    spec,
    take_steps,
)

from runner.autotrainer.setting_causes import find
from runner.autotrainer.settings import Settings
from runner.autotrainer.snapshots import Snapshot
from runner.errors import UserError

RULES = Settings.from_config(spec()).setting_causes
TINY = ["data.subset=256", "model.hidden=[32]"]


@pytest.mark.parametrize(
    ("clip", "steps_per_epoch", "overrides", "expected"),
    [
        (1e-4, 20, [], "clip_too_tight"),
        (1.0, 20, [], None),  # the clip an explosion's rollback turns on is not a cause
        (None, 20, ["data.batch_size=2"], "batch_extreme"),
        (None, 1, ["data.batch_size=1294"], "batch_extreme"),
        (None, 2, ["data.batch_size=512"], None),  # the largest batch healthy recipes use (2 steps)
        (None, 162, ["data.batch_size=8"], None),
        (
            None,
            20,
            ["model.hidden=[32,32,32,32,32,32,32,32]", "model.batchnorm=false"],
            "deep_without_norm",
        ),
        (None, 20, ["model.hidden=[32,32,32,32,32,32,32,32]", "model.batchnorm=true"], None),
        (None, 20, ["model.hidden=[256,256]"], None),
        (None, 20, ["model.hidden=[64,64,64,64]", "model.batchnorm=false"], None),
        (
            None,
            20,
            ["model.hidden=[64,64,64,64,64,64]", "model.batchnorm=false"],
            "deep_without_norm",
        ),
        (None, 20, ["model.hidden=[1]"], "capacity_too_small"),  # one unit for ten classes
        (None, 20, ["model.hidden=[16]"], None),  # narrow, but wider than the classes
        (None, 20, ["model.bias_init=-5"], "bias_too_negative"),
        (None, 20, ["model.bias_init=0"], None),  # zero biases are a sane init
        (None, 20, ["model.dropout=0.95"], "dropout_too_strong"),
        (None, 20, ["model.dropout=0.5"], None),  # the most healthy recipes use
        (None, 20, ["optimizer.weight_decay=3"], "weight_decay_too_strong"),
        (None, 20, ["optimizer.weight_decay=0.05"], None),  # the most healthy recipes use
    ],
)
def test_which_settings_are_a_cause(clip, steps_per_epoch, overrides, expected) -> None:
    cause = find(compose_cfg(overrides), clip, steps_per_epoch, RULES)
    assert (cause.name if cause else None) == expected


@pytest.mark.parametrize("at_setup", [True, False])
def test_a_deep_net_without_norm_restarts_with_batch_norm_relu_and_he_init(at_setup: bool) -> None:
    """A 8-layer tanh MLP without batch norm: the restart's config drops what caused it. Read from the
    config at fit start, before any step (at_setup); without at_setup, at its first symptom (step 10)."""
    deep = (
        "model.hidden=[16,16,16,16,16,16,16,16]",
        "model.batchnorm=false",
        "model.activation=tanh",
    )
    causes = {**spec()["setting_causes"], "at_setup": at_setup}
    policy, state = policy_for(
        net(), torch.optim.SGD(net().parameters(), lr=0.1), cfg=deep, setting_causes=causes
    )
    drive(policy, state, [("STUCK_AT_CHANCE", "critical")], 20)
    (action,) = policy.actions
    assert (action["action"], action["cause"], action["step"], action["code"]) == (
        "restart",
        "deep_without_norm",
        0 if at_setup else 10,
        "VANISHING_GRADIENTS" if at_setup else "STUCK_AT_CHANCE",
    )
    if at_setup:
        assert action["evidence"].startswith("read from the config at set-up, before any step")
    assert policy.restart_request["changes"] == {
        "model.batchnorm": True,
        "model.activation": "relu",
        "model.init": "he",
        # two layers, widened from the fault's 16 to deep_width (256)
        "model.hidden": [256, 256],
    }
    assert action["detail"].startswith("cause: an MLP of 8 hidden layers without normalisation")


@pytest.mark.parametrize(
    ("hidden", "max_params", "expected"),
    [
        ([32] * 20, 250_000, [256, 256]),  # the fault's width is not the cause: deep_width
        ([512] * 6, 1_000_000, [512, 512]),  # never narrower than the net was
        ([32] * 12, 50_000, [128, 128]),  # [256, 256] is 85002 parameters on 8x8 digits: halved
        ([32] * 12, 20_000, [64, 64]),  # and [128, 128] 26122: halved again
        ([32] * 12, 5_000, [32, 32]),  # nothing wider fits: the net's own width
    ],
)
def test_a_deep_net_is_cut_to_two_layers_widened_within_the_budget(
    hidden: list[int], max_params: int, expected: list[int]
) -> None:
    cfg = compose_cfg([f"model.hidden=[{','.join(map(str, hidden))}]", "model.batchnorm=false"])
    capacity = {**spec()["setting_causes"]["capacity"], "max_params": max_params}
    rules = Settings.from_config(
        spec(setting_causes={**spec()["setting_causes"], "capacity": capacity})
    ).setting_causes
    cause = find(cfg, None, 20, rules)
    assert cause is not None and cause.changes["model.hidden"] == expected


def test_sane_settings_are_never_a_cause_and_the_table_decides() -> None:
    """A default recipe at chance with no explosion before: no setting to blame, and the table treats
    STUCK_AT_CHANCE only after an explosion's rollback: no action at all."""
    policy, state = policy_for(net(), torch.optim.SGD(net().parameters(), lr=0.1))
    drive(policy, state, [("STUCK_AT_CHANCE", "critical"), ("UNDERFITTING", "warning")], 200)
    assert policy.actions == [] and policy.restart_request is None


def test_the_setting_causes_table_is_checked() -> None:
    table = {**spec()["setting_causes"], "codes": ["NOT_A_CODE"]}
    with pytest.raises(
        UserError, match=r"setting_causes.codes: 'NOT_A_CODE' is not a diagnosis code"
    ):
        Settings.from_config(spec(setting_causes=table))
    table = {k: v for k, v in spec()["setting_causes"].items() if k != "batch"}
    with pytest.raises(UserError, match=r"setting_causes: batch missing"):
        Settings.from_config(spec(setting_causes=table))


def test_dropout_far_too_strong_is_lowered_after_a_rollback_to_before_the_blow_up() -> None:
    """Dropout 0.95 alone (no weight decay): back to a snapshot from before the problem began, then lowered."""
    model = net(dropout=0.95)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    policy, state = policy_for(model, opt)
    drive(policy, state, [], 60)  # healthy steps: snapshots at 25 and 50
    good = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e4)  # what the blow-up did to the weights
    drive(policy, state, [("TOO_MUCH_REGULARIZATION", "critical")], 20)
    (action,) = policy.actions
    assert action["action"] == "lower_regularization"
    assert action["detail"].startswith("rolled back to step 50") and model[2].p == 0.1
    assert all(torch.equal(p, g) for p, g in zip(model.parameters(), good))


@pytest.mark.slow
def test_clipping_far_too_tight_is_turned_off_in_a_real_run(tmp_path: Path) -> None:
    """clip 1e-4 and a stalled run: clipping off in place (not an LR raise), the effect measured."""
    fault = [*TINY, "optimizer=sgd", "data.batch_size=16", "trainer.max_epochs=4"]
    fault.append("trainer.clip.max_norm=1e-4")  # at chance after 4 epochs (0.07)
    # at its symptom (at set-up it is loosened before any step, with nothing before it to measure)
    fault.append("callbacks.autotrainer.setting_causes.at_setup=false")
    fixed = fit(
        [*fault, "autotrainer=default"], tmp_path, "fixed", NamesCause("SLOW_CONVERGENCE", 10)
    )
    (action,) = [a for a in fixed["actions"] if a["action"] != "give_up"]
    assert (action["action"], action["cause"], action["step"]) == (
        "loosen_clip",
        "clip_too_tight",
        10,
    )
    assert action["changes"] == {"trainer.clip.max_norm": None}
    assert action["lr_before"] == action["lr_after"]  # the LR was not the cause
    assert fixed["state"].loop.clip_max_norm is None
    assert action["measured"]["verdict"] == "improved"
    assert fixed["acc"] > 0.5  # chance is 0.1


@pytest.mark.slow
def test_a_batch_of_two_restarts_at_a_sane_batch_in_a_real_run(tmp_path: Path) -> None:
    """The attempt loop for real: the batch read from the config at set-up (no symptom needed), attempt-1
    runs at batch 64, and the restart's outcome is recorded."""
    from runner.app import run

    # the default two layers of 256: a [32] layer underfits in 40 steps and restarts again for capacity
    cfg = compose_cfg(
        ["data.subset=256", "autotrainer=default", "data.batch_size=2", "trainer.max_steps=40"],
        tmp_path,
    )
    out = tmp_path / "run"
    run(cfg, out)
    report = json.loads((out / "report.json").read_text())
    restart = report["autotrainer"]["actions"][0]
    assert (restart["action"], restart["cause"], restart["step"]) == (
        "restart",
        "batch_extreme",
        0,  # read from the config at set-up: no step spent at batch 2
    )
    assert restart["changes"] == {"data.batch_size": 64}
    attempts = report["autotrainer"]["attempts"]
    assert [a["dir"] for a in attempts] == [".", "attempt-1"]
    used = OmegaConf.load(out / "attempt-1" / ".hydra" / "config.yaml")
    assert used.data.batch_size == 64  # the setting that caused it is gone
    assert restart["outcome"].startswith("attempt-1 ended")
    assert restart["measured"]["verdict"] == "not measured"  # no step ran before it
    assert attempts[0]["steps"] == 0


def test_still_at_chance_after_an_explosion_goes_back_to_the_starting_weights_with_the_cuts_kept() -> (
    None
):
    """Every snapshot after the explosion may be damaged: the weights go back to the fit start, the LR
    keeps the first rollback's cut and is cut again, and the optimizer's moments are reset. In place when
    no restart may be made (max_restarts 0; else test_still_at_chance_after_an_explosion_restarts...)."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    policy, state = policy_for(model, opt, max_restarts=0)
    start = [p.detach().clone() for p in model.parameters()]
    drive(policy, state, [], 30)  # a healthy snapshot at step 25
    with torch.no_grad():
        for p in model.parameters():
            p.add_(5.0)  # what the explosion did, before the snapshot the first rollback returns to
    policy.snapshots.append(Snapshot.take(state))
    drive(policy, state, [("LOSS_EXPLOSION", "critical")], 20)
    take_steps(model, opt)  # momentum buffers from the damaged weights
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and len(opt.state) > 0
    drive(policy, state, [("STUCK_AT_CHANCE", "critical")], 60)
    stuck = policy.actions[-1]
    assert (stuck["action"], stuck["code"]) == ("rollback", "STUCK_AT_CHANCE")
    assert stuck["detail"].startswith("weights back to the fit start (step 0)")
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01) and len(opt.state) == 0


def test_still_at_chance_after_an_explosion_restarts_at_the_cut_lr_without_the_clipping() -> None:
    """The same, with restarts allowed: the rollback to the fit start is made as a restart at the LR both
    cuts reached (the recipe's x0.1 x0.1), so that LR has the run's whole schedule, and without the
    clipping the explosion's rollback turned on (the LR that caused the explosion is repaired)."""
    from runner.trainer import Trainer

    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    loop = Trainer(max_epochs=1)
    policy, state = policy_for(model, opt, cfg=("optimizer=sgd", "optimizer.lr=1.0"), loop=loop)
    drive(policy, state, [], 30)
    drive(policy, state, [("LOSS_EXPLOSION", "critical")], 20)
    assert loop.clip_max_norm == 1.0  # turned on by the explosion's rollback
    drive(policy, state, [("STUCK_AT_CHANCE", "critical")], 60)
    stuck = policy.actions[-1]
    assert (stuck["action"], stuck["code"]) == ("restart", "STUCK_AT_CHANCE")
    assert stuck["detail"].startswith(
        "LR repair made as a restart at the repaired LR: rollback x0.1"
    )
    assert policy.restart_request["changes"] == {"optimizer.lr": pytest.approx(0.01)}
    assert "clipping (max_norm 1) the explosion turned on is not carried" in stuck["detail"]


def test_biases_far_below_zero_restart_with_the_default_biases_and_the_lr_kept() -> None:
    """Every bias at -10 (ReLU units start off): read from the config at set-up, a restart whose only
    change is the model's default biases; the DEAD_NEURONS rule's leaky ReLU and LR halving are not
    applied (the LR was not the cause: dev cases restarted with it ended 2-3 points under their twins)."""
    policy, state = policy_for(
        net(), torch.optim.SGD(net().parameters(), lr=0.1), cfg=("model.bias_init=-10",)
    )
    (action,) = policy.actions
    assert (action["action"], action["cause"], action["step"], action["code"]) == (
        "restart",
        "bias_too_negative",
        0,
        "DEAD_NEURONS",
    )
    assert policy.restart_request["changes"] == {"model.bias_init": None}
    assert action["detail"].startswith("cause: every bias filled with -10")
