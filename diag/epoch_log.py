"""Per-epoch JSONL diagnostics: ``train_diagnostics.jsonl`` and ``val_diagnostics.jsonl``.

One JSON object per epoch (the files stay open for the fit: no open/close per epoch), flushed at an epoch's
end at most every ``flush_secs`` seconds, before each of the runner's checkpoints and at the fit's end. This
is the per-epoch JSONL schema that ``diag analyze`` reads (non-finite values are written as ``null``):

- train: ``epoch``, ``step`` (global step at the epoch's end), ``loss``, ``accuracy``,
  ``learning_rate``, ``mean_grad_norm``, ``min_grad_norm``, ``max_grad_norm``,
  ``weight_update_magnitude`` (‖Δw‖/‖w‖ over the epoch), ``num_batches``,
  ``skipped_steps`` (cumulative), ``epoch_time``;
- val: ``epoch``, ``step``, ``loss``, ``accuracy``.

Readers also accept files without ``step``. Gradient-norm min/mean/max are
accumulated on the device; the weight update compares the weights at the epoch's end
with a copy taken at its first step (after that step: the hook protocol has no
epoch-start event, and weights a policy changed between epochs are not counted as
the epoch's update).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from diag.hooks import FitState, Hook, finite_or_none
from diag.run_files import open_run_file, write_run_text

FOLD_EVERY = 64  # steps of gradient norms reduced together (one stack and three reductions)


class EpochJSONL(Hook):
    """Appends one line per epoch to the train and validation JSONL files.

    They go to ``log_dir`` when given, else to the loop's ``FitState.run_dir``; a fit with neither is
    refused at its start (a log that silently writes nothing is worse than none).

    Lines reach the disk at an epoch's end at most every ``flush_secs`` seconds (``0``: every epoch), at
    :meth:`flush` (the runner's checkpoints call it before they are written) and at the fit's end, as
    TensorBoard's events do (flushing both files at every epoch end made it 0.26 ms instead of 0.22 on the
    digits MLP, and costs more on a network file system). A process killed outright loses the lines since
    the last flush; a run resumed from its checkpoint has every line up to it, and rewrites the ones after.
    """

    def __init__(
        self,
        train_file: str = "train_diagnostics.jsonl",
        val_file: str = "val_diagnostics.jsonl",
        log_dir: str | Path | None = None,
        flush_secs: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not float(flush_secs) >= 0:
            raise ValueError(
                f"EpochJSONL(flush_secs={flush_secs!r}): use seconds >= 0 (0 flushes every epoch)"
            )
        self.train_file = train_file
        self.val_file = val_file
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.flush_secs = float(flush_secs)
        self.clock = clock
        self._flushed_at = clock()
        self._dir: Path | None = None  # where this fit writes, fixed at on_fit_start
        # the LR the epoch trained at, read at on_validation_end: an epoch-interval scheduler steps
        # between that and on_epoch_end, and the epoch's record would name the next epoch's LR
        self._epoch_lr: float | None = None
        self._start: list[torch.Tensor] | None = None
        self._stats: torch.Tensor | None = None  # [sum, min, max] of grad norms this epoch
        self._pending: list[
            torch.Tensor
        ] = []  # norms of the last steps, folded into _stats every FOLD_EVERY
        self._batches = 0
        self._files: dict[str, IO[str]] = {}  # open for the fit, closed at its end

    def on_fit_start(self, state: FitState) -> None:
        self._close()
        if (
            self._start is not None
        ):  # restored from a checkpoint (on the CPU): to where the model trains
            device = next(state.model.parameters()).device
            # a copy of its own: the epoch's end turns it into the change in place
            self._start = [t.to(device, copy=True) for t in self._start]
            self._stats = self._stats.to(device) if self._stats is not None else None
        self._dir = None
        if not state.is_rank_zero:
            return  # one writer: rank 0
        where = self.log_dir if self.log_dir is not None else state.run_dir
        if where is None:
            raise ValueError(
                "EpochJSONL has nowhere to write: pass EpochJSONL(log_dir=...) or set FitState.run_dir"
            )
        self._dir = Path(where)
        self._dir.mkdir(parents=True, exist_ok=True)
        # A resumed run continues the files: drop lines past the resume point.
        for name in (self.train_file, self.val_file):
            _truncate_after(self._dir / name, state.step)

    def _begin_epoch(self, state: FitState) -> None:
        self._start = [p.detach().clone() for p in state.model.parameters()]
        self._stats = None
        self._pending = []
        self._batches = 0

    def on_train_batch_end(self, state: FitState) -> None:
        if self._start is None:
            self._begin_epoch(state)
        # No device op per step (each costs a fixed launch overhead): keep the step's norm, reduce FOLD_EVERY at once.
        assert state.grad_norm is not None  # a train step sets it before this hook
        self._pending.append(state.grad_norm)
        if len(self._pending) >= FOLD_EVERY:
            self._fold()
        self._batches += 1

    def _fold(self) -> None:
        """Fold the pending per-step norms into ``_stats`` = [sum, min, max] (NaN/Inf propagate into them)."""
        if not self._pending:
            return
        v = torch.stack(self._pending).float()
        self._pending = []
        part = torch.stack([v.sum(), v.min(), v.max()])
        if self._stats is None:
            self._stats = part
        else:
            s = self._stats.to(part.device)
            self._stats = torch.stack(
                [s[0] + part[0], torch.minimum(s[1], part[1]), torch.maximum(s[2], part[2])]
            )

    def on_validation_end(self, state: FitState) -> None:
        self._epoch_lr = state.current_lr

    @torch.no_grad()
    def on_epoch_end(self, state: FitState) -> None:
        epoch_lr, self._epoch_lr = self._epoch_lr, None
        if self._dir is None:
            self._start = None
            return
        self._fold()
        # One host read for the epoch: each tensor's weight change and start norm, then the gradient-norm
        # sum/min/max; the global norms are summed here from the per-tensor ones (each device op costs a
        # fixed overhead that a small model's epoch feels).
        rows: list[torch.Tensor] = []
        if self._start is not None:  # the change's norms first, then the start's
            start = self._start
            sizes = torch._foreach_norm(start)
            torch._foreach_sub_(start, list(state.model.parameters()))  # in place: dropped below
            rows = [*torch._foreach_norm(start), *sizes]
        parts = [torch.stack(rows).float()] if rows else []
        if self._stats is not None:
            stats = self._stats.float()
            parts.append(stats.to(parts[0].device) if parts else stats)
        values = torch.cat(parts).tolist() if parts else []
        n = len(rows) // 2
        update = None
        if rows:
            delta = math.sqrt(sum(v * v for v in values[:n]))
            update = delta / max(math.sqrt(sum(v * v for v in values[n : 2 * n])), 1e-12)
        s = values[2 * n :] if self._stats is not None else [float("nan")] * 3
        m = state.metrics
        train = {
            "epoch": state.epoch,
            "step": state.step,
            "loss": finite_or_none(m.get("train/loss", float("nan"))),
            "accuracy": finite_or_none(m.get("train/acc", float("nan"))),
            # a loop that does not validate has no on_validation_end: its LR is read here
            "learning_rate": state.current_lr if epoch_lr is None else epoch_lr,
            "mean_grad_norm": finite_or_none(s[0] / max(self._batches, 1)),
            "min_grad_norm": finite_or_none(s[1]),
            "max_grad_norm": finite_or_none(s[2]),
            "weight_update_magnitude": finite_or_none(update) if update is not None else None,
            "num_batches": self._batches,
            "skipped_steps": state.skipped_steps,
            "epoch_time": m.get("train/epoch_time"),
        }
        val = {
            "epoch": state.epoch,
            "step": state.step,
            "loss": finite_or_none(m.get("val/loss", float("nan"))),
            "accuracy": finite_or_none(m.get("val/acc", float("nan"))),
        }
        self._append(self._dir, self.train_file, train)
        self._append(self._dir, self.val_file, val)
        self._start = None
        if self.clock() - self._flushed_at >= self.flush_secs:
            self.flush()

    def _append(self, directory: Path, name: str, record: dict[str, Any]) -> None:
        fh = self._files.get(name)
        if fh is None or fh.closed:
            fh = self._files[name] = open_run_file(directory / name, "a")
        fh.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        for fh in self._files.values():
            if not fh.closed:
                fh.flush()
        self._flushed_at = self.clock()

    def _close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def on_fit_end(self, state: FitState) -> None:
        self._close()

    def state_dict(self) -> dict[str, Any]:
        """Mid-epoch accumulators, so an epoch resumed from a step checkpoint logs the whole epoch."""
        self._fold()
        return {
            "start": [t.detach().cpu() for t in self._start] if self._start is not None else None,
            "stats": self._stats.detach().cpu() if self._stats is not None else None,
            "batches": self._batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start = state.get("start")
        self._stats = state.get("stats")
        self._pending = []
        self._batches = int(state.get("batches", 0))


def _truncate_after(path: Path, step: int) -> None:
    """Keep only lines written at or before ``step`` (all of them go when starting fresh at step 0)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if step and json.loads(line).get("step", step + 1) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    write_run_text(path, "".join(k + "\n" for k in kept))
