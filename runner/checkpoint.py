"""Checkpoints: taken by time and work, written atomically off the training thread, loaded safely.

A checkpoint costs the loop only a copy of the state to the CPU; a background thread serialises,
fsyncs and renames it. How often: every ``every_minutes`` (never so often that the copies and writes
take more than ``max_time_fraction`` of the wall time), every ``every_n_steps`` when set, always at the
end of the fit and on SIGINT/SIGTERM.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import os
import pickle
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diag.hooks import FitState, Hook
from diag.training_state import to_cpu
from runner.checkpoint_schema import BEST_WEIGHTS, FORMAT, check_best_weights, check_payload
from runner.errors import UserError
from runner.run_dir import remove_orphans
from runner.trainer import Trainer

log = logging.getLogger(__name__)


SEAL = b"runner-sha256:"  # the zip comment that carries the archive's sha256
_SEAL_LEN = len(SEAL) + 64
_EOCD = b"PK\x05\x06"  # the zip end-of-central-directory record: 22 bytes, then its comment


def seal(archive: bytes) -> bytes:
    """``torch.save``'s zip archive with its sha256 in the zip comment (``torch.load`` still reads it).

    The hash covers every byte before the comment, so a flipped bit or a truncation anywhere is caught
    before the payload is unpickled, and the file stays an ordinary checkpoint for any other tool.
    """
    if archive[-22:-18] != _EOCD or archive[-2:] != b"\x00\x00":
        raise ValueError("torch.save did not end its archive with an empty zip comment")
    body = archive[:-2] + _SEAL_LEN.to_bytes(2, "little")
    return body + SEAL + hashlib.sha256(body).hexdigest().encode()


def unseal_error(data: bytes) -> str | None:
    """Why ``data`` is not a sealed checkpoint whose hash matches, or None when it is."""
    if len(data) < 22 + _SEAL_LEN or data[-_SEAL_LEN:-64] != SEAL:
        return "no integrity record at its end (truncated, or not written by this runner)"
    body, digest = data[:-_SEAL_LEN], data[-64:]
    if body[-22:-18] != _EOCD or int.from_bytes(body[-2:], "little") != _SEAL_LEN:
        return "its integrity record is damaged"
    if hashlib.sha256(body).hexdigest().encode() != digest:
        return "its sha256 does not match its contents (a changed or damaged file)"
    return None


def serialize(payload: dict[str, Any]) -> bytes:
    """The sealed bytes of a checkpoint (serialised in memory: the disk sees one plain write)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return seal(buffer.getvalue())


