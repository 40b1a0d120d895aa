"""User errors: bad config values or input files, reported in one line without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: the message names the key or file and the fix.

    The entry point prints ``error: <message>`` and exits with code 2.
    """

    exit_code = 2
