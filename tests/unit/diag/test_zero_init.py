"""A zero-initialised model is a textbook fault: the live diagnosis names it (BAD_INITIALIZATION, the
symmetry it never breaks) and the fit ends with a report, where 1/0 in the evidence used to crash it
mid-run. A layer with no weights (a fan-in of 0) has no scale to judge and is skipped, not divided by."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from torch import nn

from diag import FitState, TrainingDebugger
from diag.codes import Issue
from diag.diagnosis import _bad_initialization, diagnose
from diag.live import DiagnosticsHook, init_scale_ratios, weight_layers
from diag.series import RunSeries


def _zero_mlp(init: str = "zero") -> nn.Module:
    """The digits MLP's shape, every weight and bias 0 (``model.init_scale=0``) or every weight N(0, 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    with torch.no_grad():
        for p in model.parameters():
            if init == "zero":
                p.zero_()
            elif p.dim() >= 2:
                nn.init.normal_(p, std=0.0)
    return model


def _fit(hook: DiagnosticsHook, model: nn.Module, run_dir: Path, steps: int = 60) -> FitState:
    """A short fit through the hook protocol, diagnosed mid-run (diagnose_every) and at the end."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(128, 16), torch.randint(0, 4, (128,))
    state = FitState(model=model, optimizer=opt, num_classes=4, max_steps=steps, run_dir=run_dir)
    state.steps_per_epoch = 20
    hook.on_fit_start(state)
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        state.step, state.loss, state.grad_norm = step, loss.detach(), norm
        hook.on_train_batch_end(state)
        if step % 20 == 0:
            state.epoch = step // 20
            hook.on_epoch_end(state)
    hook.on_fit_end(state)
    return state


@pytest.mark.parametrize("init", ["zero", "normal_std_0"])
def test_a_zero_initialised_model_is_diagnosed_and_the_report_names_it(tmp_path, init):
    hook = DiagnosticsHook(
        summary_png=False,
        console=False,
        write_report=True,
        scalar_every=2,
        layer_every=5,
        diagnose_every=10,
    )
    model = _zero_mlp(init)
    _fit(hook, model, tmp_path)
    assert all(r == 0.0 for r in hook.series.init_scale_ratio.values())
    found = {i.code: i for i in hook.issues}
    assert "BAD_INITIALIZATION" in found, [i.code for i in hook.issues]
    issue = found["BAD_INITIALIZATION"]
    # the rule gives a warning for weights far under He/Xavier scale; the run it leaves at chance
    # (STUCK_AT_CHANCE, critical) is its symptom, folded in with that severity
    assert _rule_alone(hook.series).severity == "warning"
    assert "STUCK_AT_CHANCE" not in found
    assert issue.severity == "critical" and issue.layer == "0" and issue.first_step == 0
    assert "all equal (std 0, e.g. all zero)" in issue.evidence
    assert "symmetric units never differ" in issue.evidence
    assert "every layer" in issue.evidence and "inf" not in issue.evidence
    report = json.loads((tmp_path / "report.json").read_text())
    assert "BAD_INITIALIZATION" in [i["code"] for i in report["issues"]]


def _rule_alone(series: RunSeries) -> Issue:
    """BAD_INITIALIZATION as the rule gives it, before symptoms it explains are folded in."""
    issue = _bad_initialization(series)
    assert issue is not None
    return issue


def test_one_zero_layer_among_healthy_ones_is_named_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[2].weight.zero_()
    s = RunSeries(num_classes=4, init_scale_ratio=init_scale_ratios(weight_layers(model)))
    s.init_scale_ratio["0"] = (
        0.58  # PyTorch's default init, as measured: only the zero layer is off
    )
    issues = {i.code: i for i in diagnose(s)}
    issue = issues["BAD_INITIALIZATION"]
    assert issue.layer == "2" and issue.evidence.startswith("initial weights of 2 are all equal")


def test_the_debugger_watching_a_zero_model_finishes_with_the_finding():
    model = _zero_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    debugger = TrainingDebugger().watch(model, opt, num_classes=4)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    for _ in range(3):
        for _ in range(20):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            debugger.train_step(loss)
        debugger.end_epoch(val_loss=loss.item(), val_acc=0.25)
    report = debugger.finish()
    assert "BAD_INITIALIZATION" in report["issues"] and report["status"] in ("warning", "critical")


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_init_scale_ratios_skips_a_layer_with_no_fan_in():
    torch.manual_seed(0)
    layers = {
        "empty_in": nn.Linear(0, 8).weight,  # data.image_size=0 flattens to 0 features
        "empty_out": nn.Linear(8, 0).weight,
        "empty_conv": nn.Conv2d(0, 4, 3).weight,
        "ok": nn.Linear(50, 10).weight,
    }
    ratios = init_scale_ratios(layers)
    assert list(ratios) == ["ok"]
    # PyTorch's default (Kaiming-uniform, a=sqrt(5)) sits at about 1/sqrt(6) of the He-normal std
    assert math.isclose(ratios["ok"], 1 / math.sqrt(6), rel_tol=0.25)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_the_hook_starts_on_a_model_with_an_empty_input_layer(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(0, 8), nn.ReLU(), nn.Linear(8, 3))
    hook = DiagnosticsHook(summary_png=False, console=False)
    state = FitState(model=model, num_classes=3, run_dir=tmp_path)
    hook.on_fit_start(state)
    assert list(hook.series.init_scale_ratio) == ["3"]


@pytest.mark.slow
def test_the_runner_finishes_a_zero_init_run_and_its_report_names_it(tmp_path):
    run_dir = tmp_path / "zero"
    proc = run_cli(
        ["debug=fast", "model.init_scale=0"],
        tmp_path,
        run_dir=run_dir,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.loads((run_dir / "report.json").read_text())
    found = {i["code"]: i for i in report["issues"]}
    assert "BAD_INITIALIZATION" in found, list(found)
    assert "symmetric units never differ" in found["BAD_INITIALIZATION"]["evidence"]
    assert "BAD_INITIALIZATION" in (run_dir / "report.md").read_text()
