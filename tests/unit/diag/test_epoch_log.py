"""EpochJSONL in a hand-written loop: where it writes, and that it refuses to write nowhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from diag.epoch_log import EpochJSONL
from diag.hooks import FitState
from diag.readers import read_run_dir


def _fit(hook: EpochJSONL, state: FitState, epochs: int = 2, steps: int = 5) -> None:
    """A real training loop on a fixed random problem, calling the hook as the contract says."""
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
