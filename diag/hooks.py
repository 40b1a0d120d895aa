"""The hook protocol between a training loop and whatever watches it.

A loop (the runner's, a hand-written one, a Lightning callback) owns a
:class:`FitState` and calls the five events of every :class:`Hook` it was
given. Hooks read the state; they never drive the loop except through the
few fields meant for it (``stop_training``, the ``issues`` and ``actions`` they
fill) and the loop's own setters (:class:`Loop`). Keeping this small is what lets
diagnostics plug into any loop.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import torch

from diag.run_files import open_run_file

log = logging.getLogger("diag")


class EventLog:
    """Append-only ``events.jsonl``: diagnoses as they change, actions, skipped steps.

    Each line is flushed as it is written so that a killed run keeps its story.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[Any] | None = None

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"kind": kind, "time": round(time.time(), 3), **fields}
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open_run_file(self.path, "a")
            self._fh.write(json.dumps(record, default=_json_default) + "\n")
            self._fh.flush()
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


class Loop(Protocol):
    """What a hook may ask of the loop driving the fit (the runner's ``Trainer`` is one)."""

    clip_max_norm: float | None

    def set_clip(self, max_norm: float | None) -> None:
        """Clip the global gradient norm to ``max_norm`` from the next step on (None: no clipping)."""


@dataclass
class FitState:
    """What a loop hands its hooks. Tensors stay on the device; hooks decide when to read them.

    ``loss`` and ``grad_norm`` are the current step's values as device tensors
    (``grad_norm`` is the global norm before clipping, in real units even under
    AMP). ``metrics`` holds host floats of the last validation/test pass.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: Any = None
    run_dir: Path | None = None
    writer: Any = None  # a torch.utils.tensorboard.SummaryWriter, or None
    events: EventLog = field(default_factory=lambda: EventLog(None))
    num_classes: int | None = None
    is_rank_zero: bool = True
    epoch: int = 0
    step: int = 0  # optimizer steps taken so far (global, across epochs)
    batch_idx: int = 0
    steps_per_epoch: int = 0
    max_steps: int = 0
    batch_size: int = 0
    # examples in the last validation pass (all ranks): the noise of its accuracy is that of a binomial of this n
    val_examples: int = 0
    loss: torch.Tensor | None = None
    grad_norm: torch.Tensor | None = None
    lr: float = 0.0
    step_skipped: bool = False
    skipped_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # The live diagnosis (report.json's issue dicts; None until a diagnosing hook first ran) and the
    # repairs a policy took: written by hooks, read by the loop's owner for the report.
    issues: list[dict[str, Any]] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    stop_training: bool = False
    stop_reason: str = ""
    generator: torch.Generator | None = None  # the data-order RNG, saved with checkpoints
    loop: Loop | None = None  # the loop driving this fit, for hooks that act on its settings
    annotations: list[tuple[int, str]] = field(
        default_factory=list
    )  # (step, label) marked on summary.png

    @property
    def current_lr(self) -> float:
        """The first param group's LR, read from the optimizer (cheap: a host float)."""
        if self.optimizer is None:
            return self.lr
        return float(self.optimizer.param_groups[0]["lr"])


