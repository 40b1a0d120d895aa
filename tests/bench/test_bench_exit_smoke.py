"""bench/exit_time.py end to end with --quick --rev: both variants of a real one-epoch CLI run and a
revision's CLI, in fresh processes; the shipped CLI leaves its heap frozen for the exit (the objects
left to walk are counted, not timed)."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, run_bench

SHIPPED, COLLECTED, AT_HEAD = (
    "as shipped (frozen at exit)",
    "collected at exit",
    "as shipped at HEAD",
)


def _rows(stdout: str) -> list[list[str]]:
    """The one-epoch rows' cells: variant, wall, fit end, last line to exit, objects walked, accuracy."""
    rows = [line for line in stdout.splitlines() if line.startswith("| one epoch")]
    return [[c.strip() for c in row.strip("|").split("|")[1:]] for row in rows]


def test_exit_time_quick_rev_times_both_variants_and_a_revisions_cli_beside_this_trees(tmp_path):
    """One ``--quick --rev HEAD`` run serves both comparisons: this tree's shipped CLI, the same run
    collected at exit, and HEAD's shipped CLI, each a fresh process (3 runs; two smoke runs took 4).
    One test rather than a module fixture: xdist could hand two tests of it to two workers."""
    proc = run_bench("exit_time", tmp_path, "--rev", "HEAD")
    rows = _rows(proc.stdout)
    assert [r[0] for r in rows] == [SHIPPED, COLLECTED, AT_HEAD]
    cells = {r[0]: r for r in rows}
    # this tree's CLI, frozen and collected at exit
    for _, wall, fit_end, tail, _, acc in (cells[SHIPPED], cells[COLLECTED]):
        assert 0 < float(tail) <= float(fit_end) < float(wall) and 0 <= float(acc) <= 1
    assert cells[SHIPPED][5] == cells[COLLECTED][5]  # the same run: the same test accuracy
    # runner.__main__.main leaves the heap frozen: its exit walks a sliver of what an unfrozen one does
    frozen, unfrozen = int(cells[SHIPPED][4]), int(cells[COLLECTED][4])
    assert unfrozen > 200_000 and 0 <= frozen < unfrozen // 100, (frozen, unfrozen)
    assert f"{SHIPPED} / {COLLECTED}, wall:" in proc.stdout
    # HEAD's shipped CLI beside this tree's
    assert cells[SHIPPED][5] == cells[AT_HEAD][5]  # the same training at both revisions
    assert f"{SHIPPED} / {AT_HEAD}, wall:" in proc.stdout
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