def check_target(path: Path, folder: bool = False) -> None:
    """A run file's place holds a regular file (a ``folder``: a directory) or nothing; a symlink or the
    other kind there is refused."""
    if path.is_symlink():
        raise UserError(
            f"{path} is a symbolic link: the runner does not write or read run files through links; "
            "remove it (or choose another hydra.run.dir)"
        )
    if path.exists() and (not path.is_dir() if folder else not path.is_file()):
        want, found = (
            ("folder", "a file") if folder else ("file", "a directory (or other non-file)")
        )
        raise UserError(
            f"{path} is {found} where a {want} belongs: remove it, or choose another hydra.run.dir"
        )


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush and fsync, then rename over ``path``.

    A crash mid-write leaves the previous checkpoint intact. The temporary file is created new
    (``mkstemp``: never through a link); a symlink or directory at ``path`` is refused, not replaced.
    """
    tmp = None
    try:
        data = serialize(payload)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_target(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a short write as a RuntimeError
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        kept = " (the previous checkpoint is intact)" if path.is_file() else ""
        why = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:120]
        fix = (
            "make it writable or point paths.log_dir at a writable directory"
            if isinstance(exc, PermissionError)
            else "free disk space or point paths.log_dir at a writable directory"
        )
        raise UserError(f"cannot write checkpoint {path}: {why}{kept}; {fix}") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def read_run_file(path: Path) -> bytes:
    """The bytes of a regular file, opened without following a symbolic link (``O_NOFOLLOW``)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely: :func:`read_checkpoint`, then every field's type and range
    (:func:`runner.checkpoint_schema.check_payload`); any failure is one :class:`UserError`.
    """
    payload = read_checkpoint(path)
    check_payload(payload, Path(path))
    return payload


def load_best_weights(path: Path) -> dict[str, Any]:
    """best.pt safely (:func:`read_checkpoint`, then its fields): ``model`` is a ``state_dict`` for
    ``model.load_state_dict``; ``epoch``, ``step``, ``monitor`` and ``value`` say which epoch it is."""
    payload = read_checkpoint(path)
    check_best_weights(payload, Path(path))
    return payload


def read_checkpoint(path: Path) -> Any:
    """The payload of a sealed file: not through a link, hash checked, then ``weights_only`` unpickling."""
    path = Path(path)
    try:
        data = read_run_file(path)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist: check trainer.resume") from None
    except OSError as exc:
        if path.is_symlink():
            raise UserError(
                f"checkpoint {path} is a symbolic link: refused (a planted link could point anywhere); "
                "give the real file to trainer.resume"
            ) from None
        if path.is_dir():
            raise UserError(
                f"checkpoint {path} is a directory, not a file: remove it, or give trainer.resume a .pt file"
            ) from None
        fix = (
            "give trainer.resume a .pt file"
            if exc.errno == errno.EISDIR
            else "check its permissions"
        )
        raise UserError(
            f"checkpoint {path} cannot be read ({exc.strerror or exc}): {fix}"
        ) from None
    why = unseal_error(data)
    if why is not None:
        raise UserError(
            f"checkpoint {path} was refused: {why}; use another checkpoint or start without "
            "trainer.resume"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain data "
            f"({first[:120]}); only load checkpoints you trust and that this runner wrote"
        ) from None
    except Exception as exc:  # torch's reader fails in many ways on bytes it did not write
        raise UserError(
            f"checkpoint {path} is corrupt ({type(exc).__name__}): "
            "use another checkpoint or start without trainer.resume"
        ) from None
    return payload


def inside(run_dir: Path, name: str, key: str) -> Path:
    """``run_dir / name``, refusing names from configs that would escape the run directory."""
    root = Path(run_dir).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UserError(
            f"{key}={name!r} points outside the run directory {root}: use a relative name "
            "without '..'"
        )
    return target


_ATOMS = (int, float, bool, str, bytes, type(None))
# exact types, checked over a whole list in C (a subclass of one, a NumPy float, takes the long way)
_ATOM_TYPES = frozenset(_ATOMS)


def snapshot(obj: Any) -> Any:
    """A copy that shares nothing mutable with ``obj``: tensors cloned to the CPU (``to_cpu``), containers rebuilt.

    Lists and dicts of plain numbers (the diagnostics' series, the history's entries) are copied whole
    rather than number by number, which is most of a checkpoint's copy when the model is small.
    """
    if isinstance(obj, torch.Tensor):
        return to_cpu(obj)
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, dict):
        if _ATOM_TYPES.issuperset(map(type, obj.values())):
            return dict(obj)  # a history entry, a param group's settings
        return {k: snapshot(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        if _ATOM_TYPES.issuperset(map(type, obj)):  # a series: its numbers, whole
            return type(obj)(obj)
        return type(obj)(snapshot(v) for v in obj)
    return to_cpu(obj)  # anything else: a deep copy


def _loop(state: FitState) -> Trainer:
    """The runner's loop, which knows how to capture the whole fit (this hook only decides when)."""
    if not isinstance(state.loop, Trainer):
        raise TypeError("CheckpointHook saves through runner.trainer.Trainer: fit with it")
    return state.loop


class CheckpointWriter:
    """One background thread that writes checkpoints with :func:`save_atomic`, one at a time.

    The training thread hands over payloads already copied to the CPU and goes on training. A request
    for a file that is still queued replaces the queued payload (only the newest state matters); a
    request for another file waits its turn. The first error (a full disk) is kept and raised, as the
    :class:`UserError` ``save_atomic`` makes, by the next :meth:`submit` or :meth:`join`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: dict[Path, dict[str, Any]] = {}
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.written: list[Path] = []  # every file written, in order
        self._write_seconds = 0.0  # wall time of the last write (the cadence budgets it)
        self._since: float | None = None  # when the writer last went from idle to busy

    def submit(self, path: Path, payload: dict[str, Any]) -> None:
        """Queue ``payload`` (which must not alias live tensors) for ``path``; returns at once."""
        self.raise_error()
        with self._cond:
            self._queue.pop(path, None)  # replaced: re-queued at the back, behind the other files
            self._queue[path] = payload
            if self._since is None:
                self._since = time.perf_counter()
            if self._thread is None or not self._thread.is_alive():
                # not a daemon: a process that ends without joining still finishes the write it queued
                self._thread = threading.Thread(target=self._run, name="checkpoint-writer")
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._thread = None  # the next submit starts a fresh thread
                    self._since = None
                    self._cond.notify_all()
                    return
                path = next(iter(self._queue))
                payload = self._queue.pop(path)
                self._busy = True
                started = time.perf_counter()
            try:
                save_atomic(payload, path)
                self.written.append(path)
            except BaseException as exc:  # kept for the training thread, which raises it
                with self._cond:
                    if self._error is None:
                        self._error = exc
                    self._queue.clear()
            finally:
                with self._cond:
                    self._write_seconds = time.perf_counter() - started
                    self._busy = False
                    self._cond.notify_all()

    def write_seconds(self) -> float:
        """How long writing takes: the last write's duration, or, if longer, how long the writer has been
        busy with what is queued now."""
        since = self._since
        running = time.perf_counter() - since if since is not None else 0.0
        return max(self._write_seconds, running)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        with self._cond:
            return not self._queue and not self._busy

    def join(self) -> None:
        """Wait until every queued checkpoint is on disk; raise the writer's error if it had one."""
        with self._cond:
            while self._queue or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    break  # nothing left that could write them
                self._cond.wait(timeout=1.0)
        self.raise_error()

    def raise_error(self) -> None:
        """Raise (once) the error a background write ended with."""
        error, self._error = self._error, None
        if error is None:
            return
        if isinstance(error, UserError):
            raise error
        raise UserError(f"cannot write checkpoint: {type(error).__name__}: {error}") from None


