"""Where ``trainer.resume`` points: a checkpoint file, a run directory, or ``auto``."""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from runner.distributed import quote_override
from runner.errors import UserError

log = logging.getLogger(__name__)


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
        # anything there (a directory, a link) is the loader's to refuse, before any training
        return last if os.path.lexists(last) else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not os.path.lexists(path):
        raise UserError(
            f"trainer.resume={resume}: no checkpoint at {path}; give a .pt file, a run directory "
            "with checkpoints/last.pt, or trainer.resume=auto"
        )
    return path


def task_overrides(overrides: Sequence[str]) -> list[str]:
    """What made a run what it is: its overrides less where it writes and whether it resumes, sorted."""
    return sorted(
        o for o in overrides if not o.startswith(("trainer.resume=", "hydra.", "paths.log_dir="))
    )


def previous_unfinished_run(run_dir: Path, log_dir: Path, overrides: list[str]) -> Path | None:
    """The newest earlier run under ``log_dir/runs`` launched with the same overrides, with a checkpoint
    and no finished report: what ``trainer.resume=auto`` continues after a crash or a kill.

    A run killed during an AutoTrainer restart is not finished, though its top ``report.json`` (the
    first attempt's, which asked for the restart) says completed.
    """
    from diag.after_repair import awaits_attempt

    runs = Path(log_dir) / "runs"
    if not runs.is_dir():
        return None
    want = task_overrides(overrides)
    for candidate in sorted(runs.iterdir(), reverse=True):
        if (
            candidate.resolve() == Path(run_dir).resolve()
            or not (candidate / "checkpoints" / "last.pt").is_file()
        ):
            continue
        try:
            import yaml

            theirs = yaml.safe_load((candidate / ".hydra" / "overrides.yaml").read_text())
            report = candidate / "report.json"
            done = json.loads(report.read_text()) if report.is_file() else {}
        except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError):
            continue  # an unreadable run is not the one this command made: look further
        if not isinstance(theirs, list) or not isinstance(done, dict):
            continue
        finished = done.get("completed", False) and not awaits_attempt(done)
        if not finished and task_overrides([str(o) for o in theirs]) == want:
            return candidate
    return None


def resume_command(hydra_overrides: list[str], task_overrides: list[str], run_dir: Path) -> str:
    """The shell command that continues this run in its own directory, whatever chose that directory.

    It names the directory (``hydra.run.dir``): a run with its own ``hydra.run.dir``, one that
    ``trainer.resume=auto`` had continued, a multirun job and an AutoTrainer attempt (``attempt-N/``,
    continued from the run directory above it) all resume where they stopped. Quoted for a POSIX shell.
    """
    # imported here, not at start-up: only an interrupted run needs it
    from diag.readers import attempt_number

    run_dir = Path(run_dir)
    top = run_dir.parent if attempt_number(run_dir) is not None else run_dir
    keep = [
        o
        for o in hydra_overrides
        if not o.startswith(("hydra.mode=", "hydra.run.dir=", "hydra.sweep."))
    ]
    keep += [o for o in task_overrides if not o.startswith("trainer.resume=")]
    # quoted twice: for Hydra's override grammar (spaces, commas, quotes), then for the shell
    where = quote_override(str(top.resolve()))
    return shlex.join(
        ["python", "-m", "runner", *keep, f"hydra.run.dir={where}", "trainer.resume=auto"]
    )


def continue_previous_run(resume: str | None, run_dir: Path, log_dir: Path) -> Path:
    """With ``trainer.resume=auto``, the same command continues an earlier unfinished run in its own directory.

    This launch's fresh Hydra directory then only keeps its config and log.
    """
    if resume != "auto" or (run_dir / "checkpoints" / "last.pt").is_file():
        return run_dir
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return run_dir
    previous = previous_unfinished_run(run_dir, log_dir, list(HydraConfig.get().overrides.task))
    if previous is None:
        return run_dir
    log.info(
        "trainer.resume=auto: continuing %s (this launch's %s keeps only its Hydra config and log)",
        previous,
        run_dir,
    )
    return previous


def sweep_resume_command(sweep_dir: Path) -> str | None:
    """The command that continues a multirun in its folder: the sweep's own overrides (its value lists,
    from ``multirun.yaml``) with ``-m``, ``hydra.sweep.dir`` and ``trainer.resume=auto``. Finished jobs
    are skipped, an interrupted one resumes from its checkpoint and the jobs not started run. None when
    ``multirun.yaml`` cannot be read."""
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra.overrides
        hydra, task = [str(o) for o in saved.hydra], [str(o) for o in saved.task]
    except Exception:  # missing, unreadable or not Hydra's: no sweep command to give
        return None
    keep = [o for o in hydra if not o.startswith(("hydra.mode=", "hydra.run.", "hydra.sweep.dir="))]
    keep += [o for o in task if not o.startswith("trainer.resume=")]
    where = quote_override(str(Path(sweep_dir).resolve()))
    return shlex.join(
        ["python", "-m", "runner", "-m", *keep, f"hydra.sweep.dir={where}", "trainer.resume=auto"]
    )


def launch_resume_command(run_dir: Path) -> str:
    """:func:`resume_command` for the overrides Hydra launched this process with; in a multirun, the
    command that continues the whole sweep (the job alone would leave the jobs after it unrun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = sweep_resume_command(Path(HydraConfig.get().sweep.dir))
        if sweep is not None:
            return sweep
    given = HydraConfig.get().overrides if HydraConfig.initialized() else None
    return resume_command(
        list(given.hydra) if given else [], list(given.task) if given else [], run_dir
    )
