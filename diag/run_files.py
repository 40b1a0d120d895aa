"""Run files opened without following symbolic links.

A run directory may be shared or planted with links (``report.json -> /etc/passwd``); a writer that
followed them would overwrite whatever they point at, with the runner's privileges. Every file the
writers here create is opened with ``O_NOFOLLOW``: a link in its place is an ``OSError`` (ELOOP),
never a write elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_run_file(path: Path | str, mode: str = "w", encoding: str | None = "utf-8") -> IO[Any]:
    """``open(path, mode)`` for writing ("w", "a", "wb", "ab") that refuses a symbolic link at ``path``."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
    except BaseException:
        os.close(fd)
        raise


def write_run_text(path: Path | str, text: str) -> None:
    """``Path.write_text`` without following a link at ``path``."""
    with open_run_file(path, "w") as fh:
        fh.write(text)
