"""The work each loop of bench/overhead.py does per training step, counted by the CPU: instructions retired.

Time on a shared 2-core machine mixes the work a loop does with what its neighbours,
the caches and the clock frequency do to it: bench/overhead.py needs many interleaved
rounds to see a 2% difference, and its rounds still spread over several percent. The
number of user-space instructions a step retires is the work itself and repeats to about 0.1%.
It is not the time: a loop can retire the same instructions at a lower rate (more cache
and branch misses when more distinct code runs per step), so this table says how much of
a loop's time cost is work it adds and how much is the rate; the targets stay on time.

Method: each (workload, loop) runs in a fresh child process under ``perf stat``, once
for a short and once for a long number of steps, built and trained exactly as in
bench/overhead.py (same config, seed, data tensors, hooks and SummaryWriter). The
difference of the two counts divided by the difference of steps is per step: imports,
set-up, the first steps' one-time costs, validation and exit cancel out. Each count is
of the whole process (TensorBoard's writer thread included). Pairs are repeated,
interleaved, and the median reported; cycles are shown beside instructions (they move
with the clock and the neighbours, as time does).

    python bench/instructions.py           # both workloads, 3 pairs per loop (about 6 minutes)
    python bench/instructions.py --quick   # smoke test: the hand loop and diag=off, 1 pair

Needs Linux ``perf`` with access to the hardware counters (Debian: ``apt-get install
linux-perf``); without it the script says so and exits 1.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results  # bench/ is on sys.path: this script's folder

ROOT = Path(__file__).resolve().parents[1]
# user-space instructions: the kernel's share moves with page faults (glibc returns and re-maps the CNN's
# activation buffers a varying number of times: 0.2-1.1 M faults in the same 50 steps), not with the loop
EVENTS = {"instructions": "instructions:u", "cycles": "cycles"}
# (short, long) steps per child: short is past the first steps' one-time costs; CNN steps are far longer than the MLP's
STEPS = {"mlp/digits": (100, 1100), "cnn/synthetic28": (10, 50)}
QUICK_STEPS = {"mlp/digits": (20, 120), "cnn/synthetic28": (3, 8)}
QUICK_LOOPS = ("hand loop", "runner, diag=off")


def perf_works() -> str | None:
    """None when ``perf stat`` can count instructions here, else why not."""
    try:
        proc = subprocess.run(
            ["perf", "stat", "-x,", "-e", EVENTS["instructions"], "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf is not available ({exc}); on Debian: apt-get install linux-perf"
    first = proc.stderr.strip().split(",")[0] if proc.stderr.strip() else ""
    if proc.returncode != 0 or not first.isdigit():
        return f"perf cannot count instructions here: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
    return None


def count(workload: str, loop: str, steps: int) -> dict[str, float]:
    """Run one child under ``perf stat``; the whole process's counts."""
    cmd = [
        "perf",
        "stat",
        "-x,",
        "-e",
        ",".join(EVENTS.values()),
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        workload,
        loop,
        str(steps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{workload} / {loop} ({steps} steps) failed: {proc.stderr[-2000:]}")
    names = {event: name for name, event in EVENTS.items()}
    out = {}
    for line in proc.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in names and fields[0].replace(".", "").isdigit():
            out[names[fields[2]]] = float(fields[0])
    if set(out) != set(EVENTS):
        raise RuntimeError(
            f"perf stat printed no counts for {workload} / {loop}: {proc.stderr[-2000:]}"
        )
    return out


def child(workload: str, loop: str, steps: int) -> int:
    """Build and train ``steps`` steps of one loop, as bench/overhead.py times it."""
    import overhead
    import torch

    torch.set_num_threads(1)
    with_lightning = loop.startswith("lightning") and overhead.lightning_available()
    level, run_loop, extra = overhead.variants(with_lightning, workload)[loop]
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp, overhead.quiet():
        parts = overhead.build(workload, level, Path(tmp) / "run", extra)
        run_loop(parts, overhead.LockstepBatches(parts.train_loader, steps), 1.0)
    return 0


def loops_of(workload: str, quick: bool, lightning: bool) -> list[str]:
    import overhead

    names = list(overhead.variants(lightning, workload))
    return [n for n in names if n in QUICK_LOOPS] if quick else names


def measure(
    workload: str, loops: list[str], pairs: int, short: int, long: int
) -> dict[str, dict[str, list[float]]]:
    """Per loop and event: the per-step count of each pair, pairs interleaved across loops."""
    out: dict[str, dict[str, list[float]]] = {loop: {e: [] for e in EVENTS} for loop in loops}
    for p in range(pairs):
        order = loops[p % len(loops) :] + loops[: p % len(loops)]
        for loop in order:
            a, b = count(workload, loop, short), count(workload, loop, long)
            for e in EVENTS:
                out[loop][e].append((b[e] - a[e]) / (long - short))
        print(
            f"  {workload} pair {p + 1}/{pairs}: "
            + ", ".join(f"{loop} {out[loop]['instructions'][-1] / 1e6:.3f}M" for loop in loops),
            file=sys.stderr,
            flush=True,
        )
    return out


def table(results: dict[str, dict[str, dict[str, list[float]]]]) -> list[str]:
    med = statistics.median
    lines = [
        "| workload | loop | instructions/step | hand loop's / this loop's (instructions) | cycles/step | "
        "hand loop's / this loop's (cycles) | cycles ratio range |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, res in results.items():
        hand = res["hand loop"]
        for loop, r in res.items():
            ins, cyc = med(r["instructions"]), med(r["cycles"])
            ratios = [h / c for h, c in zip(hand["cycles"], r["cycles"])]
            lines.append(
                f"| {workload} | {loop} | {ins / 1e6:.3f}M | {med(hand['instructions']) / ins:.4f} | "
                f"{cyc / 1e6:.3f}M | {med(ratios):.3f} | {min(ratios):.3f} - {max(ratios):.3f} |"
            )
    return lines


def summary(results: dict[str, dict[str, dict[str, list[float]]]]) -> list[str]:
    med = statistics.median
    out = []
    for workload, res in results.items():
        hand = med(res["hand loop"]["instructions"])
        for loop in ("runner, diag=off", "runner, diag=default"):
            if loop in res:
                ins = med(res[loop]["instructions"])
                spread = max(res[loop]["instructions"]) / min(res[loop]["instructions"]) - 1
                out.append(
                    f"- {workload}, {loop}: {ins / hand - 1:+.2%} instructions per step over the hand loop "
                    f"(its pairs within {spread:.2%} of each other)"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2], int(argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: the hand loop and diag=off, 1 short pair"
    )
    ap.add_argument(
        "--pairs", type=int, default=None, help="repeats of each (short, long) pair (default 3)"
    )
    ap.add_argument("--workloads", nargs="+", choices=list(STEPS), default=list(STEPS))
    ap.add_argument(
        "--no-lightning",
        action="store_true",
        help="skip the Lightning rows even when it is installed",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "instructions.md")
    args = ap.parse_args(argv)
    why_not = perf_works()
    if why_not:
        print(f"bench/instructions.py: {why_not}", file=sys.stderr)
        return 1
    import overhead

    lightning = not args.no_lightning and overhead.lightning_available()
    pairs = args.pairs or (1 if args.quick else 3)
    started = time.perf_counter()
    results = {}
    for workload in args.workloads:
        short, long = (QUICK_STEPS if args.quick else STEPS)[workload]
        results[workload] = measure(
            workload, loops_of(workload, args.quick, lightning), pairs, short, long
        )
    steps = ", ".join(f"{w}: {(QUICK_STEPS if args.quick else STEPS)[w]}" for w in args.workloads)
    header = [
        f"{platform.processor() or platform.machine()}, 1 intra-op thread, perf stat -e "
        f"{','.join(EVENTS.values())} per child process; (short, long) steps {steps}; {pairs} pair(s) per loop, "
        "interleaved; medians"
        + ("; --quick (smoke test: figures are not meaningful)" if args.quick else ""),
        "",
    ]
    text = "\n".join(header + table(results) + ["", *summary(results)])
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "instructions.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
