"""The markdown file each benchmark writes beside printing its table: what was run, then the output as printed."""

from __future__ import annotations

import shlex
from pathlib import Path


def command_line(script: str, argv: list[str]) -> str:
    """The command that produced a result, with its arguments but not ``--out`` (where the file went)."""
    args, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out="):
            skip = False
            continue
        if arg == "--out":
            skip = True
            continue
        args.append(arg)
    return shlex.join(["python", f"bench/{script}", *args])


def write_results(out: Path, script: str, text: str, argv: list[str]) -> None:
    """Write ``text`` to ``out`` under a heading naming ``bench/<script>`` and the command that produced it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# bench/{script}\n\n`{command_line(script, argv)}`\n\n{text}\n", encoding="utf-8"
    )
