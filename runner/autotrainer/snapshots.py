"""In-memory copies of a fit for the policy to go back to: rollback snapshots and the best-validation weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diag.hooks import FitState
from diag.training_state import TrainingState, apply, capture


@dataclass
class Snapshot:
    """Model, optimizer, scheduler and scaler state at ``step``, held on the CPU for a rollback."""

    step: int
    saved: TrainingState

    @classmethod
    def take(cls, state: FitState) -> Snapshot:
        return cls(
            step=state.step,
            saved=capture(state.model, state.optimizer, state.scheduler, state.scaler),
        )

    @property
    def model(self) -> dict[str, Any]:
        return self.saved.model

    def restore(self, state: FitState) -> None:
        apply(self.saved, state.model, state.optimizer, state.scheduler, state.scaler)
        # the steps since the snapshot are undone: the epoch's training loss restarts after them
        forget = getattr(state.loop, "forget_epoch_sums", None)
        if forget is not None:
            forget(self.step)


@dataclass
class BestWeights:
    """The model weights of the best validation loss so far (early stopping keeps these, not the optimizer)."""

    step: int
    epoch: int
    val_loss: float
    val_acc: float | None
    saved: TrainingState

    @classmethod
    def take(cls, state: FitState) -> BestWeights:
        acc = state.metrics.get("val/acc")
        return cls(
            step=state.step,
            epoch=state.epoch,
            val_loss=float(state.metrics["val/loss"]),
            val_acc=float(acc) if acc is not None else None,
            saved=capture(state.model),
        )

    @property
    def model(self) -> dict[str, Any]:
        return self.saved.model

    def restore(self, state: FitState) -> None:
        apply(self.saved, model=state.model)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (``torch.load(..., weights_only=True)`` reads it back); weights by reference."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "model": self.saved.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestWeights:
        return cls(
            step=int(data["step"]),
            epoch=int(data["epoch"]),
            val_loss=float(data["val_loss"]),
            val_acc=None if data.get("val_acc") is None else float(data["val_acc"]),
            saved=TrainingState(model=data["model"]),
        )


def set_dropout(model: torch.nn.Module, p: float, lower: bool = False) -> list[tuple[float, float]]:
    """Raise every ``nn.Dropout``'s probability to at least ``p`` (``lower``: cut it to at most ``p``), in
    place; the (before, after) of each changed. A module attribute: no state dict carries it."""
    changed = []
    for module in model.modules():
        if not isinstance(module, torch.nn.modules.dropout._DropoutNd):
            continue
        if (module.p > p) if lower else (module.p < p):
            changed.append((module.p, p))
            module.p = p
    return changed
