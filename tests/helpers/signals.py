"""A hook that sends this process a real signal at a chosen point of the fit (tests load it with
``+callbacks.zz_signal._target_=helpers.signals.SignalAtValidation``)."""

from __future__ import annotations

import os
import signal

from diag.hooks import FitState, Hook


class SignalAtValidation(Hook):
    """``os.kill(getpid(), SIGINT)`` at the end of validation of epoch ``epoch`` (-1: the last one).

    The runner's handler is installed, so this is exactly a Ctrl-C arriving during that validation.
    """

    def __init__(
        self, epoch: int = -1, signum: int = int(signal.SIGINT), when_env: str | None = None
    ) -> None:
        self.epoch, self.signum, self.sent = epoch, signum, False
        # only while this environment variable is set: the same command relaunched without it runs on
        self.armed = when_env is None or bool(os.environ.get(when_env))

    def on_validation_end(self, state: FitState) -> None:
        last = state.max_steps and state.step >= state.max_steps
        if not self.armed:
            return
        if not self.sent and (state.epoch == self.epoch or (self.epoch == -1 and last)):
            self.sent = True
            os.kill(os.getpid(), self.signum)


class SignalAtFitEnd(Hook):
    """``os.kill(getpid(), SIGINT)`` ``times`` times at the fit's end: after the test pass, before the
    summary figure and the report. Twice is a user pressing Ctrl-C again while the run finishes."""

    def __init__(self, times: int = 1) -> None:
        self.times = times

    def on_fit_end(self, state: FitState) -> None:
        for _ in range(self.times):
            os.kill(os.getpid(), signal.SIGINT)


def interrupt_at_build() -> None:
    """A hook target whose construction is a Ctrl-C during the run's set-up (no handler installed yet)."""
    os.kill(os.getpid(), signal.SIGINT)
