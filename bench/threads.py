"""``trainer.threads``: whole runs at torch's default thread count (one per core) against one thread.

Each run is a fresh ``python -m runner ...`` subprocess (as ``time_to_accuracy.py`` times it: process
start to the end of training), with ``OMP_NUM_THREADS`` unset so torch picks its own default, or with
``trainer.threads=1``. Two conditions: the machine as it is ("idle" if nothing else runs), and beside
one busy process (a pure-Python loop holding one core, as another user's job or a second sweep job
would): OpenMP threads that wait at every op for a core another process holds cost far more than the
work they share out on a small model. Settings alternate run by run; each cell is the median of the
repeats.

    python bench/threads.py             # 3 repeats, both workloads (about 3-6 minutes on 2 CPU cores)
    python bench/threads.py --quick     # smoke test: 1 repeat of 1 epoch, the MLP only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from results_file import write_results  # bench/ is on sys.path: this script's folder
from time_to_accuracy import run_once

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS: dict[str, list[str]] = {"mlp/digits": [], "cnn/digits": ["model=cnn"]}
SETTINGS: dict[str, list[str]] = {"torch's default": [], "trainer.threads=1": ["trainer.threads=1"]}
CONDITIONS = ("as it is", "beside one busy process")
BUSY_CODE = "while True: pass"


@contextlib.contextmanager
def busy(on: bool) -> Iterator[subprocess.Popen | None]:
    """One process spinning on a core for the duration (none when ``on`` is false)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CODE]) if on else None
    try:
        yield proc
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, 1 epoch, the MLP")
    ap.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3)")
    ap.add_argument(
        "--conditions",
        nargs="+",
        choices=CONDITIONS,
        default=list(CONDITIONS),
        help="machine states",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "threads.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    workloads = {"mlp/digits": ["trainer.max_epochs=1"]} if args.quick else WORKLOADS
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cells: dict[tuple[str, str, str], list[dict]] = {}
    runs = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        for condition in args.conditions:
            with busy(condition != CONDITIONS[0]):
                for r in range(repeats):
                    order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
                    for workload, overrides in workloads.items():
                        for setting in order:
                            runs += 1
                            run_dir = Path(tmp) / f"run{runs}"
                            res = run_once([*overrides, *SETTINGS[setting]], run_dir, env)
                            cells.setdefault((workload, condition, setting), []).append(res)
                            print(
                                f"  {condition}, {workload}, {setting}, repeat {r + 1}/{repeats}: "
                                f"{res['trained']:.2f} s",
                                file=sys.stderr,
                                flush=True,
                            )
    med = statistics.median
    default, one = SETTINGS
    lines = [
        f"| workload | machine | {default}: to end of training (s) | {one} (s) "
        "| default / 1 thread | test accuracy (default, 1 thread) |",
        "|---|---|---|---|---|---|",
    ]
    for workload in workloads:
        for condition in args.conditions:
            d, o = cells[(workload, condition, default)], cells[(workload, condition, one)]
            td, to = med(x["trained"] for x in d), med(x["trained"] for x in o)
            lines.append(
                f"| {workload} | {condition} | {td:.2f} | {to:.2f} | {td / to:.2f} | "
                f"{d[0]['test_acc']:.4f}, {o[0]['test_acc']:.4f} |"
            )
    notes = [
        "",
        f"- torch's default here: {os.cpu_count()} CPUs, one thread per core; median of {repeats} run(s) "
        "per cell, the two settings alternating; a ratio above 1: one thread finished sooner",
    ]
    if args.quick:
        notes.append("- --quick: 1 epoch of the MLP (a smoke test: figures are not meaningful)")
    text = "\n".join(lines + notes)
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "threads.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
