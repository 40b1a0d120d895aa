"""bench/tensorboard_screens.py serves a real run on loopback and screenshots its tabs in headless Chromium.

Skipped where Playwright (the ``screens`` extra) or Debian's Chromium is not installed; a wrong run
directory is one line and exit code 2 either way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import matplotlib.image
import pytest
from helpers import ROOT, run_cli

SCRIPT = str(ROOT / "bench" / "tensorboard_screens.py")


def test_a_directory_without_runs_is_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"tensorboard_screens: {tmp_path.resolve()} is neither a run directory nor a folder of runs: "
        "pass one"
    )


@pytest.mark.slow
def test_screenshots_of_a_real_run_show_its_tabs(tmp_path):
    pytest.importorskip("playwright")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    run = tmp_path / "run"
    proc = run_cli(["trainer.max_epochs=1"], tmp_path, run_dir=run, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "screens"
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            str(run),
            "--out",
            str(out),
            "--chromium",
            chromium,
            "--tabs",
            "scalars,images",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # served through its parent, the run is listed under its own name (not '.', 'tb' or 'run/.')
    assert (
        f"serving {tmp_path.resolve()}: runs run\n" in proc.stdout and "| scalars |" in proc.stdout
    )
    for tab in ("scalars", "images"):
        image = matplotlib.image.imread(out / f"tensorboard_{tab}.png")
        assert image.shape[:2] == (900, 1400)
        assert image[..., :3].std() > 0.05  # a drawn page, not a blank one
