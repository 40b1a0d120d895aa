"""The exported live API: DiagnosticsHook from ``diag``, TrainingDebugger driven per step from a hand loop,
and the names other tools' examples use (GradientHealthMonitor, check_activations, stats, LRFinder.run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import diag
from diag import (
    ActivationMonitor,
    DiagnosticsHook,
    GradientHealthMonitor,
    LearningRateFinder,
    LRFinder,
    TrainingDebugger,
)


def _data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.randint(0, 4, (n,), generator=g)
    return centers[y] + torch.randn(n, 16, generator=g), y


def _hand_loop(lr: float, run_dir=None, epochs: int = 6) -> dict:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    # the documented glue: watch, train_step, end_epoch, finish
    debugger = TrainingDebugger().watch(model, optimizer, num_classes=4, run_dir=run_dir)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(16):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            debugger.train_step(loss)
        with torch.no_grad():
            logits = model(x)
            val = nn.functional.cross_entropy(logits, y).item()
        debugger.end_epoch(val_loss=val, val_acc=(logits.argmax(1) == y).float().mean().item())
    return debugger.finish()


def test_diagnostics_hook_is_exported():
    assert DiagnosticsHook is diag.live.DiagnosticsHook
    assert "DiagnosticsHook" in diag.__all__ and "DiagnosticsHook" in dir(diag)


@pytest.mark.parametrize(
    ("name", "value"),
    [("layer_every", 0), ("scalar_every", -10), ("diagnose_every", 2.5), ("dead_window", True)],
)
def test_a_cadence_below_one_step_is_refused_not_taken_as_one(name, value):
    # 0 used to become 1: the layers sampled at every step, an epoch 30x slower, unasked
    with pytest.raises(
        ValueError, match=rf"DiagnosticsHook\({name}={value!r}\): a whole number >= 1"
    ):
        DiagnosticsHook(**{name: value})
    assert getattr(DiagnosticsHook(**{name: 3}), name) == 3


def test_a_hand_loop_at_a_far_too_high_lr_is_named_in_plain_words(tmp_path):
    report = _hand_loop(lr=30.0, run_dir=tmp_path)
    assert report["status"] == "critical"
    assert "LOSS_EXPLOSION" in report["issues"] or "NONFINITE_GRADIENTS" in report["issues"]
    assert report["recommendations"][0].startswith("Reduce the learning rate")
    assert not any("optimizer.lr" in r for r in report["recommendations"])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["status"] == "critical" and (tmp_path / "report.md").is_file()
    assert (tmp_path / "summary.png").is_file() and (tmp_path / "events.jsonl").is_file()


def test_a_healthy_hand_loop_stays_silent():
    report = _hand_loop(lr=0.01)
    assert report["status"] == "healthy" and report["issues"] == [], report["details"]


def test_train_step_before_watch_or_without_gradients_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"watch\(model, optimizer\)"):
        TrainingDebugger().train_step(1.0)
    model = nn.Linear(4, 2)
    debugger = TrainingDebugger().watch(model, num_classes=2)
    with pytest.raises(RuntimeError, match="after loss.backward"):
        debugger.train_step(torch.tensor(0.7))


def test_gradient_health_monitor_sees_vanishing_gradients():
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(10):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(32, 4))
    x, y = _data(64)
    nn.functional.cross_entropy(model(nn.functional.pad(x, (0, 16))), y).backward()
    monitor = GradientHealthMonitor(model)
    healthy, messages = monitor.check_gradients()
    assert not healthy and any(m.startswith("Vanishing") for m in messages)
    assert list(monitor.history[-1]) == [f"{i}.weight" for i in range(0, 21, 2)]

    shallow = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    nn.functional.cross_entropy(shallow(x), y).backward()
    assert GradientHealthMonitor(shallow).check_gradients() == (True, [])


def test_activation_monitor_check_activations_and_stats():
    monitor = ActivationMonitor()
    rng = np.random.default_rng(0)
    for _ in range(5):
        monitor.record("relu", np.maximum(rng.normal(-5, 1, (32, 16)), 0), activation="relu")
        monitor.record("ok", np.maximum(rng.normal(0, 1, (32, 16)), 0), activation="relu")
    assert monitor.check_activations() == monitor.diagnose()
    assert "relu" in monitor.check_activations() and "ok" not in monitor.check_activations()
    assert monitor.stats == monitor.summary() and monitor.stats["relu"]["dead_fraction"] > 0.5


def test_lr_finder_run_is_range_test():
    assert LRFinder is LearningRateFinder

    def train_fn(lr: float) -> float:  # a bowl: best around 1e-2, diverging above 1
        return 1.0 + (math.log10(lr) + 2) ** 2 / 10 + (100.0 if lr > 1 else 0.0)

    a = LRFinder(min_lr=1e-5, max_lr=10, num_steps=60).run(train_fn)
    b = LearningRateFinder(min_lr=1e-5, max_lr=10, num_steps=60).range_test(train_fn)
    assert a == b and 1e-4 < a["suggested_lr"] < 1


def test_the_first_diagnose_every_steps_are_diagnosed_at_every_scalar_read():
    # a blow-up in the first steps is named at the first scalar read after it, not at step diagnose_every
    from diag.hooks import FitState

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    hook = DiagnosticsHook(summary_png=False, console=False, scalar_every=10, diagnose_every=50)
    state = FitState(model=model, optimizer=opt, num_classes=3, max_steps=200)
    hook.on_fit_start(state)
    for step in range(1, 201):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        state.step, state.loss, state.grad_norm = step, loss.detach(), norm
        hook.on_train_batch_end(state)
    hook.on_fit_end(state)
    assert hook.detected_at["LOSS_EXPLOSION"] <= 20


def test_units_dead_from_the_start_are_named_by_step_layer_every():
    # layers are sampled at every scalar read of the first diagnose_every steps: the window of 4 samples a
    # dead unit needs is full by step 25 (samples at 1, 10, 20, and 25 or the step after a finding), not 75
    from diag.hooks import FitState

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].bias.fill_(-10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    hook = DiagnosticsHook(
        summary_png=False, console=False, scalar_every=10, layer_every=25, diagnose_every=50
    )
    state = FitState(model=model, optimizer=opt, num_classes=3, max_steps=100)
    hook.on_fit_start(state)
    for step in range(1, 101):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step, state.loss, state.grad_norm = step, loss.detach(), torch.tensor(1.0)
        hook.on_train_batch_end(state)
    hook.on_fit_end(state)
    assert hook.detected_at["DEAD_NEURONS"] <= 25
    assert hook.series.layer_step[:3] == [1, 10, 20]


def test_a_sampled_steps_update_ratio_is_that_steps_change_over_the_weights_before_it():
    """Plain SGD moves each weight by lr x its gradient: the hook's per-layer update ratio at a sampled
    step is ||lr g|| / ||w before the step||, and its gradient norm ||g||, layer by layer."""
    from diag.hooks import FitState

    torch.manual_seed(0)
    x, y = _data(64)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    hook = DiagnosticsHook(layer_every=5, scalar_every=5, diagnose_every=1000, summary_png=False)
    state = FitState(model, opt, num_classes=4)
    hook.on_fit_start(state)
    expected: dict[int, dict[str, tuple[float, float]]] = {}
    weights = {"0": model[0].weight, "2": model[2].weight}
    for step in range(1, 21):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        before = {n: (w.detach().norm().item(), w.grad.norm().item()) for n, w in weights.items()}
        state.grad_norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        state.loss, state.step = loss.detach(), step
        expected[step] = {n: (lr * g / w, g) for n, (w, g) in before.items()}
        hook.on_train_batch_end(state)
    s = hook.series
    assert s.layer_step and set(s.layer_step) <= set(expected)
    names = list(hook.layers)
    for i, step in enumerate(s.layer_step):
        for name, key in zip(names, weights):
            ratio, grad = expected[step][key]
            assert s.layer_update_ratio[name][i] == pytest.approx(ratio, rel=1e-4)
            assert s.layer_grad_norm[name][i] == pytest.approx(grad, rel=1e-5)


class _WatchedLoop:
    """A hand loop whose hook (diagnose_every=50 unless given) records the (kind, step) of every diagnosis
    it runs."""

    def __init__(
        self,
        max_steps: int,
        every_epoch: bool = False,
        diagnose_every: int = 50,
        steps_per_epoch: int = 0,
    ) -> None:
        from diag.hooks import FitState

        torch.manual_seed(0)
        self.x, self.y = _data(64)
        self.model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.hook = DiagnosticsHook(
            summary_png=False,
            console=False,
            scalar_every=10,
            diagnose_every=diagnose_every,
            every_epoch=every_epoch,
        )
        self.seen: list[tuple[str, int]] = []
        diagnose, read_settings = self.hook._diagnose, self.hook._read_settings
        # a diagnosis that runs (is not skipped as too soon) reads the settings first
        ran: list[int] = []
        self.hook._read_settings = lambda state: (ran.append(1), read_settings(state))  # type: ignore[method-assign]

        def watched(state: FitState, when: str = "final") -> None:
            before = len(ran)
            diagnose(state, when)
            if len(ran) > before:
                self.seen.append((when, state.step))

        self.hook._diagnose = watched  # type: ignore[method-assign]
        self.state = FitState(
            self.model,
            self.opt,
            num_classes=4,
            max_steps=max_steps,
            steps_per_epoch=steps_per_epoch,
        )
        self.hook.on_fit_start(self.state)

    def steps(self, n: int) -> None:
        for _ in range(n):
            loss = nn.functional.cross_entropy(self.model(self.x), self.y)
            self.opt.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
            self.opt.step()
            s = self.state
            s.step, s.loss, s.grad_norm = s.step + 1, loss.detach(), norm
            self.hook.on_train_batch_end(s)
        self.last_loss = loss.item()

    def epoch_end(self) -> None:
        self.state.metrics.update({"val/loss": self.last_loss, "val/acc": 0.5})
        self.hook.on_validation_end(self.state)
        self.hook.on_epoch_end(self.state)


def _diagnosis_steps(
    steps_per_epoch: int, epochs: int, every_epoch: bool = False, said: bool = False
) -> list[tuple[str, int]]:
    """(kind, step) of every diagnosis a hand loop's hook ran after its first diagnose_every=50 steps;
    ``said``: the loop gives its epoch's length (``FitState.steps_per_epoch``, as the runner does)."""
    loop = _WatchedLoop(
        steps_per_epoch * epochs, every_epoch, steps_per_epoch=steps_per_epoch if said else 0
    )
    for _ in range(epochs):
        loop.steps(steps_per_epoch)
        loop.epoch_end()
    loop.hook.on_fit_end(loop.state)
    return [(kind, step) for kind, step in loop.seen if step > 50]


