"""Where ``trainer.resume`` points: a checkpoint file, a run directory, or ``auto``."""

from __future__ import annotations

from pathlib import Path

from runner.errors import UserError


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """Resolve ``trainer.resume`` to a checkpoint file, or None to start fresh.

    ``auto`` continues from ``<run_dir>/checkpoints/last.pt`` when it exists
    (a fixed ``hydra.run.dir``, a re-queued cluster job) and starts fresh
    otherwise. A path may name a ``.pt`` file or a run directory.
    """
    if resume in (None, "", False):
        return None
    if resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"trainer.resume={resume}: no checkpoint at {path}; give a .pt file, a run directory "
                        "with checkpoints/last.pt, or trainer.resume=auto")
    return path
