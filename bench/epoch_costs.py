"""What each part of the runner's default set-up costs per epoch, against a hand loop, epoch by epoch.

``bench/whole_run.py`` says how far the runner's default epoch is from a hand loop's; this says where the
distance goes. Each variant is the runner with one part taken away (or, for the first rows, everything
but the loop itself); every epoch of it is followed by one epoch of a hand loop built beside it (the
paired measurement of ``whole_run.py``: ``Shadow``), and a run's figure is the median over its epoch
pairs of the hand epoch's time over the runner's. A part's cost is the default's distance to the hand
loop that removing it gives back: ratio without it minus the default's ratio, in hand-loop epochs. The
last row is the other way round: a hand loop with the runner's per-step gradient norm and non-finite
check added, paired with the plain one; its cost is what that check costs any loop. A second table says
the same in milliseconds: per round, the default's epoch minus its hand epoch, less the same for the
variant, its median over rounds and in how many rounds the variant was faster (the ratios' differences
move by two or three points between runs; the per-round milliseconds are steadier).

    python bench/epoch_costs.py                    # the MLP on digits (about 2 minutes)
    python bench/epoch_costs.py --workload cnn/digits
    python bench/epoch_costs.py --rounds 16          # more rounds than the workload's plan
    python bench/epoch_costs.py --quick            # smoke test: 1 round of 2 epochs, configs composed once
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from overhead import compose_once, quiet  # bench/ is on sys.path
from results_file import write_results
from whole_run import QUICK_PLAN, WORKLOADS, HandLoop, Shadow, build, run_control, run_runner

ROOT = Path(__file__).resolve().parents[1]

NO_CALLBACKS = (
    "callbacks.checkpoint=null",
    "callbacks.tensorboard=null",
    "callbacks.epoch_jsonl=null",
)
# name -> (diag level, overrides); "default" first: every other row is read against it
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default (diag=default, every callback)": ("default", ()),
    "without layer sampling": ("default", ("callbacks.diagnostics.layer_every=1000000000",)),
    "without the live diagnosis (diag=off)": ("off", ()),
    "without checkpoints": ("default", ("callbacks.checkpoint=null",)),
    "without best.pt": ("default", ("callbacks.checkpoint.save_best=false",)),
    "without TensorBoard": ("default", ("callbacks.tensorboard=null",)),
    "without the JSONL logs": ("default", ("callbacks.epoch_jsonl=null",)),
    "the loop alone (diag=off, no callbacks)": ("off", NO_CALLBACKS),
    "the loop alone, no non-finite guard": (
        "off",
        (*NO_CALLBACKS, "trainer.nonfinite_guard=false"),
    ),
}
DEFAULT = next(iter(VARIANTS))
# Not a part of the runner taken away, but a hand loop with one thing added, paired with the plain hand
# loop: what the runner's exact per-step non-finite guard (a global gradient norm on the host before every
# optimizer step, summed through NumPy for CPU gradients: diag.gradients.host_grad_norm) costs any loop.
# The runner pays it in every row but "without the guard" ones (whose gradient norm the hooks still read):
# ~20-25 us of a digits MLP step right after backward (torch's four ops for the same norm: ~40 us).
GUARDED_HAND = "a hand loop with the runner's gradient norm and non-finite check"
# (epochs per run, warm-up epochs, rounds): ten loops a round, so fewer rounds than whole_run.py's
PLAN = {"mlp/digits": (14, 2, 7), "cnn/digits": (8, 2, 5)}


# per round: the paired ratio (wall, CPU), then the epoch minus the hand epoch (ms, wall)
Figures = tuple[float, float, float]


def measure(
    workload: str, root: Path, quick: bool, rounds: int | None = None
) -> dict[str, list[Figures]]:
    """Per variant, one set of paired figures per round; variants interleaved in a rotating order."""
    epochs, warmup, planned = (QUICK_PLAN if quick else PLAN)[workload]
    rounds = rounds or planned
    names = [*VARIANTS, GUARDED_HAND]
    out: dict[str, list[Figures]] = {n: [] for n in names}
    for r in range(rounds):
        for i, name in enumerate(names[r % len(names) :] + names[: r % len(names)]):
            level, extra = VARIANTS.get(name, ("off", ()))
            run_dir = root / f"r{r}_{i}"
            parts = build(workload, level, run_dir, extra, epochs)
            shadow = Shadow(HandLoop(build(workload, "off", run_dir / "hand", (), epochs), epochs))
            if name == GUARDED_HAND:
                ends = run_control(HandLoop(parts, epochs, guard=True), shadow)
            else:
                ends, _ = run_runner(parts, shadow)
            wall, cpu = (statistics.median(shadow.ratios(ends, warmup, c)) for c in (0, 1))
            out[name].append((wall, cpu, shadow.extra_ms(ends, warmup)[0]))
        print(f"  {workload} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return out


def report(workload: str, res: dict[str, list[Figures]]) -> list[str]:
    """The ratio table, then each part's cost in milliseconds: per round, the default's epoch minus the
    hand epoch less the same for the variant (the rounds put both beside the same host), its median over
    rounds and in how many rounds the variant was the faster. Steadier than the ratios' difference."""
    med = statistics.median
    base = [med(w for w, _, _ in res[DEFAULT]), med(c for _, c, _ in res[DEFAULT])]
    lines = [
        f"| {workload} | paired ratio to hand loop (wall, median) | range | CPU time, median | CPU range "
        "| cost in the default (wall / CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in res.items():
        wall, cpu = [w for w, _, _ in figures], [c for _, c, _ in figures]
        if name == DEFAULT:
            cost = "-"
        elif name == GUARDED_HAND:  # its cost to a hand loop, not a part the default gives back
            cost = f"{med(wall) - 1:+.3f} / {med(cpu) - 1:+.3f} to a hand loop"
        else:
            cost = f"{med(wall) - base[0]:+.3f} / {med(cpu) - base[1]:+.3f}"
        lines.append(
            f"| {name} | {med(wall):.3f} | {min(wall):.3f} - {max(wall):.3f} | {med(cpu):.3f} | "
            f"{min(cpu):.3f} - {max(cpu):.3f} | {cost} |"
        )
    lines += [
        "",
        f"| {workload} | epoch minus the hand epoch (ms, median) | cost in the default: ms per round, "
        "median | rounds the variant was faster |",
        "|---|---|---|---|",
    ]
    default_ms = [ms for _, _, ms in res[DEFAULT]]
    for name, figures in res.items():
        ms = [m for _, _, m in figures]
        if name == DEFAULT:
            cost, faster = "-", "-"
        elif name == GUARDED_HAND:  # what the check adds to a hand loop's epoch, round by round
            cost, faster = (
                f"{med(ms):+.3f} to a hand loop",
                f"{sum(m > 0 for m in ms)}/{len(ms)} slower",
            )
        else:
            diffs = [d - m for d, m in zip(default_ms, ms)]
            cost, faster = f"{med(diffs):+.3f}", f"{sum(x > 0 for x in diffs)}/{len(diffs)}"
        lines.append(f"| {name} | {med(ms):+.3f} | {cost} | {faster} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workload", choices=list(WORKLOADS), default="mlp/digits")
    ap.add_argument("--rounds", type=int, help="rounds instead of the workload's planned number")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 epochs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "epoch_costs.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        print("bench/epoch_costs.py: --rounds must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if args.quick:  # each distinct config composed once (a full run composes every build's afresh)
        compose_once()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-epoch-costs-") as tmp, quiet():
        res = measure(args.workload, Path(tmp), args.quick, args.rounds)
    epochs, warmup, _ = (QUICK_PLAN if args.quick else PLAN)[args.workload]
    rounds = len(res[DEFAULT])
    header = [
        f"torch {torch.__version__}, 1 intra-op thread; {rounds} round(s) of {epochs} epochs, {warmup} "
        "warm-up; a cost is the ratio the default gains without the part (the last row: its ratio minus 1)"
        + ("; --quick (smoke test: figures are not meaningful)" if args.quick else ""),
        "",
    ]
    text = "\n".join(header + report(args.workload, res))
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "epoch_costs.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
