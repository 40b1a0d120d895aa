"""bench/threads.py end to end with --quick (one machine state: each run is a whole CLI process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from helpers import ROOT, run_bench


def test_threads_quick_times_both_settings_and_names_the_command(tmp_path):
    proc = run_bench("threads", tmp_path, "--conditions", "as it is", timeout=600)
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| mlp/digits")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "as it is"
    default, one, ratio = (float(c) for c in cells[2:5])
    assert default > 0 and one > 0 and abs(ratio - default / one) < 0.01
    acc_default, acc_one = (float(a) for a in cells[5].split(","))
    assert 0 <= acc_default <= 1 and 0 <= acc_one <= 1


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_busy_process_holds_a_core_and_is_gone_after(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import threads

    with threads.busy(True) as proc:
        assert proc is not None
        time.sleep(0.5)  # start-up
        before, t0 = _cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(0.5)
        assert _cpu_seconds(proc.pid) - before > 0.2 * (time.perf_counter() - t0)  # spinning
    assert proc.poll() is not None  # killed and reaped
    with threads.busy(False) as none:
        assert none is None
