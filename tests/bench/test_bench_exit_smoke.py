"""bench/exit_time.py end to end with --quick: both variants of a real one-epoch CLI run, in fresh processes;
the shipped CLI leaves its heap frozen for the exit (the objects left to walk are counted, not timed)."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, run_bench


def _rows(stdout: str) -> list[list[str]]:
    """The one-epoch rows' cells: variant, wall, fit end, last line to exit, objects walked, accuracy."""
    rows = [line for line in stdout.splitlines() if line.startswith("| one epoch")]
    return [[c.strip() for c in row.strip("|").split("|")[1:]] for row in rows]


def test_exit_time_quick_times_both_variants_and_names_the_command(tmp_path):
    proc = run_bench("exit_time", tmp_path)
    rows = _rows(proc.stdout)
    assert [r[0] for r in rows] == ["as shipped (frozen at exit)", "collected at exit"]
    for _, wall, fit_end, tail, _, acc in rows:
        assert 0 < float(tail) <= float(fit_end) < float(wall) and 0 <= float(acc) <= 1
    assert rows[0][5] == rows[1][5]  # the same run: the same test accuracy
    # runner.__main__.main leaves the heap frozen: its exit walks a sliver of what an unfrozen one does
    shipped, collected = int(rows[0][4]), int(rows[1][4])
    assert collected > 200_000 and 0 <= shipped < collected // 100, (shipped, collected)
    assert "as shipped (frozen at exit) / collected at exit, wall:" in proc.stdout


def test_exit_time_rev_times_a_revisions_cli_beside_this_trees(tmp_path):
    proc = run_bench("exit_time", tmp_path, "--rev", "HEAD")
    rows = _rows(proc.stdout)
    assert [r[0] for r in rows] == ["as shipped (frozen at exit)", "as shipped at HEAD"]
    assert rows[0][5] == rows[1][5]  # the same training at both revisions
    assert "as shipped (frozen at exit) / as shipped at HEAD, wall:" in proc.stdout
    assert "at the fit end" in proc.stdout


def test_exit_time_an_unknown_rev_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "exit_time.py"), "--quick", "--rev", "no-such-rev"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("--rev no-such-rev: ") and len(proc.stderr.splitlines()) == 1
