"""The AutoTrainer repairs sick runs of the real runner, keeps schedules' shape, respects its limits.

Runs are the real runner on digits, composed in-process; every run directory is in ``tmp_path``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from helpers import ROOT, compose_cfg, event_file, run_cli
from omegaconf import OmegaConf
from tbparse import SummaryReader

from diag.hooks import FitState
from diag.live import DiagnosticsHook
from runner.app import run
from runner.autotrainer import AutoTrainer, Session, scale_lr
from runner.autotrainer.state import PolicyState
from runner.errors import UserError
from runner.schedulers import warmup_cosine

DEFAULT = OmegaConf.load(ROOT / "runner" / "conf" / "autotrainer" / "default.yaml")


def run_dir_of(overrides: list[str], tmp_path: Path, name: str = "run") -> Path:
    cfg = compose_cfg(overrides, tmp_path)
    out = tmp_path / name
    run(cfg, out)
    return out


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


# -- the scheduler keeps its shape ---------------------------------------------------------
SCHEDULES = {
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3),
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=30),
    "warmup_cosine": lambda o: warmup_cosine(o, total_steps=30, warmup_steps=5),
    "plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, patience=1, factor=0.5, min_lr=1e-4
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_cut_scales_the_schedule_instead_of_being_overwritten(name: str) -> None:
    """lr(t) after a x0.1 cut equals 0.1 x lr(t) of the same schedule left alone, at every later step."""

    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.2, momentum=0.9)
        return opt, SCHEDULES[name](opt)

    (ref_opt, ref), (cut_opt, cut) = make(), make()
    metrics = [
        1.0,
        0.9,
        0.9,
        0.9,
        0.95,
        0.8,
        0.8,
        0.8,
        0.8,
        0.8,
    ] * 3  # plateaus for ReduceLROnPlateau

    def step(opt: torch.optim.Optimizer, sched, t: int) -> None:
        opt.step()  # a no-op without gradients; keeps torch's optimizer-before-scheduler order
        sched.step(metrics[t]) if name == "plateau" else sched.step()

    for t in range(6):
        step(ref_opt, ref, t)
        step(cut_opt, cut, t)
    scale_lr(cut_opt, cut, 0.1)
    assert cut_opt.param_groups[0]["lr"] == pytest.approx(0.1 * ref_opt.param_groups[0]["lr"])
    seen = set()
    for t in range(6, 25):
        step(ref_opt, ref, t)
        step(cut_opt, cut, t)
        lr_ref, lr_cut = ref_opt.param_groups[0]["lr"], cut_opt.param_groups[0]["lr"]
        seen.add(round(lr_ref, 9))
        assert lr_cut == pytest.approx(0.1 * lr_ref, rel=1e-6), (name, t)
    assert len(seen) > 1, (
        "the schedule must have moved after the cut for this test to mean anything"
    )


# -- the policy's limits and cooldowns (real model, optimizer and diagnostics hook) ---------------------------
def policy_state(cfg: tuple[str, ...] = (), **overrides) -> tuple[AutoTrainer, FitState]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = FitState(model=model, optimizer=opt, max_steps=1000, num_classes=2)
    state.loss, state.grad_norm = torch.tensor(0.5), torch.tensor(1.0)
    spec = {
        k: v
        for k, v in {**OmegaConf.to_container(DEFAULT, resolve=True), **overrides}.items()
        if not k.startswith("_")
    }
    diagnostics = DiagnosticsHook()
    diagnostics.on_fit_start(state)
    policy = AutoTrainer(
        **spec, session=Session(), cfg=compose_cfg(list(cfg)), diagnostics=diagnostics
    )
    policy.on_fit_start(state)
    return policy, state


def drive(
    policy: AutoTrainer, state: FitState, code: str, steps: int, severity: str = "warning"
) -> None:
    """A diagnosis that keeps reporting ``code`` at every step (as a sick run would)."""
    for step in range(1, steps + 1):
        state.step = step
        state.issues = [
            {
                "code": code,
                "severity": severity,
                "first_step": step,
                "evidence": "test",
                "recommendations": [],
            }
        ]
        policy.on_train_batch_end(state)


def test_cooldown_and_per_code_limit_then_one_give_up() -> None:
    policy, state = policy_state(cooldown_steps=50, max_per_code=3)
    drive(policy, state, "LOSS_OSCILLATION", 400)
    acted = [a for a in policy.actions if a["action"] == "scale_lr"]
    assert [a["step"] for a in acted] == [10, 60, 110]  # check_every=10, then never within 50 steps
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert [a["lr_after"] / a["lr_before"] for a in acted] == pytest.approx([0.5] * 3)
    give_up = [a for a in policy.actions if a["action"] == "give_up"]
    assert len(give_up) == 1 and give_up[0]["step"] == 160 and "limit 3" in give_up[0]["outcome"]


def test_total_action_limit_holds_across_codes() -> None:
    policy, state = policy_state(cooldown_steps=10, max_actions=2)
    drive(policy, state, "LOSS_OSCILLATION", 50)
    drive(policy, state, "SLOW_CONVERGENCE", 50)
    counted = [a for a in policy.actions if a["action"] != "give_up"]
    assert len(counted) == 2
    assert any(
        "limit of 2 actions" in a["outcome"] for a in policy.actions if a["action"] == "give_up"
    )


def test_restart_refused_when_restarts_are_used_up() -> None:
    policy, state = policy_state(max_restarts=1)
    policy.session.attempt = 1
    drive(policy, state, "VANISHING_GRADIENTS", 30, severity="critical")
    assert policy.restart_request is None and not state.stop_training
    assert [a["action"] for a in policy.actions] == ["give_up"]
    assert "1 restarts" in policy.actions[0]["outcome"]


def test_warning_never_triggers_a_restart() -> None:
    policy, state = policy_state()
    drive(policy, state, "DEAD_NEURONS", 100, severity="warning")
    assert policy.actions == [] and policy.restart_request is None


def test_a_bad_init_restarts_at_a_warning_as_the_policy_table_says() -> None:
    """restarts.BAD_INITIALIZATION.min_severity=warning: found at the first steps, a restart costs almost nothing."""
    policy, state = policy_state(cfg=("model.init_scale=10",))
    drive(policy, state, "BAD_INITIALIZATION", 20, severity="warning")
    (action,) = policy.actions
    assert (action["action"], action["step"]) == ("restart", 10) and state.stop_training
    assert policy.restart_request["changes"]["model.init_scale"] == 1.0

    policy, state = policy_state(
        cfg=("model.init_scale=10",),
        restarts={
            **OmegaConf.to_container(DEFAULT.restarts),
            "BAD_INITIALIZATION": {"changes": {"model": {"init_scale": 1.0}}},
        },
    )
    # without min_severity: critical only
    drive(policy, state, "BAD_INITIALIZATION", 20, severity="warning")
    assert policy.actions == [] and policy.restart_request is None


def test_regularize_raises_weight_decay_and_dropout_in_place() -> None:
    """Weight decay up to the policy's value (x factor where set; groups at 0 among decaying ones stay 0), dropout up."""
    policy, state = policy_state()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2)
    )
    state.model = model
    state.optimizer = torch.optim.Adam(
        [
            {"params": model[0].parameters(), "weight_decay": 0.0},
            {"params": model[3].parameters(), "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    drive(policy, state, "OVERFITTING", 10)
    (action,) = policy.actions
    assert action["action"] == "regularize" and action["code"] == "OVERFITTING"
    assert [g["weight_decay"] for g in state.optimizer.param_groups] == [1e-2, 1e-2]
    # the LR is left alone
    assert model[2].p == 0.5 and state.optimizer.param_groups[0]["lr"] == 1e-3
    assert action["changes"] == {"optimizer.weight_decay": 1e-2, "model.dropout": 0.5}

    policy, state = policy_state()
    state.optimizer = torch.optim.AdamW(
        [
            {"params": state.model[0].parameters(), "weight_decay": 0.05},
            {"params": state.model[2].parameters(), "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    drive(policy, state, "OVERFITTING", 10)
    assert [g["weight_decay"] for g in state.optimizer.param_groups] == pytest.approx([0.5, 0.0])


def test_a_checkpoint_carries_the_repairs_that_live_outside_model_and_optimizer(
    tmp_path: Path, caplog
) -> None:
    """Clipping (the loop's), dropout (a module attribute), the best-validation weights and the action list
    survive a save through torch.save/torch.load(weights_only=True) into a freshly built policy and model."""
    from runner.trainer import Trainer

    policy, state = policy_state()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2)
    )
    state.model, state.optimizer = model, torch.optim.Adam(model.parameters(), lr=1e-3)
    state.loop = Trainer(max_epochs=1, progress=False)
    state.metrics.update({"val/loss": 0.4, "val/acc": 0.9})
    policy.on_validation_end(state)  # the best-validation weights so far
    best = {k: v.clone() for k, v in model.state_dict().items()}
    # regularize: dropout 0.1 -> 0.5 (critical: a warning with val accuracy not falling is left alone)
    drive(policy, state, "OVERFITTING", 10, severity="critical")
    state.loss = torch.tensor(float("nan"))
    drive(policy, state, "LOSS_EXPLOSION", 10)  # rollback: clipping turned on
    assert [a["action"] for a in policy.actions] == [
        "regularize",
        "rollback",
    ] and state.loop.clip_max_norm == 1.0
    torch.save(policy.state_dict(), tmp_path / "hooks.pt")

    # a new process: config-built model (dropout 0.1), loop without clipping
    resumed, fresh = policy_state()
    fresh.model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2)
    )
    fresh.loop = Trainer(max_epochs=1, progress=False)
    resumed.load_state_dict(torch.load(tmp_path / "hooks.pt", weights_only=True))
    with caplog.at_level(logging.WARNING, logger="runner.autotrainer"):
        resumed.on_fit_start(fresh)
    assert fresh.loop.clip_max_norm == 1.0 and fresh.model[2].p == 0.5
    assert [a["action"] for a in resumed.actions] == [
        "regularize",
        "rollback",
    ] and fresh.actions is resumed.actions
    kept = resumed.carried.best
    assert kept is not None and kept.val_loss == 0.4 and kept.val_acc == 0.9
    assert all(torch.equal(kept.model[k], v) for k, v in best.items())
    assert resumed.carried.seen_codes == {"OVERFITTING", "LOSS_EXPLOSION"}
    assert (
        "resumed with its earlier repairs: gradient clipping (max_norm 1), dropout 0.5"
        in caplog.text
    )


def test_built_as_the_train_task_builds_it() -> None:
    """instantiate(node, session=..., cfg=..., diagnostics=...): the same session and diagnostics objects, and
    the run's config is passed as config, not built (its model, data and optimizer nodes have _target_s)."""
    from hydra.utils import instantiate

    cfg = compose_cfg(["autotrainer=default"])
    session, diagnostics = Session(), DiagnosticsHook()
    policy = instantiate(
        cfg.callbacks.autotrainer, session=session, cfg=cfg, diagnostics=diagnostics
    )
    assert (
        isinstance(policy, AutoTrainer)
        and policy.session is session
        and policy.diagnostics is diagnostics
    )
    assert OmegaConf.is_config(policy.cfg.model) and policy.cfg.optimizer.lr == cfg.optimizer.lr
    # the YAML's value, the only default
    assert policy.settings.online["SLOW_CONVERGENCE"].max_factor == 1e5


def test_fit_without_the_diagnostics_hook_is_a_user_error() -> None:
    spec = {
        k: v
        for k, v in OmegaConf.to_container(DEFAULT, resolve=True).items()
        if not k.startswith("_")
    }
    policy = AutoTrainer(**spec)
    with pytest.raises(UserError, match="needs the live diagnosis"):
        policy.on_fit_start(FitState(model=torch.nn.Linear(2, 2)))


def test_checkpoint_and_ddp_decision_carry_the_same_fields() -> None:
    """state_dict and rank 0's decision are both PolicyState.as_dict: one field list, read back alike."""
    policy, state = policy_state()
    drive(policy, state, "LOSS_OSCILLATION", 10)
    saved = policy.state_dict()
    assert set(saved) == set(PolicyState().as_dict())
    back = PolicyState.from_dict(saved)
    assert (
        back.actions == policy.actions
        and back.lr_scale == pytest.approx(0.5)
        and back.last_acted == {"LOSS_OSCILLATION": 10}
    )


@pytest.mark.parametrize(
    "override, named",
    [
        (
            "callbacks.autotrainer.online.OVERFITTING.weight_decay=0 callbacks.autotrainer.online."
            "OVERFITTING.dropout=null",
            "regularize needs",
        ),
        ("callbacks.autotrainer.restore_best.codes=[OVERFITING]", "OVERFITING"),
        (
            "callbacks.autotrainer.online.LOSS_OSCILLATION.action=halve",
            "online.LOSS_OSCILLATION.action",
        ),
        ("+callbacks.autotrainer.restarts.NOT_A_CODE.changes.model.init=he", "NOT_A_CODE"),
        (
            "callbacks.autotrainer.restarts.BAD_INITIALIZATION.min_severity=warn",
            "restarts.BAD_INITIALIZATION.min_severity='warn' is not valid",
        ),
        ("~callbacks.autotrainer.online.SLOW_CONVERGENCE.max_factor", "raise_lr needs max_factor"),
        ("~callbacks.autotrainer.cooldown_steps", "cooldown_steps missing"),
        ("+callbacks.autotrainer.online.LOSS_OSCILLATION.lr_facter=0.5", "unknown key lr_facter"),
    ],
)
def test_a_typo_in_the_policy_table_is_a_user_error(
    tmp_path: Path, override: str, named: str
) -> None:
    cfg = compose_cfg(["autotrainer=default", *override.split()], tmp_path)
    with pytest.raises(UserError, match=named):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_autotrainer_without_diagnostics_is_a_user_error(tmp_path: Path) -> None:
    cfg = compose_cfg(["autotrainer=default", "diag=off"], tmp_path)
    with pytest.raises(UserError, match="diag"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- real runs -------------------------------------------------------------------------------
HEALTHY = ["trainer.max_epochs=6", "trainer.deterministic=true"]


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory) -> Path:
    """A healthy run with the AutoTrainer on, which the tests only read (each worker trains it once):
    deterministic, so the same run without the AutoTrainer can be compared with it."""
    return run_dir_of(["autotrainer=default", *HEALTHY], tmp_path_factory.mktemp("healthy"))


@pytest.mark.slow
def test_healthy_run_gets_no_action(healthy_run: Path) -> None:
    report = read(healthy_run / "report.json")
    assert report["autotrainer"]["actions"] == []
    assert events(healthy_run, "autotrainer") == []
    assert not (healthy_run / "attempt-1").exists()
    assert report["metrics"]["test_acc"] > 0.9


@pytest.mark.slow
def test_healthy_run_is_untouched_by_the_best_weights_kept_for_early_stopping(
    tmp_path: Path, healthy_run: Path
) -> None:
    """Keeping the best-validation weights copies them, nothing more: the same run with and without it."""
    on = read(healthy_run / "report.json")
    off = read(run_dir_of(HEALTHY, tmp_path, "off") / "report.json")
    assert on["autotrainer"]["actions"] == []
    for key in ("test_loss", "test_acc", "final_val_loss", "best_val_loss", "final_train_loss"):
        assert on["metrics"][key] == off["metrics"][key], key


OVERFIT = [
    "data.subset=64",
    "data.batch_size=16",
    "model.hidden=[512,512]",
    "trainer.max_epochs=60",
]


@pytest.mark.slow
def test_overfitting_run_is_regularized_online(tmp_path: Path) -> None:
    """The regularize mechanics, its sustained-evidence gate off (with it, see the next test)."""
    out = run_dir_of(
        [
            "autotrainer=default",
            *OVERFIT,
            "callbacks.autotrainer.online.OVERFITTING.sustained=null",
        ],
        tmp_path,
    )
    report = read(out / "report.json")
    acted = [a for a in report["autotrainer"]["actions"] if a["action"] == "regularize"]
    assert (
        len(acted) == 1 and acted[0]["code"] == "OVERFITTING" and acted[0]["outcome"] != "applied"
    )
    changes = acted[0]["changes"]
    assert changes["optimizer.weight_decay"] == 1e-2 and changes["model.dropout"] == 0.5
    assert acted[0]["lr_before"] == acted[0]["lr_after"]  # regularising leaves the schedule alone
    if "weights" in changes:  # rolled back to the best-validation weights of an earlier epoch
        assert "best-validation weights" in acted[0]["detail"]
    assert not (out / "attempt-1").exists()  # online: no restart
    logged = events(out, "autotrainer")
    assert logged[0]["action"] == "regularize" and logged[0]["step"] == acted[0]["step"]
    assert "OVERFITTING → regularize" in (out / "report.md").read_text()
    tb = SummaryReader(event_file(out))
    assert (
        tb.scalars[tb.scalars.tag == "x_autotrainer/lr_factor"].step.tolist()[0] == acted[0]["step"]
    )
    # without the AutoTrainer the same run's best validation loss is worse
    plain = read(run_dir_of(OVERFIT, tmp_path, "plain") / "report.json")
    assert report["metrics"]["best_val_loss"] < plain["metrics"]["best_val_loss"]


@pytest.mark.slow
def test_memorising_without_an_accuracy_fall_is_not_changed_before_the_end(tmp_path: Path) -> None:
    """64 examples memorised (training accuracy 0.98 against validation 0.83) while validation accuracy
    stays within the noise of its 144 examples: ordinary overfitting, no change during the run; the end
    (the diagnosis still names it) tests the best-validation weights."""
    out = run_dir_of(["autotrainer=default", *OVERFIT], tmp_path)
    report = read(out / "report.json")
    assert [a["action"] for a in report["autotrainer"]["actions"]] == ["restore_best"]
    assert "OVERFITTING" in {i["code"] for i in report["issues"]}


@pytest.mark.slow
def test_run_that_ends_overfitting_is_tested_with_its_best_validation_weights(
    tmp_path: Path,
) -> None:
    """Early stopping alone (regularize off): the weights tested are best.pt's, the best validation loss."""
    out = run_dir_of(
        [
            "autotrainer=default",
            *OVERFIT,
            "~callbacks.autotrainer.online.OVERFITTING",
            "callbacks.autotrainer.restore_best.unless_val_acc_drops=false",
        ],
        tmp_path,
    )
    report = read(out / "report.json")
    (restore,) = [a for a in report["autotrainer"]["actions"] if a["action"] == "restore_best"]
    assert restore["code"] == "OVERFITTING" and restore["step"] == report["metrics"]["steps"]
    assert restore["last_val_loss"] > 1.05 * restore["best_val_loss"]
    assert restore["outcome"].startswith(
        f"tested with the epoch-{restore['best_epoch']} weights (test_acc"
    )
    m = report["metrics"]
    assert restore["best_val_loss"] == pytest.approx(m["best_val_loss"], rel=1e-9)
    # the final val metrics: weights tested
    assert m["final_val_loss"] == pytest.approx(m["best_val_loss"], rel=1e-9)
    # best.pt (saved by the checkpoint hook on the best val loss) holds the same weights: evaluate them again
    from hydra.utils import instantiate

    from runner.trainer import Trainer

    cfg = compose_cfg(OVERFIT, tmp_path)
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] + 1 == restore["best_epoch"]
    data = instantiate(cfg.data)
    data.setup()
    model = instantiate(cfg.model)
    model.load_state_dict(best["model"])
    trainer = Trainer(max_epochs=1, progress=False)
    assert trainer.evaluate(model, data.loader("val", device=torch.device("cpu")))[
        "loss"
    ] == pytest.approx(m["best_val_loss"], rel=1e-5)
    test = trainer.evaluate(model, data.loader("test", device=torch.device("cpu")))
    assert test["loss"] == pytest.approx(m["test_loss"], rel=1e-5) and test["acc"] == pytest.approx(
        m["test_acc"]
    )
    assert events(out, "autotrainer")[-1]["action"] == "restore_best"
    assert "OVERFITTING → restore_best" in (out / "report.md").read_text()


@pytest.mark.slow
def test_exploding_lr_is_rolled_back_and_ends_finite_and_accurate(tmp_path: Path) -> None:
    out = run_dir_of(
        ["autotrainer=default", "optimizer=sgd", "optimizer.lr=5", "trainer.max_epochs=12"],
        tmp_path,
    )
    report = read(out / "report.json")
    actions = report["autotrainer"]["actions"]
    first = actions[0]
    assert (
        first["code"] in ("LOSS_EXPLOSION", "NONFINITE_GRADIENTS") and first["action"] == "rollback"
    )
    assert 0 < first["lr_before"] <= 5.0 and first["lr_after"] == pytest.approx(
        0.1 * first["lr_before"]
    )
    assert first["changes"]["trainer.clip.max_norm"] == 1.0
    assert "rolled back to step" in first["detail"]
    logged = events(out, "autotrainer")
    assert logged[0]["action"] == "rollback" and logged[0]["step"] == first["step"]
    final_dir = out / report["autotrainer"].get("final_attempt", ".")
    weights = torch.load(final_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    assert report["metrics"]["test_acc"] > 0.9
    assert math.isfinite(report["metrics"]["final_train_loss"])
    assert "## AutoTrainer" in (out / "report.md").read_text()
    tb = SummaryReader(event_file(out))
    # the LR factor each action applied
    markers = tb.scalars[tb.scalars.tag == "x_autotrainer/lr_factor"]
    assert markers.step.tolist()[0] == first["step"]
    assert markers.value.tolist()[0] == pytest.approx(
        first["lr_after"] / first["lr_before"], rel=1e-4
    )
    texts = tb.text[tb.text.tag.str.startswith("x_autotrainer")]
    assert "rollback" in texts.value.tolist()[0] and texts.step.tolist()[0] == first["step"]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_actions_and_its_clipping(tmp_path: Path, caplog) -> None:
    """The first launch stops after 2 of 4 epochs (as a killed job would, with its epoch checkpoint)."""
    exploding = ["autotrainer=default", "optimizer=sgd", "optimizer.lr=5", "trainer.max_epochs=4"]
    out = run_dir_of([*exploding, "trainer.max_steps=40"], tmp_path)
    (first,) = read(out / "report.json")["autotrainer"]["actions"]
    assert first["action"] == "rollback" and first["changes"]["trainer.clip.max_norm"] == 1.0
    with caplog.at_level(logging.INFO):
        run(compose_cfg([*exploding, "trainer.resume=auto"], tmp_path), out)
    assert "resumed from" in caplog.text
    assert (
        "autotrainer: resumed with its earlier repairs: gradient clipping (max_norm 1)"
        in caplog.text
    )
    report = read(out / "report.json")
    actions = report["autotrainer"]["actions"]
    assert actions[0]["step"] == first["step"] and actions[0]["action"] == "rollback"
    assert actions[0]["outcome"] != "applied"  # judged at the end of the resumed run
    # 20 steps per epoch
    assert report["metrics"]["steps"] == 80 and report["metrics"]["test_acc"] > 0.9
    assert f"step {first['step']}: {first['code']} → rollback" in (out / "report.md").read_text()


@pytest.mark.slow
def test_diag_analyze_says_what_the_autotrainer_already_changed(tmp_path: Path, capsys) -> None:
    from diag.analyze import main as analyze

    # the real CLI: Hydra writes .hydra/config.yaml, where analyze learns the 10 classes
    out = tmp_path / "run"
    run_cli(
        ["autotrainer=default", "optimizer=sgd", "optimizer.lr=20", "trainer.max_epochs=2"],
        tmp_path,
        run_dir=out,
    )
    (action,) = read(out / "report.json")["autotrainer"]["actions"]
    assert analyze([str(out)]) == 0
    text = capsys.readouterr().out
    diagnosis, tail = text.split("DIAGNOSIS:")[1].split(
        "AUTOTRAINER (what it already changed in this run)"
    )
    # the run as the AutoTrainer left it: the findings it repaired are not raised again, nor their fixes
    assert f"steps after its last repair (step {action['step']})" in diagnosis
    assert "CRITICAL" not in diagnosis and "Reduce the learning rate" not in diagnosis
    # and what it already changed is said once, in its own section
    assert f"step {action['step']}: {action['code']} → rollback (rolled back to step" in tail
    assert "gradient clipping on (max_norm 1)" in tail and action["outcome"] in tail


@pytest.mark.slow
def test_deep_sigmoid_gets_a_guided_restart_with_the_changed_config(tmp_path: Path, caplog) -> None:
    fault = [
        "model.activation=sigmoid",
        "model.hidden=[64,64,64,64,64,64,64,64]",
        "optimizer=sgd",
        "optimizer.lr=0.05",
    ]
    caplog.set_level(logging.INFO, logger="runner")
    # the restart at its symptom, mid-run (at set-up the depth alone restarts it before any step:
    # test_autotrainer_setting_causes, test_autotrainer_setup)
    late = "callbacks.autotrainer.setting_causes.at_setup=false"
    out = run_dir_of(["autotrainer=default", "trainer.max_epochs=8", late, *fault], tmp_path)
    said = [r.getMessage() for r in caplog.records]
    stopped = [m for m in said if m.startswith("attempt stopped for a guided restart")]
    assert len(stopped) == 1 and f"its files are in {out}" in stopped[0], said
    # one final block: attempt-1's
    assert sum("test accuracy" in m and "best val loss" in m for m in said) == 1
    report = read(out / "report.json")
    restart = next(a for a in report["autotrainer"]["actions"] if a["action"] == "restart")
    assert restart["code"] in ("VANISHING_GRADIENTS", "SATURATED_ACTIVATIONS")
    # eight layers without normalisation: the setting that causes it is repaired, depth cut to two
    # (widened from 64 to deep_width)
    assert restart["cause"] == "deep_without_norm"
    assert restart["changes"] == {
        "model.batchnorm": True,
        "model.activation": "relu",
        "model.init": "he",
        "model.hidden": [256, 256],
    }
    assert restart["outcome"].startswith("attempt-1 ended")
    attempt = out / "attempt-1"
    assert not (
        out / "summary.png"
    ).exists()  # plot_stopped_attempts=false: the stopped attempt skips it
    for name in (
        "report.json",
        "report.md",
        "events.jsonl",
        "checkpoints/last.pt",
        ".hydra/config.yaml",
        "summary.png",
    ):
        assert (attempt / name).exists(), name
    event_file(attempt)  # its own TensorBoard run, attempt-1 beside the first attempt's
    cfg = OmegaConf.load(attempt / ".hydra" / "config.yaml")
    assert (cfg.model.activation, cfg.model.init, cfg.model.batchnorm) == ("relu", "he", True)
    assert list(cfg.model.hidden) == [256, 256]
    assert list(OmegaConf.load(attempt / ".hydra" / "overrides.yaml")) == [
        "model.batchnorm=True",
        "model.activation=relu",
        "model.init=he",
        "model.hidden=[256, 256]",
    ]
    inner = read(attempt / "report.json")
    assert report["metrics"] == inner["metrics"]  # the top level shows the final attempt
    attempts = report["autotrainer"]["attempts"]
    assert [a["dir"] for a in attempts] == [".", "attempt-1"] and report["autotrainer"][
        "final_attempt"
    ] == "attempt-1"
    assert attempts[0]["changes"] == {} and attempts[1]["changes"] == restart["changes"]
    assert attempts[0]["stopped_for"] == restart["code"] and attempts[1]["stopped_for"] is None
    # attempt 0 stopped early
    assert report["autotrainer"]["attempts"][0]["steps"] < inner["metrics"]["steps"]
    assert report["metrics"]["test_acc"] > 0.9
    assert events(out, "autotrainer")[0]["action"] == "restart"
    assert "fit_end" in {
        e["kind"] for e in map(json.loads, (attempt / "events.jsonl").read_text().splitlines())
    }
    # TensorBoard: attempt-1's curves continue attempt 0's step axis, and it says what it changed
    first, second = SummaryReader(event_file(out)), SummaryReader(event_file(attempt))
    stopped_at = attempts[0]["steps"]
    assert first.scalars[first.scalars.tag == "train/loss"].step.max() <= stopped_at
    assert second.scalars[second.scalars.tag == "train/loss"].step.min() > stopped_at
    note = second.text[second.text.tag == "x_autotrainer/attempts"].value.tolist()
    assert note == [
        "attempt-1: model.batchnorm=True, model.activation=relu, model.init=he, model.hidden=[256, 256]"
    ]


@pytest.mark.slow
def test_oscillation_cut_keeps_the_cosine_schedule_in_a_real_run(tmp_path: Path) -> None:
    """Read back from TensorBoard: after the x0.5 cut every LR is 0.5 x the closed-form cosine of its epoch."""
    out = run_dir_of(
        [
            "autotrainer=default",
            "optimizer=adam",
            "optimizer.lr=0.03",
            "data.batch_size=16",
            "scheduler=cosine",
            "trainer.max_epochs=6",
            # its dead units (a warning at step 200) would restart it with the LR evidence's cut, and
            # this test reads the rest of the first attempt's schedule
            "callbacks.autotrainer.lr_evidence.min_severity=critical",
            # this test reads what a cut does to the schedule, not when one is made: every oscillation
            # warning is acted on (not only once validation accuracy falls)
            "callbacks.autotrainer.online.LOSS_OSCILLATION.min_val_acc_drop=null",
        ],
        tmp_path,
    )
    # the first attempt's cuts (its event file is out's; a later restart has its own LR and directory)
    cuts = [
        a
        for a in read(out / "report.json")["autotrainer"]["actions"]
        if a["action"] == "scale_lr" and a.get("attempt", 0) == 0
    ]
    assert cuts and all(
        c["code"] == "LOSS_OSCILLATION" and c["lr_after"] == pytest.approx(0.5 * c["lr_before"])
        for c in cuts
    )
    cut = cuts[0]
    cosine = [0.03 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(7)]
    scalars = SummaryReader(event_file(out)).scalars
    lrs = scalars[scalars.tag == "train/lr"]
    before = lrs[lrs.step < cut["step"]].value.tolist()
    assert all(min(abs(v - c) for c in cosine) < 1e-9 for v in before)
    # between cuts (and after the last) every LR is 0.5^k x the cosine: each cut scales, none resets the schedule
    bounds = [c["step"] for c in cuts] + [math.inf]
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:]), start=1):
        span = lrs[(lrs.step > lo) & (lrs.step <= hi)].value.tolist()
        assert all(min(abs(v - 0.5**k * c) for c in cosine) < 1e-9 for v in span), k
    after = lrs[lrs.step > cut["step"]].value.tolist()
    assert len({round(v, 12) for v in after}) >= 3  # the schedule kept decaying, scaled


@pytest.mark.slow
def test_far_too_low_lr_is_raised_once_by_the_measured_update_ratio(tmp_path: Path) -> None:
    out = run_dir_of(
        [
            "autotrainer=default",
            "optimizer=sgd",
            "optimizer.lr=1e-5",
            "optimizer.momentum=0",
            "optimizer.nesterov=false",
        ],
        tmp_path,
    )
    report = read(out / "report.json")
    raises = [a for a in report["autotrainer"]["actions"] if a["action"] == "raise_lr"]
    assert len(raises) == 1 and raises[0]["code"] == "SLOW_CONVERGENCE"
    assert 1e3 <= raises[0]["lr_after"] / raises[0]["lr_before"] <= 1e5  # bounded by max_factor
    assert report["metrics"]["test_acc"] > 0.9
