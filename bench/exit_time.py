"""A whole ``python -m runner``, enter key to prompt: the heap frozen at exit (as shipped) or collected.

Python's exit runs the cyclic collector over every object it tracks; with torch, its compiler stack,
matplotlib and TensorBoard imported that is ~445,000 objects, and the user waits for it after the
run's last line is printed. ``runner.__main__.main`` ends by freezing the heap (``gc.freeze()``), so the
exit skips them. Each run is a fresh subprocess of the real CLI through ``python -c``: "as shipped" calls
``main()``; "collected at exit" calls it and then ``gc.unfreeze()``, which gives the exit back the whole
heap, as an interpreter that never froze it has. Each run also counts, at exit, the objects the final
collection is left to walk. Variants alternate run by run; cells are medians.

With ``--rev REV`` the second variant is the shipped CLI of a git revision instead (its tree extracted
into a temporary folder, first on ``PYTHONPATH``): a change to what a whole run does, timed as the user
meets it. The "fit end" column is the wait from the last epoch's line to the prompt (the test pass, the
figures, the report and the exit).

    python bench/exit_time.py            # 5 repeats of the README run and of a one-epoch run (~2 min)
    python bench/exit_time.py --rev HEAD~1 --repeats 9   # this tree's CLI against HEAD~1's
    python bench/exit_time.py --quick    # smoke test: 1 repeat of the one-epoch run
    python bench/exit_time.py --quick --rev HEAD   # smoke test of both comparisons in one: this tree's
                                                   # CLI frozen and collected, and HEAD's (3 runs, not 4)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results  # bench/ is on sys.path: this script's folder

ROOT = Path(__file__).resolve().parents[1]
# the CLI; at exit (atexit runs last what was registered first) the number of objects the interpreter's
# final collection is left to walk: what the freeze saves, counted rather than timed
CLI = (
    "import atexit, gc, sys\n"
    'atexit.register(lambda: print("EXIT_WALKS", len(gc.get_objects()), flush=True))\n'
    'sys.argv = ["runner", *sys.argv[1:]]\n'
    "from runner.__main__ import main\n"
)
VARIANTS = {
    "as shipped (frozen at exit)": CLI + "main()\n",
    "collected at exit": CLI + "try:\n    main()\nfinally:\n    gc.unfreeze()\n",
}
RUNS = {
    "README run (python -m runner)": [],
    "one epoch (trainer.max_epochs=1)": ["trainer.max_epochs=1"],
}


def run_once(code: str, overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict:
    """Wall time from start to exit, from the last epoch's line and from the last line printed to exit;
    the objects left to walk."""
    cmd = [
        sys.executable,
        "-c",
        code,
        *overrides,
        f"hydra.run.dir={run_dir}",
        "trainer.progress=false",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    last, last_epoch, lines, walks = start, start, [], -1
    for line in proc.stdout:
        if line.startswith("EXIT_WALKS "):
            walks = int(line.split()[1])
            continue
        last = time.perf_counter()
        if line.startswith("epoch "):
            last_epoch = last
        lines.append(line)
    rc = proc.wait()
    end = time.perf_counter()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} exited {rc}:\n{''.join(lines[-20:])}")
    acc = next((x.split()[-1] for x in lines if x.startswith("test accuracy")), "?")
    return {
        "wall": end - start,
        "fit_end": end - last_epoch,
        "after_last_line": end - last,
        "walks": walks,
        "test_acc": acc,
    }


def revision_tree(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` extracted into ``into`` (a folder for ``PYTHONPATH``)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True
    )
    if archive.returncode != 0:
        raise SystemExit(f"--rev {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: 1 repeat of the one-epoch run"
    )
    ap.add_argument("--repeats", type=int, default=None, help="runs per cell (default 5)")
    ap.add_argument(
        "--rev",
        help="time the shipped CLI at this git revision instead of 'collected at exit' "
        "(with --quick: beside it)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "exit_time.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    runs = {k: v for k, v in RUNS.items() if v} if args.quick else RUNS
    shipped = next(iter(VARIANTS))
    cells: dict[tuple[str, str], list[dict]] = {}
    started, count = time.perf_counter(), 0
    with tempfile.TemporaryDirectory(prefix="bench-exit-") as tmp:
        variants = {v: (code, ROOT) for v, code in VARIANTS.items()}
        if args.rev:
            rev = (VARIANTS[shipped], revision_tree(args.rev, Path(tmp) / "rev"))
            # --quick keeps "collected at exit" beside the revision: one smoke run checks both
            # comparisons, the shipped run shared (the full bench compares two variants)
            kept = variants if args.quick else {shipped: variants[shipped]}
            variants = {**kept, f"as shipped at {args.rev}": rev}
        for r in range(repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for run, overrides in runs.items():
                for variant in order:
                    count += 1
                    code, tree = variants[variant]
                    path = str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")
                    env = {**os.environ, "PYTHONPATH": path}
                    res = run_once(code, overrides, Path(tmp) / f"run{count}", env)
                    cells.setdefault((run, variant), []).append(res)
                    print(
                        f"  {run}, {variant}, repeat {r + 1}/{repeats}: {res['wall']:.2f} s "
                        f"({res['after_last_line']:.2f} s after the last line)",
                        file=sys.stderr,
                        flush=True,
                    )
    med = statistics.median
    others = list(variants)[1:]  # one, but "--quick --rev" has two
    lines = [
        "| run | variant | wall, start to exit (s) | fit end: last epoch line to exit (s) "
        "| last line to exit (s) | objects the exit's collection walks | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = [""]
    for run in runs:
        walls, ends = {}, {}
        for variant in variants:
            cell = cells[(run, variant)]
            walls[variant] = med(x["wall"] for x in cell)
            ends[variant] = med(x["fit_end"] for x in cell)
            tail = med(x["after_last_line"] for x in cell)
            walks = int(med(x["walks"] for x in cell))
            lines.append(
                f"| {run} | {variant} | {walls[variant]:.2f} | {ends[variant]:.2f} | {tail:.2f} "
                f"| {walks} | {cell[0]['test_acc']} |"
            )
        notes += [
            f"- {run}: {shipped} / {other}, wall: {walls[shipped] / walls[other]:.3f} "
            f"({walls[other] - walls[shipped]:.2f} s less to wait; at the fit end "
            f"{ends[other] - ends[shipped]:.2f} s)"
            for other in others
        ]
    notes.append(
        f"- median of {repeats} run(s) per cell, variants alternating; {os.cpu_count()} CPUs"
    )
    if args.quick:
        notes.append("- --quick: one run per cell (a smoke test: figures are not meaningful)")
    text = "\n".join(lines + notes)
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "exit_time.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
