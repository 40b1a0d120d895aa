"""bench/lr_sweep_stop.py and bench/lr_finder.py run end to end with --quick.

Not a test of their figures (--quick figures mean nothing): the scripts still run real multiruns and
real finder runs against the current runner, print every row and write their markdown.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT


def _bench(script: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    out = tmp_path / f"{script}.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text().startswith(f"# bench/{script}.py")
    return proc


@pytest.mark.slow
def test_lr_sweep_stop_quick_runs_both_sweeps_and_names_the_stopped_trial(tmp_path):
    proc = _bench("lr_sweep_stop", tmp_path, "--keep", str(tmp_path / "sweeps"))
    text = proc.stdout
    assert "| wall time |" in text and "| best trial | #1 lr=0.1 | #1 lr=0.1 |" in text
    # lr=10 blows up at once with SGD: stopped in the sweep with stop_on, trained out without it
    assert "- stopped lr=10: " in text
    (row,) = [line for line in text.splitlines() if line.startswith("| mlp/sgd |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:8] == ["yes", "yes", "1"] and cells[8] == "0"
    for kind in ("without", "with"):
        assert len(list((tmp_path / "sweeps" / "mlp_sgd" / kind).glob("*/report.json"))) == 3


@pytest.mark.slow
def test_lr_finder_quick_scores_each_task_in_its_split(tmp_path):
    proc = _bench("lr_finder", tmp_path)
    text = proc.stdout
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| mlp/sgd/digits", "| mlp/adam/mnist28"))
    ]
    assert len(rows) == 2, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert (
            0 < float(cells[2]) <= 1 and 0 < float(cells[5]) <= 1
        )  # grid best and the finder's acc
        assert float(cells[6]) == pytest.approx(float(cells[5]) / float(cells[2]), abs=2e-3)
    assert "## dev tasks" in text and "total " in text


@pytest.mark.slow  # two real range tests in a subprocess: ~15 s on a quiet machine
def test_lr_finder_range_test_only_screens_against_a_printed_grid(tmp_path):
    """--range-test-only --grid-from a results .md: one range test per task, screened, nothing trained."""
    printed = tmp_path / "printed.md"
    printed.write_text(
        "grid (test accuracy per LR):\n\n"
        "    mlp/sgd/digits         0.01:0.869  0.03:0.925  0.1:0.958  0.3:0.964  1:0.103\n"
        "    mlp/adam/digits        0.001:0.930  0.003:0.942  0.01:0.958  0.03:0.944\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "lr_finder.py"),
            *("--range-test-only", "--grid-from", str(printed), "--keep", str(tmp_path / "k")),
            *("--tasks", "mlp/sgd/digits", "mlp/adam/digits", "mlp/sgd/mnist28"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "/" in line and not line.startswith("| task |")
    }
    assert set(rows) == {
        "mlp/sgd/digits",
        "mlp/adam/digits",
    }  # no grid printed for mnist28: skipped
    assert "| auto |" in proc.stdout and "| below 0.95 |" in proc.stdout
    for task in rows:
        assert (tmp_path / "k" / task / "range_test" / "lr_find.json").exists()
    # the auto column's LR is the range test's own suggestion, as lr_find.json recorded it
    kept = {r["task"]: r for r in json.loads((tmp_path / "k" / "results.json").read_text())}
    auto_cell = rows["mlp/adam/digits"].split("|")[2].split()[0]
    assert float(auto_cell) == pytest.approx(
        kept["mlp/adam/digits"]["curve"]["suggested_lr"], rel=1e-2
    )
