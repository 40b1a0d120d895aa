"""The tests' forked CLI runs (helpers.cli_fork) behave as fresh interpreters do: same exit code, output,
working directory, arguments and multiprocessing start method, the same end by a signal; an import-time
environment variable gets a fresh interpreter."""

from __future__ import annotations

import os
import signal
import sys
import time

from helpers import cli_fork, run_cli


def test_a_refused_run_exits_alike_forked_and_fresh(tmp_path):
    forked = run_cli(["optimizer.lr=abc"], tmp_path)
    fresh = run_cli(["optimizer.lr=abc"], tmp_path, fresh=True)
    assert forked.returncode == fresh.returncode == 2
    assert forked.stderr == fresh.stderr and "optimizer.lr" in forked.stderr
    assert forked.stdout == fresh.stdout
    assert "Traceback" not in forked.stderr


def test_a_script_sees_its_arguments_folder_and_working_directory(tmp_path):
    script = tmp_path / "bin" / "show.py"
    script.parent.mkdir()
    script.write_text(
        "import multiprocessing, os, sys\n"
        "print(multiprocessing.get_start_method(allow_none=True), multiprocessing.get_start_method())\n"
        "print(sys.argv[1:], os.getcwd(), sys.path[0], os.environ.get('HYDRA_FULL_ERROR'))\n"
        "sys.exit(3)\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    cmd = [sys.executable, str(script), "a b", "c"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    forked = cli_fork.run(cmd, cwd=work, timeout=60, env=env)
    fresh = cli_fork.subprocess.run(
        cmd, cwd=work, capture_output=True, text=True, timeout=60, env=env
    )
    assert forked.returncode == fresh.returncode == 3
    assert forked.stdout == fresh.stdout
    assert forked.stdout.split()[-3:] == [str(work), str(script.parent), "1"]
    # DataLoader workers start as in a fresh interpreter (not from the tests' forkserver)
    assert forked.stdout.splitlines()[0] == "None fork"


def test_an_import_time_variable_is_not_forked():
    assert cli_fork.forkable({**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert not cli_fork.forkable({**os.environ, "CXX": "/no/such/compiler"})
    assert not cli_fork.forkable({k: v for k, v in os.environ.items() if k != "PATH"})


def test_a_signalled_run_ends_alike_forked_and_fresh(tmp_path):
    """cli_fork.start: the signal reaches the script's own process; SIGTERM ends it by the signal, an
    uncaught KeyboardInterrupt (SIGINT) too, with its traceback, as a fresh interpreter does."""
    script = tmp_path / "wait.py"
    script.write_text(  # Ctrl-C's handler set, as the runner sets its own: a background job ignores it
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "pathlib.Path(sys.argv[1]).write_text('up')\n"
        "time.sleep(30)\n"
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        ended = {}
        for how in ("forked", "fresh"):
            ready = tmp_path / f"{how}-{sig.name}"
            cmd = [sys.executable, str(script), str(ready)]
            proc = (
                cli_fork.Forked(cmd, tmp_path, dict(os.environ))
                if how == "forked"
                else cli_fork.subprocess.Popen(
                    cmd,
                    cwd=tmp_path,
                    stdout=cli_fork.subprocess.PIPE,
                    stderr=cli_fork.subprocess.PIPE,
                    text=True,
                )
            )
            deadline = time.time() + 60
            while not ready.exists():
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.02)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            ended[how] = (proc.returncode, "KeyboardInterrupt" in err)
        assert ended["forked"] == ended["fresh"] == (-sig, sig == signal.SIGINT), ended
