"""SIGINT/SIGTERM (Ctrl-C, a cluster pre-emption): finish the current step, then stop cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

    def handler(signum: int, _frame) -> None:
        loop.interrupted = signal.Signals(signum).name
        signal.signal(signum, previous[signum])

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
