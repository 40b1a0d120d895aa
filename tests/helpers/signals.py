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

    def __init__(self, epoch: int = -1, signum: int = int(signal.SIGINT)) -> None:
        self.epoch, self.signum, self.sent = epoch, signum, False

    def on_validation_end(self, state: FitState) -> None:
        last = state.max_steps and state.step >= state.max_steps
        if not self.sent and (state.epoch == self.epoch or (self.epoch == -1 and last)):
            self.sent = True
            os.kill(os.getpid(), self.signum)
