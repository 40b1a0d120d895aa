"""The run directory's life: owned by one process at a time, free of planted links, and a start refused
before any work leaves nothing behind."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.errors import UserError

LOCK = ".lock"
# what Hydra (and the lock) write into a fresh run directory before the task function runs
HYDRA_ONLY = {".hydra", "train.log", LOCK}
# the folders whose entries the runner reads or writes (besides the run directory itself)
_WATCHED = (".hydra", "checkpoints", "tb")

_held: dict[
    Path, int
] = {}  # run directory -> the descriptor holding its lock (for this process's life)
# run directory -> the topmost folder its claim created (a discarded run takes the empty ones with it)
_made: dict[Path, Path] = {}


def _make(folder: Path, key: str) -> None:
    """``mkdir -p folder``; a file in the way or an unwritable place is one line naming ``key``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        in_way = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        where = f"{in_way} is a file" if in_way is not None else "a file is in the way"
        # a run's folder is paths.log_dir's unless hydra.run.dir was given: the key a user may have set
        also = " (or another paths.log_dir)" if key == "hydra.run.dir" else ""
        raise UserError(f"{key}={folder}: {where}; choose another directory{also}") from None
    except OSError as exc:
        raise _unwritable(folder, exc) from None


def _unwritable(run_dir: Path, exc: OSError) -> UserError:
    return UserError(
        f"run directory {run_dir} is not writable ({exc.strerror or exc}): make it writable, or point "
        "paths.log_dir or hydra.run.dir at a writable directory"
    )


