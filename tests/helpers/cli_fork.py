"""Run ``python -m <module> ...`` in a process forked from one that has already imported torch and Hydra.

Why: most of a short CLI run in the tests is ``import torch`` and the first optimizer's import of
``torch._dynamo`` (3-4 s of a 5 s run). multiprocessing's forkserver imports them once per pytest worker;
each CLI run is then a fresh process forked from it that runs the module as ``python -m`` does
(``runpy.run_module(..., run_name="__main__", alter_sys=True)``, the working directory first on
``sys.path``; a script by ``runpy.run_path``, its folder first), with its own cwd, environment, argv,
stdout and stderr, and its exit code or signal as the process's. What only a fresh interpreter shows
(what is imported at start-up, environment variables read at import time) is tested with
:func:`subprocess.run`: ``helpers.run_cli(..., fresh=True)``. :func:`run` is ``subprocess.run`` for
such commands, :func:`start` is ``subprocess.Popen`` for a run a test signals or kills while it trains.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# imported once in the server: what every CLI run imports before its first step, and what it imports
# for its end (the figures: matplotlib was ~0.5 s of each forked run's 2.1 s)
PRELOAD = [
    "torch",
    "torch._dynamo",
    "torch.utils.tensorboard",
    "hydra",
    "omegaconf",
    "runner.app",
    "runner.train",
    "runner.tensorboard_run",
    "diag.analyze",
    "diag.live",
    "diag.summary_plot",
    "diag.confusion_plot",
    "matplotlib.pyplot",
    "PIL.PngImagePlugin",
]
# environment variables a test may set that nothing reads at import time; a run that sets any other
# (CXX, OMP_NUM_THREADS, ...) to a value this process does not have gets a fresh interpreter
RUNTIME_ONLY = frozenset(("PYTHONUNBUFFERED", "HYDRA_FULL_ERROR", "RUNNER_TEST_SIGNAL"))

_context: multiprocessing.context.ForkServerContext | None = None


def forkable(env: dict[str, str]) -> bool:
    """Whether a run with ``env`` behaves in a forked process as in a fresh one: every variable that
    differs from this process's is one read at run time only (a ``PYTHONPATH`` whose folders are on
    ``sys.path`` already counts as the same)."""
    on_path = {os.path.realpath(p or ".") for p in sys.path}
    for key in set(env) | set(os.environ):
        value = env.get(key)
        if key in RUNTIME_ONLY or value == os.environ.get(key):
            continue
        same_path = key == "PYTHONPATH" and value is not None
        if not (
            same_path and all(os.path.realpath(p) in on_path for p in value.split(os.pathsep) if p)
        ):
            return False
    return True


def _context_once() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def _main(program: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: become ``python -m <program> *args`` (or ``python <program>.py *args``, a
    path) with its own cwd, env and output files."""
    import logging
    import runpy
    import traceback

    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    # the process's streams for the rest of its life, so not closed here; line-buffered, as
    # PYTHONUNBUFFERED leaves them
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    # a forkserver's child has the forkserver as its default start method; a fresh interpreter has none
    # set yet (fork on Linux): without this, a run's DataLoader workers start from the forkserver, each
    # re-running the script's top level (the data pipeline bench took 26 s forked, 7 s fresh)
    multiprocessing.set_start_method(None, force=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    script = program.endswith(".py")
    # python -m puts the working directory first on sys.path, python <script> the script's folder
    sys.path.insert(0, os.path.dirname(os.path.abspath(program)) if script else cwd)
    sys.argv = [program, *args]
    code: int = 0
    try:
        if script:
            runpy.run_path(program, run_name="__main__")
        else:
            runpy.run_module(program, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:  # sys.exit("message"): printed to stderr, exit code 1, as the interpreter does
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        traceback.print_exc()  # an uncaught exception: its traceback and exit code 1, as python does
        code = -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    if code == -signal.SIGINT:  # python ends an uncaught KeyboardInterrupt by SIGINT itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(code)  # multiprocessing joins the non-daemon threads, then exits with this code


def _split(cmd: list[str]) -> tuple[str, list[str]]:
    """``[sys.executable, "-m", module, *args]`` or ``[sys.executable, script.py, *args]``: what
    :func:`_main` runs, and its arguments."""
    if cmd[1] == "-m":
        return cmd[2], cmd[3:]
    return cmd[1], cmd[2:]


def run_forked(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, ...)``'s result, from a forked process;
    ``cmd`` is ``[sys.executable, "-m", module, *args]`` or ``[sys.executable, script.py, *args]``."""
    program, args = _split(cmd)
    with tempfile.TemporaryDirectory(prefix="cli-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        proc = _context_once().Process(
            target=_main, args=(program, args, str(cwd), env, out, err), daemon=False
        )
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout)
        with open(out, encoding="utf-8", errors="replace") as f_out:
            stdout = f_out.read()
        with open(err, encoding="utf-8", errors="replace") as f_err:
            stderr = f_err.read()
    return subprocess.CompletedProcess(cmd, proc.exitcode, stdout, stderr)


class Forked:
    """A forked ``python -m <module> ...`` still running: what the tests use of :class:`subprocess.Popen`
    started with ``stdout=PIPE, stderr=PIPE, text=True`` (``pid``, ``returncode``, :meth:`poll`,
    :meth:`send_signal`, :meth:`kill`, :meth:`wait`, :meth:`communicate`). Its output goes to files,
    read once it has exited; a signal reaches the run's own process, its exit code or ``-signal``
    as ``returncode``."""

    def __init__(
        self, cmd: list[str], cwd: Path, env: dict[str, str], terminal: str | None = None
    ) -> None:
        program, args = _split(cmd)
        self.args = cmd
        self._dir = tempfile.mkdtemp(prefix="cli-")
        self._out, self._err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")
        if terminal is not None:  # a terminal's device (a pty's slave): the run's stdout and stderr
            self._out = self._err = terminal
        self._proc = _context_once().Process(
            target=_main, args=(program, args, str(cwd), env, self._out, self._err), daemon=False
        )
        self._proc.start()
        self.pid: int = self._proc.pid  # type: ignore[assignment]
        self.returncode: int | None = None
        self._output: tuple[str, str] | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._proc.is_alive():
            self._proc.join()
            self.returncode = self._proc.exitcode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Its stdout and stderr once it has exited (both empty for a run on a terminal: the terminal's
        reader has them)."""
        self.wait(timeout)
        if self._output is None and self._out == self._err:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._output = ("", "")
        if self._output is None:
            with open(self._out, encoding="utf-8", errors="replace") as f_out:
                stdout = f_out.read()
            with open(self._err, encoding="utf-8", errors="replace") as f_err:
                stderr = f_err.read()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._output = (stdout, stderr)
        return self._output


def start(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Forked | subprocess.Popen:
    """``subprocess.Popen(cmd, cwd=cwd, stdout=PIPE, stderr=PIPE, text=True, env=env)`` for a run to
    signal or kill while it trains: forked when ``env`` allows it (:func:`forkable`), a new
    interpreter otherwise. Read its output with ``communicate()``."""
    full_env = dict(os.environ if env is None else env)
    if forkable(full_env):
        return Forked(cmd, cwd, full_env)
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def start_on_terminal(
    cmd: list[str], cwd: Path, slave: int, env: dict[str, str] | None = None
) -> Forked | subprocess.Popen:
    """``subprocess.Popen(cmd, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env)``: a run whose
    stdout and stderr are a pseudo-terminal (``slave``, a pty's slave end, which the caller keeps open
    until the run has exited), forked when ``env`` allows it (:func:`forkable`; it opens the terminal's
    device, ``os.ttyname(slave)``, as its stdout and stderr), a new interpreter otherwise."""
    full_env = dict(os.environ if env is None else env)
    if forkable(full_env):
        return Forked(cmd, cwd, full_env, terminal=os.ttyname(slave))
    return subprocess.Popen(cmd, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=full_env)


def run(
    cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)`` for
    ``cmd`` a Python module or script run by ``sys.executable``: forked when ``env`` allows it
    (:func:`forkable`), in a new interpreter otherwise."""
    full_env = dict(os.environ if env is None else env)
    if forkable(full_env):
        return run_forked(cmd, cwd, full_env, timeout)
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
