"""EpochJSONL in a hand-written loop: where it writes, and that it refuses to write nowhere."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from diag.epoch_log import EpochJSONL
from diag.hooks import FitState
from diag.readers import read_run_dir


def _fit(
    hook: EpochJSONL,
    state: FitState,
    epochs: int = 2,
    steps: int = 5,
    after_epoch: Callable[[], None] = lambda: None,
    end: bool = True,
) -> None:
    """A real training loop on a fixed random problem, calling the hook as the contract says
    (``after_epoch`` after each epoch end; ``end=False`` leaves the fit unfinished)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    assert state.optimizer is not None
    hook.on_fit_start(state)
    for epoch in range(epochs):
        state.epoch = epoch
        for _ in range(steps):
            state.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(state.model(x), y)
            loss.backward()
            state.grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), float("inf"))
            state.optimizer.step()
            state.loss = loss.detach()
            state.step += 1
            hook.on_train_batch_end(state)
        with torch.no_grad():
            val = nn.functional.cross_entropy(state.model(x), y)
        state.metrics = {"train/loss": float(loss.detach()), "val/loss": float(val), "val/acc": 0.5}
        hook.on_epoch_end(state)
        after_epoch()
    if end:
        hook.on_fit_end(state)


def _state(run_dir: Path | None = None) -> FitState:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return FitState(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=run_dir)


def test_log_dir_receives_one_line_per_epoch_that_the_analyzer_reads(tmp_path: Path) -> None:
    _fit(EpochJSONL(log_dir=tmp_path / "logs"), _state())
    train = [
        json.loads(line)
        for line in (tmp_path / "logs" / "train_diagnostics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in train] == [0, 1]
    assert [r["step"] for r in train] == [5, 10]
    assert all(r["num_batches"] == 5 and r["mean_grad_norm"] > 0 for r in train)
    assert train[0]["weight_update_magnitude"] > 0
    result = read_run_dir(tmp_path / "logs")
    assert result.series.epoch_val_loss and len(result.series.epoch_val_loss) == 2


class _Recorder(EpochJSONL):
    """EpochJSONL that also keeps, by hand, what each epoch line must say: the weights after each epoch's
    first step (the hook protocol has no epoch-start event) and at its end, and every step's gradient norm."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir=log_dir)
        self.starts: list[list[torch.Tensor]] = []
        self.ends: list[list[torch.Tensor]] = []
        self.norms: list[list[float]] = []

    def on_train_batch_end(self, state: FitState) -> None:
        if self._start is None:  # the epoch's first step: the hook's reference weights are these
            self.starts.append([p.detach().clone() for p in state.model.parameters()])
            self.norms.append([])
        self.norms[-1].append(float(state.grad_norm))
        super().on_train_batch_end(state)

    def on_epoch_end(self, state: FitState) -> None:
        self.ends.append([p.detach().clone() for p in state.model.parameters()])
        super().on_epoch_end(state)


def test_each_epoch_line_holds_that_epochs_update_and_gradient_norms(tmp_path: Path) -> None:
    hook = _Recorder(tmp_path)
    _fit(hook, _state(), epochs=3, steps=70)  # more steps than one fold of pending norms
    lines = [json.loads(x) for x in (tmp_path / "train_diagnostics.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line, start, end, norms in zip(lines, hook.starts, hook.ends, hook.norms):
        flat = torch.cat([t.flatten() for t in start])
        change = torch.cat([(b - a).flatten() for a, b in zip(start, end)])
        expected = float(change.norm() / flat.norm())
        assert line["weight_update_magnitude"] == pytest.approx(expected, rel=1e-4)
        assert line["mean_grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)
        assert line["min_grad_norm"] == pytest.approx(min(norms), rel=1e-6)
        assert line["max_grad_norm"] == pytest.approx(max(norms), rel=1e-6)
        assert line["num_batches"] == 70


def test_run_dir_is_used_when_no_log_dir_is_given(tmp_path: Path) -> None:
    _fit(EpochJSONL(), _state(run_dir=tmp_path))
    assert len((tmp_path / "val_diagnostics.jsonl").read_text().splitlines()) == 2


def test_nowhere_to_write_is_refused_at_fit_start_not_silently_dropped() -> None:
    with pytest.raises(
        ValueError, match=r"pass EpochJSONL\(log_dir=\.\.\.\) or set FitState.run_dir"
    ):
        _fit(EpochJSONL(), _state())


class _Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _epochs_on_disk(path: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines()] if path.exists() else []


def test_lines_reach_the_disk_every_flush_secs_on_flush_and_at_the_fit_end(tmp_path: Path) -> None:
    """Epochs 3 s apart, flush_secs=5: each epoch's line is written, and on disk from the first epoch end
    5 s after the last flush; flush() puts the rest there at once, and the fit's end leaves every line."""
    clock = _Clock()
    hook = EpochJSONL(log_dir=tmp_path, flush_secs=5, clock=clock)
    on_disk: list[list[int]] = []

    def after_epoch() -> None:
        on_disk.append(_epochs_on_disk(tmp_path / "train_diagnostics.jsonl"))
        clock.now += 3.0

    state = _state()
    _fit(hook, state, epochs=6, after_epoch=after_epoch, end=False)
    # epoch ends at 0, 3, 6, 9, 12 and 15 s: flushed at 6 (6 s after the start) and 12 (6 s after that)
    assert on_disk == [[], [], [0, 1, 2], [0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert _epochs_on_disk(tmp_path / "val_diagnostics.jsonl") == [0, 1, 2, 3, 4]
    hook.flush()  # as the runner's checkpoints call it
    assert _epochs_on_disk(tmp_path / "val_diagnostics.jsonl") == [0, 1, 2, 3, 4, 5]
    clock.now += 1.0
    state.epoch, state.step = 6, state.step + 5
    hook.on_train_batch_end(state)
    hook.on_epoch_end(state)  # 1 s after that flush: written, not flushed
    assert _epochs_on_disk(tmp_path / "train_diagnostics.jsonl") == [0, 1, 2, 3, 4, 5]
    hook.on_fit_end(state)
    assert _epochs_on_disk(tmp_path / "train_diagnostics.jsonl") == [0, 1, 2, 3, 4, 5, 6]


def test_flush_secs_zero_puts_every_line_on_disk_at_its_epoch_end(tmp_path: Path) -> None:
    hook = EpochJSONL(log_dir=tmp_path, flush_secs=0, clock=_Clock())
    on_disk: list[list[int]] = []
    _fit(
        hook,
        _state(),
        epochs=3,
        after_epoch=lambda: on_disk.append(_epochs_on_disk(tmp_path / "train_diagnostics.jsonl")),
        end=False,
    )
    assert on_disk == [[0], [0, 1], [0, 1, 2]]


def test_a_negative_flush_secs_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"EpochJSONL\(flush_secs=-1\): use seconds >= 0"):
        EpochJSONL(flush_secs=-1)