def test_a_large_diagnose_every_keeps_the_early_phase_to_its_first_50_steps():
    # diagnose_every=1000 asks for fewer diagnoses: the early phase (a diagnosis and a layer sample at every
    # scalar read) still ends at step 50, not at step 1000, past the end of this 300-step fit
    loop = _WatchedLoop(300, diagnose_every=1000)
    loop.steps(300)
    loop.hook.on_fit_end(loop.state)
    assert [step for kind, step in loop.seen if kind == "step"] == [1, 10, 20, 25, 30, 40, 50]
    assert loop.seen[-1] == ("final", 300)
    assert loop.hook.series.layer_step == [1, 10, 20, 25, 30, 40, 50, *range(75, 301, 25)]


@pytest.mark.parametrize("said", [False, True], ids=["learned", "given"])
def test_short_epochs_are_diagnosed_at_every_third_epoch_end_and_the_last(said):
    # 20-step epochs: epoch-end diagnoses at least diagnose_every = 50 steps apart (the first at step 20;
    # 40 and 60 are skipped, 80 runs), the fit's last epoch always, and no step-driven diagnosis between
    # them (the epoch's length is the loop's, or the first epoch's): the rules run every third epoch
    assert _diagnosis_steps(20, 8, said=said) == [
        ("epoch", 80),
        ("epoch", 140),
        ("epoch", 160),
        ("final", 160),
    ]


