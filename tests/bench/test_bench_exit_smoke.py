"""bench/exit_time.py end to end with --quick: both variants of a real one-epoch CLI run, in fresh processes;
the shipped CLI leaves its heap frozen for the exit (the objects left to walk are counted, not timed)."""

from __future__ import annotations

from helpers import run_bench


def test_exit_time_quick_times_both_variants_and_names_the_command(tmp_path):
    proc = run_bench("exit_time", tmp_path)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| one epoch")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "as shipped (frozen at exit)",
        "collected at exit",
    ]
    cells = [[c.strip() for c in row.strip("|").split("|")[2:]] for row in rows]
    for wall, tail, _, acc in cells:
        assert 0 < float(tail) < float(wall) and 0 <= float(acc) <= 1
    assert cells[0][3] == cells[1][3]  # the same run: the same test accuracy
    # runner.__main__.main leaves the heap frozen: its exit walks a sliver of what an unfrozen one does
    shipped, collected = int(cells[0][2]), int(cells[1][2])
    assert collected > 200_000 and 0 <= shipped < collected // 100, (shipped, collected)
    assert "as shipped / collected at exit, wall:" in proc.stdout
