"""bench/data_pipeline.py runs end to end in --quick mode and prints its table (speed is not asserted)."""

from __future__ import annotations

import re
import sys

from helpers import ROOT, cli_fork


def test_data_pipeline_bench_quick_prints_a_ratio_per_row(tmp_path):
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "data_pipeline.py"),
            "--quick",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 4, proc.stdout
    assert {r.split("|")[1].strip() for r in rows} == {"MNIST-like 28x28x1", "CIFAR-like 32x32x3"}
    for row in rows:
        fast, classic, ratio = (
            float(v) for v in re.findall(r"([\d.]+) s \|\s+([\d.]+) s \|\s+([\d.]+)x", row)[0]
        )
        assert fast > 0 and classic > 0 and ratio > 0
        # the ratio is of the printed times
        assert abs(classic / ratio - fast) <= 0.0006 + 0.05 * fast
    assert list(tmp_path.iterdir()) == []  # the synthetic files were cleaned up