def test_with_every_epoch_short_epochs_are_diagnosed_at_each_end():
    # for a reader that acts on each epoch end's findings (the AutoTrainer, stop_on)
    assert _diagnosis_steps(20, 8, every_epoch=True) == [
        ("epoch", s) for s in range(60, 161, 20)
    ] + [("final", 160)]
    assert _diagnosis_steps(20, 8, every_epoch=True, said=True) == [
        ("epoch", s) for s in range(60, 161, 20)
    ] + [("final", 160)]


def test_epochs_shorter_than_diagnose_every_are_diagnosed_every_few_ends_and_longer_at_each():
    assert _diagnosis_steps(30, 5) == [("epoch", 90), ("epoch", 150), ("final", 150)]
    assert _diagnosis_steps(50, 4) == [("epoch", s) for s in range(100, 201, 50)] + [("final", 200)]


def test_long_epochs_are_diagnosed_every_diagnose_every_steps_after_the_last_diagnosis():
    # 120-step epochs: the first 50 steps end with a diagnosis at step 50; then every 50 steps counted
    # from the latest diagnosis of either kind, the epoch ends included
    assert _diagnosis_steps(120, 2) == [
        ("step", 100),
        ("epoch", 120),
        ("step", 170),
        ("step", 220),
        ("epoch", 240),
        ("final", 240),
    ]


