"""The policy's carried state, one dataclass for the three places that copy it.

A checkpoint (``state_dict``), rank 0's decision under DDP and a resume all go through
:meth:`PolicyState.as_dict` / :meth:`PolicyState.from_dict`, so they cannot drift apart on which
fields they carry. The restart request is not here: it is a message to the attempt loop
(``Session.restart_request``), derived again from the actions on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from runner.autotrainer.snapshots import BestWeights


@dataclass
class PolicyState:
    """What the policy has done and what must outlive the model's and optimizer's state dicts.

    ``actions`` and ``gave_up`` are the session's lists (they span attempts); the rest is this attempt's.
    """

    actions: list[dict[str, Any]] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)  # codes nothing more will be tried for
    # code -> step of the last action on it
    last_acted: dict[str, int] = field(default_factory=dict)
    lr_scale: float = 1.0  # product of this attempt's online LR factors (a restart keeps it)
    lr_peak: float = 0.0  # the highest LR since the last action (restore_lr goes back to it)
    clip_turned_on: bool = False  # clipping is the loop's setting: not in any state dict
    dropout: float | None = None  # a module attribute: not in the model's state dict
    dropout_lowered: float | None = None  # dropout cut to at most this (lower_regularization)
    seen_codes: set[str] = field(default_factory=set)  # codes diagnosed at min_severity or above
    peak_update_ratio: float = (
        0.0  # this attempt's highest |dw|/|w| per step (sizes a restart's LR cut)
    )
    # the same peak with each sample read at the recipe's LR, the schedule's position undone
    # (:mod:`lr_evidence`): sizes the cut
    peak_ratio_at_recipe_lr: float = 0.0
    best: BestWeights | None = None  # best validation loss of this attempt (early stopping)

    def as_dict(self) -> dict[str, Any]:
        """Plain data: ``torch.load(..., weights_only=True)`` and ``broadcast_object`` both carry it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["seen_codes"] = sorted(self.seen_codes)
        out["best"] = None if self.best is None else self.best.as_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyState:
        """The inverse of :meth:`as_dict`; a field the data lacks (an older checkpoint) starts as new."""
        new = cls()
        return cls(
            actions=list(data.get("actions", new.actions)),
            gave_up=list(data.get("gave_up", new.gave_up)),
            last_acted=dict(data.get("last_acted", new.last_acted)),
            lr_scale=float(data.get("lr_scale", new.lr_scale)),
            lr_peak=float(data.get("lr_peak", new.lr_peak)),
            clip_turned_on=bool(data.get("clip_turned_on", new.clip_turned_on)),
            dropout=None if data.get("dropout") is None else float(data["dropout"]),
            dropout_lowered=None
            if data.get("dropout_lowered") is None
            else float(data["dropout_lowered"]),
            seen_codes=set(data.get("seen_codes", new.seen_codes)),
            peak_update_ratio=float(data.get("peak_update_ratio", new.peak_update_ratio)),
            peak_ratio_at_recipe_lr=float(
                data.get("peak_ratio_at_recipe_lr", new.peak_ratio_at_recipe_lr)
            ),
            best=None if data.get("best") is None else BestWeights.from_dict(data["best"]),
        )
