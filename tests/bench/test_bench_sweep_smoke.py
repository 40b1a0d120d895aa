"""bench/lr_sweep_stop.py and bench/lr_finder.py run end to end with --quick.

Not a test of their figures (--quick figures mean nothing): the scripts still run real multiruns and
real finder runs against the current runner, print every row and write their markdown.
"""

from __future__ import annotations

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
