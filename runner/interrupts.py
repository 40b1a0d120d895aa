"""SIGINT/SIGTERM (Ctrl-C, a cluster pre-emption): finish the current step, then stop cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import Interrupted

if TYPE_CHECKING:
    from diag.hooks import FitState, HookList
    from runner.trainer import Trainer

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(loop: Any) -> Iterator[None]:
    """While active, a signal sets ``loop.interrupted`` to its name instead of killing the process.

    A second Ctrl-C restores the default behaviour, so an impatient user can still abort.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread (e.g. joblib workers)
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum)
        loop.interrupted = name.name
        signal.signal(name, previous[name])

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_code(name: str) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signal.Signals[name])


def interrupted(state: FitState, trainer: Trainer, hooks: HookList, run_dir: Path) -> Interrupted:
    """Save a mid-epoch checkpoint and the report so far; build the exit that says how to resume."""
    from runner.checkpoint import CheckpointHook
    from runner.report import report_run
    from runner.resume import launch_resume_command

    name = trainer.interrupted or "SIGINT"
    saved = None
    for h in hooks:
        if isinstance(h, CheckpointHook):
            # an epoch with its history row is done: the checkpoint resumes at the next one
            saved = h.save_now(state, mid_epoch=len(state.history) <= state.epoch)
    report_run(state, run_dir, trainer.best_val_loss, completed=False, interrupted=name)
    state.events.write(
        "interrupted",
        step=state.step,
        epoch=state.epoch,
        signal=name,
        checkpoint=str(saved) if saved else None,
    )
    where = (
        f"checkpoint saved to {saved}" if saved else "no checkpoint hook configured: nothing saved"
    )
    return Interrupted(
        f"interrupted by {name} at step {state.step} (epoch {state.epoch + 1}); {where}\n"
        f"resume with: {launch_resume_command(run_dir)}",
        exit_code(name),
    )