def claim(run_dir: Path) -> None:
    """Own ``run_dir`` until this process ends: an exclusive ``flock`` on ``<run_dir>/.lock``.

    A second run into the same directory is refused (one line, exit 2) before it writes anything;
    a directory that cannot be created or written, or that holds symbolic links where run files
    belong, is refused the same way. Claiming a directory this process holds is a no-op.
    """
    run_dir = Path(os.path.abspath(run_dir))
    if run_dir in _held:
        return
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    _make(run_dir, "hydra.run.dir")
    if missing:
        _made[run_dir] = missing[-1]  # the topmost folder this claim created
    refuse_links(run_dir)
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise _unwritable(run_dir, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(
            f"run directory {run_dir} is in use by another run (pid {holder}): wait for it to end, "
            "or choose another hydra.run.dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        # a directory that takes the lock file but no other new file (read-only remount, no space)
        probe = run_dir / f".write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as exc:
        os.close(fd)
        raise _unwritable(run_dir, exc) from None
    _held[run_dir] = fd
    remove_orphans(run_dir / "checkpoints")  # ours now: a killed writer's leftovers go


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files a killed checkpoint writer left (``.last.pt.*.tmp``); returns them.

    Called with the run directory locked, so no other writer owns them.
    """
    removed = []
    for tmp in folder.glob(".*.pt.*.tmp") if folder.is_dir() else ():
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def refuse_links(run_dir: Path) -> None:
    """Refuse a run directory with symbolic links where the runner reads or writes its files.

    Writers open with ``O_NOFOLLOW`` as well; this says so once, up front, naming the link.
    """
    folders = [run_dir, *(run_dir / name for name in _WATCHED)]
    folders += [p for p in run_dir.glob("attempt-*") if p.is_dir() and not p.is_symlink()]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            entries = []
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                continue
            raise _unwritable(folder, exc) from None
        for entry in entries:
            if entry.is_symlink():
                raise UserError(
                    f"{entry.path} is a symbolic link: the runner does not read or write run files "
                    "through links (one could point anywhere); remove it, or choose another "
                    "hydra.run.dir"
                )


def release(run_dir: Path) -> None:
    """Give up the lock on ``run_dir`` (a refused start, before its directory is discarded)."""
    fd = _held.pop(Path(os.path.abspath(run_dir)), None)
    if fd is not None:
        os.close(fd)


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
    release(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    # the folders the claim made for it, now empty (a refused first run left outputs/runs/ behind)
    top = _made.pop(Path(os.path.abspath(run_dir)), None)
    if top is not None:
        for parent in Path(os.path.abspath(run_dir)).parents:
            if top not in (parent, *parent.parents):
                break
            try:
                parent.rmdir()  # only an empty one: another run's files keep it
            except OSError:
                break
    return True


# a run directory that holds one of these holds a run: starting afresh there would overwrite it
RUN_MARKS = ("checkpoints/last.pt", "report.json")


def refuse_a_run_there(run_dir: Path, sweep: str | None = None) -> None:
    """A fresh start (no ``trainer.resume``) in a directory that holds a run is refused before anything is
    written: it replaced the run's checkpoints (a resumable one too), report and ``.hydra/`` config, and
    appended a second run to its event logs. ``sweep``: the multirun's folder, named in the message."""
    held = [mark for mark in RUN_MARKS if (Path(run_dir) / mark).exists()]
    if not held:
        return
    held_by = f"{run_dir} already holds a run ({', '.join(held)})"
    if sweep:
        raise UserError(
            f"hydra.sweep.dir={sweep}: {held_by}: choose another hydra.sweep.dir, or run the same sweep "
            "again with trainer.resume=auto to continue it (nothing was changed)"
        )
    raise UserError(
        f"hydra.run.dir={run_dir}: {held_by}: continue it with trainer.resume=auto, or choose another "
        "hydra.run.dir (nothing was changed)"
    )


# the sweep folder this process's multirun made (None: it was there before, or no multirun started)
_made_sweep: Path | None = None


def discard_unused_sweep() -> bool:
    """Remove the sweep folder this process made when no job got as far as its directory (a job's
    overrides that do not compose: ``-m model=mlp,mpl``), leaving only Hydra's ``multirun.yaml``."""
    sweep = _made_sweep
    if sweep is None or not sweep.is_dir() or {p.name for p in sweep.iterdir()} - {"multirun.yaml"}:
        return False
    shutil.rmtree(sweep, ignore_errors=True)
    return True


def _fresh_start(config: DictConfig) -> bool:
    trainer = config.get("trainer") or {}
    return trainer.get("resume") in (None, "", False)


class ClaimRunDir(Callback):
    """Hydra callback: own a single run's directory once the config is composed, before Hydra writes into it.

    ``main`` claims a plain ``hydra.run.dir=<path>`` before Hydra starts; a directory given through an
    interpolation (``hydra.run.dir=${paths.log_dir}/mine``) or named by the config is known only after
    composition. ``on_run_start`` runs then, before Hydra creates the directory, saves ``.hydra/`` or opens
    ``train.log``, so a second run into a directory in use is refused as early as with a plain path.
    (Multirun jobs are claimed first thing in the task: their directories are made per job.)
    """

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        from runner import distributed
        from runner.errors import report_error

        if distributed.launch_rank() != 0:  # one owner, as in the task (see runner/__main__.py)
            return
        try:
            run_dir = Path(str(config.hydra.run.dir))
            claim(run_dir)
            if _fresh_start(config):
                refuse_a_run_there(run_dir)
        except UserError as exc:
            # Hydra turns a callback's exceptions into warnings and goes on: exit here (SystemExit passes)
            report_error(exc)
            sys.exit(exc.exit_code)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        """A sweep into a folder whose jobs hold runs is refused before its first job overwrites one (and
        before the summary mixes two sweeps' jobs); ``trainer.resume=auto`` continues them instead, and a
        study kept in a storage (``hparams_search=lr_optuna``) continues there by design."""
        from runner import distributed
        from runner.errors import report_error

        global _made_sweep
        sweep = Path(str(config.hydra.sweep.dir))
        if distributed.launch_rank() != 0:
            return
        try:
            _made_sweep = None if sweep.exists() else sweep
            # the sweeper makes it next: a file in the way or no permission was its traceback
            _make(sweep, "hydra.sweep.dir")
            # a sweeper with a storage (Optuna's study) continues in its folder by design
            continues = bool(config.hydra.sweeper.get("storage"))
            if _fresh_start(config) and not continues:
                for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
                    refuse_a_run_there(job, str(sweep))
        except UserError as exc:
            report_error(exc)
            sys.exit(exc.exit_code)
