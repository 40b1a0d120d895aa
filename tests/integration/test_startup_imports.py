"""What ``python -m runner`` imports before its first optimizer step (only what that step needs), and before
it refuses a config (not torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# the real CLI with a prelude: sys.argv is the test's overrides
CLI = """
sys.argv = ["runner", *sys.argv[1:]]
from runner.__main__ import main
main()
"""


def run_cli_with(prelude: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", prelude + CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# stops right after the first training step and prints what is imported by then
AT_FIRST_STEP = """
import gc, json, os, sys
import runner.trainer
step = runner.trainer.Trainer.training_step
def first_step(self, *args, **kwargs):
    step(self, *args, **kwargs)
    print("MODULES", json.dumps(sorted(sys.modules)), flush=True)
    print("FROZEN", gc.get_freeze_count(), flush=True)
    os._exit(0)
runner.trainer.Trainer.training_step = first_step
"""


def test_the_first_step_comes_before_tensorboard_matplotlib_and_the_autotrainer(tmp_path):
    proc = run_cli_with(AT_FIRST_STEP, "debug=fast", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES"))
    modules = set(json.loads(line.split(" ", 1)[1]))
    assert "runner.trainer" in modules and "torch" in modules
    heavy = {
        "torch.utils.tensorboard",
        "tensorboard.summary.writer.record_writer",
        "google_crc32c",
        "matplotlib",
        "runner.autotrainer.policy",
        "optuna",
    }
    assert not heavy & modules, heavy & modules
    # torch's import-time objects are out of the collector's full passes while the run trains
    frozen = int(next(x for x in proc.stdout.splitlines() if x.startswith("FROZEN")).split()[1])
    assert frozen > 100_000, frozen


def test_a_finished_run_leaves_the_heap_to_the_collector_again(tmp_path):
    """train.run freezes the heap for its fit and unfreezes it after: a sweep's next job (same process)
    can then collect this one's reference cycles."""
    import gc

    from runner.train import run
    from tests.helpers import compose_cfg

    gc.unfreeze()
    cfg = compose_cfg(["debug=fast", "trainer.progress=false"], tmp_path)
    result = run(cfg, tmp_path / "run")
    assert result.state.step > 0 and (tmp_path / "run" / "report.json").is_file()
    assert gc.get_freeze_count() == 0


# says at exit whether torch was imported
TORCH_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print("TORCH", "torch" in sys.modules, flush=True))
"""


def test_a_mistyped_key_is_refused_before_torch_is_imported(tmp_path):
    """A typo is said in one line within a second, not after torch's two-second import."""
    proc = run_cli_with(
        TORCH_AT_EXIT, "optimizer.lrr=1e-3", f"paths.log_dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "optimizer.lrr" in proc.stderr and "Traceback" not in proc.stderr
    assert "TORCH False" in proc.stdout


def test_bad_values_are_all_said_before_torch_is_imported(tmp_path):
    args = ("optimizer.lr=-1", "lr_find.min_lr=0", f"hydra.run.dir={tmp_path / 'run'}")
    proc = run_cli_with(TORCH_AT_EXIT, *args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert any("optimizer.lr=-1" in x for x in lines)
    assert any("lr_find.min_lr=0" in x for x in lines)
    assert "TORCH False" in proc.stdout
    assert not (tmp_path / "run").exists()  # a refused start leaves nothing behind