def test_a_loop_that_counts_on_from_an_earlier_step_after_a_reset_is_diagnosed_50_steps_after_it():
    loop = _WatchedLoop(1000)
    loop.steps(120)
    assert loop.seen[-1] == ("step", 100)
    loop.hook.reset(60)  # the loop rolled back to step 60 and counts on from there
    loop.state.step = 60
    loop.steps(110)
    assert [step for _, step in loop.seen if step > 100] == [110, 160]


def test_epoch_ends_after_a_reset_to_an_earlier_step_are_spaced_from_the_reset():
    # 20-step epochs to step 200, then rolled back to step 100: the epoch-end diagnoses are 50+ steps
    # apart from the reset on (160, 220), not held back until the loop passes its old latest one (200)
    loop = _WatchedLoop(1000)
    for _ in range(10):
        loop.steps(20)
        loop.epoch_end()
    assert loop.seen[-1] == ("epoch", 200)
    loop.hook.reset(100)
    loop.state.step = 100
    seen = len(loop.seen)
    for _ in range(6):
        loop.steps(20)
        loop.epoch_end()
    assert loop.seen[seen:] == [("epoch", 160), ("epoch", 220)]


class _EveryStepHook(DiagnosticsHook):
    """The hook without its quiet-step shortcut: every step takes the full per-step path."""

    @property
    def _next_busy(self) -> int:
        return 0

    @_next_busy.setter
    def _next_busy(self, value: int) -> None:
        pass


def _eventful_fit(hook: DiagnosticsHook) -> dict:
    """A hand loop with 32-step epochs, units that die mid-run (the rules name it, and a finding asks for
    a sample), a non-finite step it skips, and a rollback (``reset``); what the hook collected and when it
    acted."""
    from diag.hooks import FitState

    torch.manual_seed(0)
    x, y = _data(256)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    acted: list[tuple[str, int]] = []
    found: dict[str, int] = {}  # what the rules named before the reset, and at which step
    sample, diagnose = hook._sample_layers, hook._diagnose

    def sampled(state: FitState) -> None:
        acted.append(("sample", state.step))
        sample(state)

    def diagnosed(state: FitState, when: str = "final") -> None:
        acted.append((when, state.step))
        diagnose(state, when)

    hook._sample_layers, hook._diagnose = sampled, diagnosed  # type: ignore[method-assign]
    state = FitState(model, opt, num_classes=4, max_steps=330)
    hook.on_fit_start(state)
    for epoch in range(10):
        state.epoch = epoch
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for idx in order.split(8):
            if state.step == 100:
                with torch.no_grad():
                    model[0].bias.fill_(-100.0)  # every hidden unit goes silent: the rules name it
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            if state.step == 120:
                norm = torch.tensor(math.nan)
            state.step_skipped = not math.isfinite(norm.item())
            if not state.step_skipped:
                opt.step()
            state.step, state.loss, state.grad_norm = state.step + 1, loss.detach(), norm
            hook.on_train_batch_end(state)
            if state.step == 290 and not hook._past:
                found.update(hook.detected_at)
                hook.reset(270)  # rolled back once; the loop counts on from step 270
                state.step = 270
        state.metrics.update({"val/loss": loss.item(), "val/acc": 0.5})
        hook.on_validation_end(state)
        hook.on_epoch_end(state)
    hook.on_fit_end(state)
    return {
        "acted": acted,
        "series": json.dumps(hook.series.to_dict()),
        "past": json.dumps([p.to_dict() for p in hook._past]),
        "found": found,
    }


@pytest.mark.parametrize(
    "settings",
    [{}, {"layer_every": 7, "scalar_every": 4, "diagnose_every": 30, "histogram_every": 11}],
)
def test_quiet_steps_skip_the_per_step_checks_without_changing_what_the_hook_does(settings):
    # the same samples, reads and diagnoses at the same steps, and the same series, as the full check at
    # every step, through findings that ask for a sample, a skipped step and a reset
    common = {"summary_png": False, "console": False, **settings}
    fast = _eventful_fit(DiagnosticsHook(**common))
    assert fast == _eventful_fit(_EveryStepHook(**common))
    assert ("sample", 122) in fast["acted"]  # the step after the skipped one is sampled
    assert "DEAD_NEURONS" in fast["found"]