class Hook:
    """Base class: override the events you need. All default to doing nothing."""

    def on_fit_start(self, state: FitState) -> None:
        """Once, after everything is built and before the first step (``stop_training`` set here: no step at all)."""

    def on_train_batch_end(self, state: FitState) -> None:
        """After every optimizer step (or skipped step): keep it cheap, no host syncs."""

    def on_validation_end(self, state: FitState) -> None:
        """After each validation pass; ``state.metrics`` holds ``val/loss`` and ``val/acc``."""

    def on_epoch_end(self, state: FitState) -> None:
        """After validation, at the end of every epoch."""

    def on_fit_end(self, state: FitState) -> None:
        """Once, after training and the test pass; the place to write reports and close files."""

    def flush(self) -> None:
        """Put what this hook has buffered for its files on disk: a checkpoint is about to be written, and
        the files must hold every line up to it (a run resumed from it continues them from there)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for this hook to resume seamlessly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class HookList(Hook):
    """Calls named hooks in order; itself a :class:`Hook`.

    Hooks are named (the runner uses their config names) so that a checkpoint's hook states find
    their hooks again when a hook is added or removed between runs. The per-step event goes only to
    hooks that override it (bound methods listed once here), so a hook with nothing to do per step
    costs the loop nothing.
    """

    def __init__(self, hooks: Mapping[str, Hook] | Iterable[Hook] = ()) -> None:
        if isinstance(hooks, Mapping):
            named = dict(hooks)
        else:
            named = {}
            for h in hooks:
                base = type(h).__name__
                name, n = base, 1
                while name in named:
                    n += 1
                    name = f"{base}-{n}"
                named[name] = h
        self.named = named
        self.hooks = tuple(named.values())
        self.unmatched: list[str] = []  # names of saved hook states the last load found no hook for
        self._on_batch_end = tuple(
            h.on_train_batch_end
            for h in self.hooks
            if type(h).on_train_batch_end is not Hook.on_train_batch_end
        )

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)

    def on_fit_start(self, state: FitState) -> None:
        for h in self.hooks:
            h.on_fit_start(state)

    def on_train_batch_end(self, state: FitState) -> None:
        for on_batch_end in self._on_batch_end:
            on_batch_end(state)

    def on_validation_end(self, state: FitState) -> None:
        for h in self.hooks:
            h.on_validation_end(state)

    def on_epoch_end(self, state: FitState) -> None:
        for h in self.hooks:
            h.on_epoch_end(state)

    def on_fit_end(self, state: FitState) -> None:
        for h in self.hooks:
            h.on_fit_end(state)

    def flush(self) -> None:
        for h in self.hooks:
            h.flush()

    def state_dict(self) -> dict[str, Any]:
        """Each hook's state under its name (hooks with nothing to keep are left out)."""
        return {name: sd for name, h in self.named.items() if (sd := h.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each hook its saved state; warn about saved states no hook takes (kept in ``unmatched``).

        A checkpoint written before hooks were named keys them ``"<index>:<class>"``; those are
        matched by class.
        """
        by_class = {
            key.split(":", 1)[1]: value
            for key, value in state.items()
            if ":" in key and key.split(":", 1)[0].isdigit()
        }
        used: set[str] = set()
        for name, h in self.named.items():
            if name in state:
                h.load_state_dict(state[name])
                used.add(name)
            elif type(h).__name__ in by_class:
                h.load_state_dict(by_class[type(h).__name__])
                used.update(k for k in state if k.endswith(":" + type(h).__name__))
        self.unmatched = [k for k, v in state.items() if k not in used and v]
        if self.unmatched:
            log.warning(
                "resume: the checkpoint holds state for hook(s) %s, which this run does not have; "
                "that state is not restored (run with the hooks it was saved with to keep it)",
                ", ".join(self.unmatched),
            )


def step_scalar(value: Any, name: str) -> torch.Tensor:
    """``value`` as a 0-d tensor: what the per-step event reads ``FitState.loss``/``grad_norm`` as.

    A tensor is returned as it is (no copy, no host sync: the runner's loop passes device tensors);
    a one-element tensor is viewed as 0-d; a Python or NumPy number becomes a CPU tensor once, here.
    Anything else raises at the first wrong call, with what to pass instead.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return value
        if value.numel() == 1:
            return value.reshape(())
        raise ValueError(
            f"FitState.{name} must be one number per step, got a tensor of shape {tuple(value.shape)}: "
            f"pass the batch's mean (e.g. loss.detach() of a reduced loss)"
        )
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    if value is not None and type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return torch.tensor(float(value))
    hint = {
        "loss": "loss.detach() (a 0-d tensor) or loss.item() (a float)",
        "grad_norm": "the global gradient norm, e.g. "
        "torch.nn.utils.clip_grad_norm_(model.parameters(), float('inf'))",
    }.get(name, "a 0-d tensor or a float")
    raise TypeError(
        f"FitState.{name} must be a 0-d tensor or a float, got {type(value).__name__}: set it to {hint}"
    )


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/Inf: write ``null`` for them instead of an invalid literal."""
    return value if math.isfinite(value) else None
