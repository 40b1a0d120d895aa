"""A run whose fit raises part-way (a bug in the model, a bad batch): what it leaves in the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

# `python -m runner` with a model bug planted at step 46 (the digits' epochs are 20 steps: the third epoch)
DRIVER = """
import sys
from runner.__main__ import main
from runner.trainer import Trainer

step = Trainer.training_step

def failing(self, state, x, y):
    if state.step == 45:
        raise RuntimeError("a bug in the model at step 46")
    return step(self, state, x, y)

Trainer.training_step = failing
sys.argv = ["runner", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_run_that_raises_mid_fit_leaves_every_finished_epochs_jsonl_line(tmp_path):
    """The JSONL logs reach the disk by time (an hour here), not at each epoch end: a run that raises in
    its third epoch still leaves the first two epochs' lines. The process ends with its heap frozen (see
    runner.__main__), so files its hooks hold open are never finalised: the run flushes them on its way out."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            "trainer.max_epochs=5",
            "trainer.progress=false",
            "callbacks.epoch_jsonl.flush_secs=3600",
            f"paths.log_dir={tmp_path}",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "a bug in the model at step 46" in proc.stderr, proc.stderr[
        -2000:
    ]
    for name in ("train_diagnostics.jsonl", "val_diagnostics.jsonl"):
        lines = (run / name).read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [0, 1], name