# what best.pt can be chosen by: the metrics every epoch of the loop produces
MONITORED = ("val/loss", "val/acc", "train/loss", "train/acc")


class CheckpointHook(Hook):
    """Saves ``last.pt`` by time and work (and at the fit's end), ``best.pt`` when ``monitor`` improves.

    ``every_minutes``: a checkpoint at most this long after the previous one, so a kill loses at most
    that much work; never sooner than ``max_time_fraction`` allows given what the last one cost (the copy
    on this thread and the write beside it). ``every_n_steps`` adds saves every N steps whatever they
    cost (explicitly asked for). ``best.pt`` holds the model's weights of the best epoch
    (:meth:`best_weights`), copied when they improve and written with the next ``last.pt``, so the two
    files on disk agree on which loss was best. Weights, not a whole training state: the copy is made at
    every improving epoch, most epochs early in a run, where the full state (optimizer, series, history)
    cost the digits models ~1% of their epochs (``bench/epoch_costs.py``); ``last.pt`` is what a run
    resumes from.
    """

    def __init__(
        self,
        dirname: str = "checkpoints",
        save_last: bool = True,
        save_best: bool = True,
        monitor: str = "val/loss",
        every_n_steps: int | None = None,
        every_minutes: float | None = 10.0,
        max_time_fraction: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_minutes is not None and not float(every_minutes) > 0:
            raise UserError(
                f"callbacks.checkpoint.every_minutes={every_minutes}: use a positive number of "
                "minutes, or null to save only at the end of the fit"
            )
        if not 0 < float(max_time_fraction) <= 1:
            raise UserError(
                f"callbacks.checkpoint.max_time_fraction={max_time_fraction}: use a share of the wall "
                "time in (0, 1], e.g. 0.02"
            )
        self.dirname = dirname
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self.every_seconds = 60.0 * float(every_minutes) if every_minutes else None
        self.max_time_fraction = float(max_time_fraction)
        self.save_last = save_last
        self.save_best = save_best
        if monitor not in MONITORED:
            raise UserError(
                f"callbacks.checkpoint.monitor={monitor!r}: choose one of {', '.join(MONITORED)} "
                "(best.pt keeps the epoch where it is best: lowest loss, highest accuracy)"
            )
        self.monitor = monitor
        # an accuracy is best at its highest: taken as a loss, best.pt kept the worst epoch
        self.higher_is_better = monitor.endswith("/acc")
        self.best = -math.inf if self.higher_is_better else math.inf
        self.clock = clock
        self.writer = CheckpointWriter()
        self._best_payload: dict[str, Any] | None = (
            None  # improved weights not yet handed to the writer
        )
        self._saved_step = -1  # the step of the last last.pt handed to the writer
        self.saved_steps: list[int] = []  # the step of every last.pt handed to the writer
        self._last_save = clock()
        self._copy_seconds = 0.0  # what the last checkpoint cost this thread (copying the state)
        self._dir: tuple[Path, Path] | None = None  # (run directory, its checkpoint folder)

    def _folder(self, state: FitState) -> Path:
        """The checkpoint folder, checked once per fit (resolving a path asks the file system)."""
        assert state.run_dir is not None
        if self._dir is None or self._dir[0] != state.run_dir:
            folder = inside(state.run_dir, self.dirname, "callbacks.checkpoint.dirname")
            self._dir = (state.run_dir, folder)
        return self._dir[1]

    def on_fit_start(self, state: FitState) -> None:
        self._dir = None
        if state.run_dir is not None:
            folder = self._folder(state)
            if state.is_rank_zero:  # before any step: a bad place for a checkpoint costs no work
                check_target(folder, folder=True)
                for name in ("last.pt", "best.pt"):
                    check_target(folder / name)
                for tmp in remove_orphans(folder):
                    log.info("removed %s, left by a writer that was killed", tmp)
        self._last_save = self.clock()
        self._saved_step = (
            -1
        )  # nothing saved by this fit yet: its end writes last.pt even with no step taken

    def _due(self) -> bool:
        """The time cadence: ``every_minutes`` passed, and the last checkpoint's cost fits the budget."""
        if self.every_seconds is None:
            return False
        elapsed = self.clock() - self._last_save
        if elapsed < self.every_seconds:  # nearly every step: one clock read
            return False
        cost = self._copy_seconds + self.writer.write_seconds()
        return cost <= self.max_time_fraction * elapsed

    def _save(
        self,
        state: FitState,
        mid_epoch: bool,
        last: bool = True,
    ) -> Path | None:
        """Copy the state to the CPU and hand it (after any pending best) to the writer; returns last.pt's path."""
        if state.run_dir is None or not state.is_rank_zero:
            return None
        started = self.clock()
        folder = self._folder(state)
        last = last and (self.save_last or mid_epoch)
        payload = snapshot(_loop(state).checkpoint_payload(state, mid_epoch)) if last else None
        # the run's files hold every line and event up to this step before the checkpoint is on disk: a
        # run killed after it and resumed from it has them all (they flush by time: callbacks.tensorboard,
        # callbacks.epoch_jsonl)
        if state.writer is not None:
            state.writer.flush()
        hooks = getattr(state.loop, "hooks", None)  # the fit's hooks (this one among them)
        if hooks is not None:
            hooks.flush()
        if self._best_payload is not None:
            self.writer.submit(folder / "best.pt", self._best_payload)
            self._best_payload = None
        path = folder / "last.pt"
        if payload is not None:
            self.writer.submit(path, payload)
            self._saved_step = state.step
            self.saved_steps.append(state.step)
        self._last_save = self.clock()
        self._copy_seconds = self._last_save - started
        return path if last else None

    def save_now(self, state: FitState, mid_epoch: bool = True) -> Path | None:
        """Write ``last.pt`` for the current step and wait until it is on disk (interruptions, tests)."""
        path = self._save(state, mid_epoch)
        self.writer.join()
        return path

    def on_train_batch_end(self, state: FitState) -> None:
        if state.batch_idx + 1 >= state.steps_per_epoch:
            return  # the epoch's last step: on_epoch_end decides
        if (self.every_n_steps and state.step % self.every_n_steps == 0) or self._due():
            self._save(state, mid_epoch=True)

    def on_epoch_end(self, state: FitState) -> None:
        if state.run_dir is None or not state.is_rank_zero:
            return
        value = state.metrics.get(self.monitor, math.nan)  # NaN (a blown-up epoch) never improves
        improved = self.save_best and (
            value > self.best if self.higher_is_better else value < self.best
        )
        last_epoch = bool(state.max_steps) and state.step >= state.max_steps
        save = (
            last_epoch  # the fit ends here: start writing while the test split is evaluated
            or bool(self.every_n_steps and state.step % self.every_n_steps == 0)
            or self._due()
        )
        if not (improved or save):
            return
        started = self.clock()
        if improved:
            self.best = value  # before last.pt's copy: both files record the loss best.pt holds
            self._best_payload = self.best_weights(state, value)  # written with the next last.pt
        if save:
            self._save(state, mid_epoch=False)
            self._copy_seconds = self.clock() - started

    def best_weights(self, state: FitState, value: float) -> dict[str, Any]:
        """best.pt's payload: a copy of the model's weights now, and which epoch, step and loss they are
        (read back with :func:`load_best_weights`; ``trainer.resume`` refuses it, naming last.pt)."""
        return {
            "format": FORMAT,
            "kind": BEST_WEIGHTS,
            "model": snapshot(state.model.state_dict()),
            "epoch": state.epoch,
            "step": state.step,
            "monitor": self.monitor,
            "value": float(value),
        }

    def on_fit_end(self, state: FitState) -> None:
        """The fit's end (its last epoch, an early stop, a guided restart) always leaves ``last.pt`` on disk."""
        if state.run_dir is None or not state.is_rank_zero:
            return
        # again for a step just saved when the fit was stopped after that save: the stopping hook (the
        # AutoTrainer asking for a guided restart at an epoch's end) changed its state, and a relaunch
        # resumes from this file
        self._save(
            state, mid_epoch=False, last=self._saved_step != state.step or state.stop_training
        )
        self.writer.join()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", self.best))
