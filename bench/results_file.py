"""The markdown file each benchmark writes beside printing its table: what was run, then the output as printed."""

from __future__ import annotations

from pathlib import Path


def write_results(out: Path, script: str, text: str, quick: bool = False) -> None:
    """Write ``text`` to ``out`` under a heading naming ``bench/<script>`` and the command that produced it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# bench/{script}\n\n`python bench/{script}{' --quick' if quick else ''}`\n\n{text}\n",
                   encoding="utf-8")
