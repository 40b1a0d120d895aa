"""User errors: bad config values or input files, reported in one line without a traceback."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Something the user can fix: the message names the key or file and the fix.

    The entry point prints ``error: <message>`` and exits with code 2.
    """

    exit_code = 2


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after saving its state; the message says how to resume.

    Exit codes follow the shell convention: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def report_error(exc: UserError) -> None:
    """``error: <message>`` on stderr, one line per problem the error lists."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"error: {line}", file=sys.stderr)
