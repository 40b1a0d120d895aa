"""The project as a user installs it: a wheel in a fresh virtual environment, run from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_trains_from_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(wheels.glob("experiment_runner-*.whl"))
    env_dir = tmp_path / "venv"
    # torch & co. from the system; no pip of its own (ensurepip took ~10 s): this pip installs into it
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    # nothing from this checkout on the path: the venv must run what the wheel installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--force-reinstall",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import runner, diag; print(runner.__file__); print(diag.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert all(line.startswith(str(env_dir)) for line in where.stdout.split()), where.stdout
    proc = subprocess.run(
        [str(env_dir / "bin" / "runner"), "debug=fast"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (elsewhere / "outputs" / "debug" / "runs").iterdir()  # debug=fast puts runs there
    report = json.loads((run_dir / "report.json").read_text())
    # the overlay ships in the wheel too
    assert report["completed"] and report["metrics"]["epochs"] == 2
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert "test accuracy" in proc.stdout
