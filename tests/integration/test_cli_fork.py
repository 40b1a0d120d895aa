"""The tests' forked CLI runs (helpers.cli_fork) behave as fresh interpreters do: same exit code, output,
working directory, arguments and multiprocessing start method; an import-time environment variable gets a fresh interpreter."""

from __future__ import annotations

import os
import sys

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
