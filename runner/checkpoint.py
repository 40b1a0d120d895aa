"""Checkpoints: written atomically, loaded with ``weights_only=True``, refused clearly when bad."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from diag.hooks import FitState, Hook
from runner.errors import UserError
from runner.trainer import Trainer


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush and fsync, then rename over ``path``.

    A crash mid-write leaves the previous checkpoint intact.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        kept = " (the previous checkpoint is intact)" if path.exists() else ""
        raise UserError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}{kept}; free disk space or "
            "point paths.log_dir at a writable directory"
        ) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated, corrupt or code-carrying file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check trainer.resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data "
            f"({first[:120]}); only load checkpoints you trust and that this runner wrote"
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        IndexError,
        KeyError,
    ) as exc:
        raise UserError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}): "
            "use another checkpoint or start without trainer.resume"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise UserError(f"checkpoint {path} is not a runner checkpoint (no 'model' entry)")
    return payload


def inside(run_dir: Path, name: str, key: str) -> Path:
    """``run_dir / name``, refusing names from configs that would escape the run directory."""
    root = Path(run_dir).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UserError(
            f"{key}={name!r} points outside the run directory {root}: use a relative name "
            "without '..'"
        )
    return target


def _loop(state: FitState) -> Trainer:
    """The runner's loop, which knows how to capture the whole fit (this hook only decides when)."""
    if not isinstance(state.loop, Trainer):
        raise TypeError("CheckpointHook saves through runner.trainer.Trainer: fit with it")
    return state.loop


class CheckpointHook(Hook):
    """Saves ``checkpoints/last.pt`` every epoch (and every ``every_n_steps``), ``best.pt`` on better val loss."""

    def __init__(
        self,
        dirname: str = "checkpoints",
        save_last: bool = True,
        save_best: bool = True,
        monitor: str = "val/loss",
        every_n_steps: int | None = None,
    ) -> None:
        self.dirname = dirname
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self.save_last = save_last
        self.save_best = save_best
        self.monitor = monitor
        self.best = float("inf")

    def on_fit_start(self, state: FitState) -> None:
        if state.run_dir is not None:
            inside(state.run_dir, self.dirname, "callbacks.checkpoint.dirname")

    def save_now(self, state: FitState, mid_epoch: bool = True) -> Path | None:
        """Write ``last.pt`` for the current step (used between epochs and on interruption)."""
        if state.run_dir is None or not state.is_rank_zero:
            return None
        path = inside(state.run_dir, self.dirname, "callbacks.checkpoint.dirname") / "last.pt"
        save_atomic(_loop(state).checkpoint_payload(state, mid_epoch=mid_epoch), path)
        return path

    def on_train_batch_end(self, state: FitState) -> None:
        if (
            self.every_n_steps
            and state.step % self.every_n_steps == 0
            and state.batch_idx + 1 < state.steps_per_epoch
        ):
            self.save_now(state, mid_epoch=True)

    def on_epoch_end(self, state: FitState) -> None:
        if state.run_dir is None or not state.is_rank_zero:
            return
        folder = inside(state.run_dir, self.dirname, "callbacks.checkpoint.dirname")
        payload = _loop(state).checkpoint_payload(state)
        if self.save_last:
            save_atomic(payload, folder / "last.pt")
        value = state.metrics.get(self.monitor, float("inf"))
        if self.save_best and value < self.best:
            self.best = value
            save_atomic(payload, folder / "best.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", self.best))
