"""The run directory's life: a start refused before any work leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

# what Hydra writes into a fresh run directory before the task function runs
HYDRA_ONLY = {".hydra", "train.log"}


def discard_if_unused(run_dir: Path) -> bool:
    """Remove ``run_dir`` when it holds only what Hydra wrote at launch; True when it did.

    A directory with anything else (a checkpoint, a report, an earlier run resumed into it) is kept.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - HYDRA_ONLY:
        return False
    log = run_dir / "train.log"
    if log.is_file() and log.read_text(encoding="utf-8", errors="replace").strip():
        return False  # something was logged: keep it for the user to read
    shutil.rmtree(run_dir, ignore_errors=True)
    return True
