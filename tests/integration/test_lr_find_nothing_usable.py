"""A range test with nothing to read stops the runner in one line (exit 2) naming the ``lr_find`` setting
to change: ``mode=lr_find`` suggests nothing and ``optimizer.lr=auto`` trains at nothing.

Before: ``lr_find.min_lr=1 lr_find.max_lr=2`` diverged at 1.01 after 2 points and suggested 10 (a fixed
10 x min_lr, over both its range and its divergence), and ``optimizer.lr=auto`` trained at it.
"""

from __future__ import annotations

import json
import re

from helpers import run_cli

SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: extra threads only contend on a 2-core box
FAST = ["debug=fast", "diag=off"]


def _one_error_line(proc) -> str:
    """The single ``error: ...`` line of a refused run (no traceback, nothing else on stderr)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: lr_find: "), lines
    return lines[0]


def test_lr_find_diverging_at_once_exits_2_and_its_fix_reads_a_curve(tmp_path):
    run_dir = tmp_path / "narrow"
    args = [*FAST, "mode=lr_find", "lr_find.verify_steps=0"]
    proc = run_cli(
        [*args, "lr_find.min_lr=1", "lr_find.max_lr=2"],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    line = _one_error_line(proc)
    assert "read 2 points" in line and "diverged at lr=1.01" in line
    assert "an LR needs at least 10, so none is suggested" in line
    assert "suggested lr" not in proc.stdout  # nothing printed as a suggestion
    # the curve is kept to look at; the finder's own fallback stays under the divergence
    data = json.loads((run_dir / "lr_find.json").read_text())
    assert data["method"].startswith("fallback") and str(run_dir / "lr_find.png") in line
    assert data["min_lr"] <= data["suggested_lr"] < data["diverged_lr"] <= data["max_lr"]
    # the fix it names works: the test then reads a curve and suggests an LR under its divergence
    fix = re.search(r"e\.g\. (lr_find\.min_lr=\S+)", line).group(1)
    proc = run_cli(
        [*args, fix, "lr_find.max_lr=2"], tmp_path, run_dir=tmp_path / "fixed", env=SINGLE_THREAD
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fixed = json.loads((tmp_path / "fixed" / "lr_find.json").read_text())
    assert fixed["num_steps_run"] >= 10 and not fixed["method"].startswith("fallback")
    assert fixed["suggested_lr"] < (fixed["diverged_lr"] or fixed["max_lr"])


def test_optimizer_lr_auto_on_an_unreadable_test_exits_2_without_training(tmp_path):
    run_dir = tmp_path / "auto"
    proc = run_cli(
        [*FAST, "optimizer.lr=auto", "lr_find.min_lr=1", "lr_find.max_lr=2"],
        tmp_path,
        run_dir=run_dir,
        env=SINGLE_THREAD,
    )
    line = _one_error_line(proc)
    assert "none is suggested and the run does not train" in line and "lr_find.min_lr=" in line
    assert not (run_dir / "report.json").exists() and not (run_dir / "checkpoints").exists()
    assert "epoch " not in proc.stdout


def test_too_few_steps_before_the_divergence_names_lr_find_num_steps(tmp_path):
    proc = run_cli([*FAST, "mode=lr_find", "lr_find.num_steps=10"], tmp_path, env=SINGLE_THREAD)
    line = _one_error_line(proc)
    assert "lr_find.num_steps=10 from lr_find.min_lr=1e-07" in line
    assert int(re.search(r"e\.g\. lr_find\.num_steps=(\d+)", line).group(1)) > 10


def test_a_non_finite_first_loss_is_the_model_not_the_lr(tmp_path):
    proc = run_cli([*FAST, "mode=lr_find", "model.init_scale=1e30"], tmp_path, env=SINGLE_THREAD)
    line = _one_error_line(proc)
    assert "first loss (nan) is not finite" in line and "model.init_scale" in line
