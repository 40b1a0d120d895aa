"""The per-step global gradient norm: its cost inside a training loop, beside the ways torch offers.

Every step of the runner computes the L2 norm of all gradients right after ``backward()``: the non-finite
guard reads it on the host before the optimizer step, and TensorBoard, the JSONL logs and the live
diagnosis log it. On the digits MLP it is the largest single part of the runner's epoch over a hand
loop's (``bench/epoch_costs.py`` prices the whole check). Here a real training loop (the workload's model,
optimizer and data as the runner builds them, torch on one thread) computes it with one method at a
time, the methods taking turns in blocks of steps, so each is timed right after a real backward, in the
cache state a training step with that method leaves. Timed step by step instead, a method right after
another that went through NumPy read up to 1.4x cheaper than right after one that did not; a warm
microbenchmark (the same gradients norm'd in a tight loop) reads every method 2-3x cheaper than a run
pays. The rows:

- ``diag.gradients.host_grad_norm``: what the runner uses for CPU gradients (a NumPy dot per tensor);
- ``diag.gradients.global_grad_norm`` and ``.item()``: what it uses for others (``_foreach_norm``, stack, norm);
- ``torch.nn.utils.get_total_norm`` and ``.item()``: torch's public function for the same number;
- ``vector_norm`` per tensor: a ``.item()`` of each tensor's norm, summed on the host;
- ``none``: the timer alone around nothing (the floor of the measurement);
- with ``--rev REV``: ``host_grad_norm`` as diag/gradients.py defines it at that git revision, called
  as the runner calls it (a change to it against its past).

Each row: the median microseconds a step, its ratio to ``host_grad_norm``, and what it costs a
20-step epoch (the digits runs' length). Before timing, every method's value on the first step's
gradients is checked against a float64 reference; a method that disagrees stops the script.

    python bench/grad_norm.py                       # both workloads, 2,000 steps each (~1 minute)
    python bench/grad_norm.py --rev c407ca2         # also the function at that revision
    python bench/grad_norm.py --quick               # smoke test: one block of each method, the MLP
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from ab_revision import BadInput, revision_object  # bench/ is on sys.path
from overhead import quiet
from results_file import write_results
from whole_run import WORKLOADS, build, guard_norm

from diag.gradients import global_grad_norm, grads_of

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 20  # the digits runs' epoch, for the per-epoch column
TOLERANCE = 1e-5  # relative, against the float64 reference
BLOCK, BLOCK_WARMUP = 20, 2  # steps a method runs in a row; of them, not timed


def _per_tensor(params: list[torch.Tensor]) -> float:
    return math.sqrt(sum(torch.linalg.vector_norm(g).item() ** 2 for g in grads_of(params)))


METHODS: dict[str, Callable[[list[torch.Tensor]], float | None]] = {
    "diag.gradients.host_grad_norm (the runner's, CPU)": guard_norm,
    "diag.gradients.global_grad_norm + item (the runner's, GPU)": lambda p: global_grad_norm(
        p
    ).item(),
    "torch.nn.utils.get_total_norm + item": lambda p: torch.nn.utils.get_total_norm(
        grads_of(p)
    ).item(),
    "vector_norm per tensor + item each": _per_tensor,
    "none (the timer alone)": lambda p: None,
}
BASELINE = next(iter(METHODS))


def add_revision(rev: str) -> None:
    """A row for ``host_grad_norm`` as the revision defines it, given ``grads_of(params)``."""
    _, old = revision_object(rev, "diag.gradients:host_grad_norm", flag="--rev")
    METHODS[f"diag.gradients.host_grad_norm at {rev}"] = functools.partial(
        guard_norm, host_norm=old
    )


def check(params: list[torch.Tensor]) -> None:
    """Every method's value against the float64 norm of the same gradients (``none`` aside)."""
    reference = math.sqrt(sum(float(g.double().square().sum()) for g in grads_of(params)))
    for name, method in METHODS.items():
        value = method(params)
        if value is not None and not math.isclose(value, reference, rel_tol=TOLERANCE):
            raise SystemExit(
                f"bench/grad_norm.py: {name} gave {value!r}, the float64 norm is {reference!r}"
            )


def measure(workload: str, root: Path, steps: int) -> dict[str, list[float]]:
    """Seconds per call of each method, each timed right after a real backward. The methods take turns
    in blocks of ``BLOCK`` steps (the first ``BLOCK_WARMUP`` of a block not counted): a step's cost
    depends on what the step before it ran (a method right after another that also went through NumPy
    finds its code warm), and a loop runs one method at every step."""
    parts = build(workload, "off", root / workload.replace("/", "_"), (), 1)
    model, opt = parts.state.model, parts.state.optimizer
    assert opt is not None
    params = [p for p in model.parameters() if p.requires_grad]
    batches = list(parts.train_loader)
    names = list(METHODS)
    times: dict[str, list[float]] = {name: [] for name in names}
    model.train()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if i == 0:
            check(params)
        block, at = divmod(i, BLOCK)
        name = names[block % len(names)]
        method = METHODS[name]
        start = time.perf_counter()
        method(params)
        elapsed = time.perf_counter() - start
        if at >= BLOCK_WARMUP:
            times[name].append(elapsed)
        opt.step()
    return times


def report(workload: str, times: dict[str, list[float]]) -> list[str]:
    base = statistics.median(times[BASELINE])
    lines = [
        f"| {workload}: global gradient norm after backward | median us a step | over "
        f"{BASELINE.split(' ')[0]} | ms a {STEPS_PER_EPOCH}-step epoch | steps timed |",
        "|---|---|---|---|---|",
    ]
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(
            f"| {name} | {1e6 * med:.1f} | {med / base:.2f} | {1e3 * STEPS_PER_EPOCH * med:.3f} | {len(values)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--steps", type=int, default=2000, help="training steps per workload")
    ap.add_argument("--rev", help="also time host_grad_norm as this git revision defines it")
    ap.add_argument("--quick", action="store_true", help="smoke test: one block of each method")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grad_norm.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.rev:
        try:
            add_revision(args.rev)
        except BadInput as err:
            print(f"bench/grad_norm.py: {err}", file=sys.stderr)
            return 2
    if args.steps < BLOCK * len(METHODS):
        print(
            f"bench/grad_norm.py: --steps {args.steps}: give at least {BLOCK * len(METHODS)} "
            f"(a block of {BLOCK} per method)",
            file=sys.stderr,
        )
        return 2
    workloads, steps = (
        (["mlp/digits"], BLOCK * len(METHODS)) if args.quick else (args.workloads, args.steps)
    )
    torch.set_num_threads(1)
    started = time.perf_counter()
    lines = [
        f"torch {torch.__version__}, 1 intra-op thread; {steps} steps a workload, the methods taking turns "
        f"in blocks of {BLOCK} steps (the first {BLOCK_WARMUP} of each not timed)"
        + ("; --quick (smoke test: figures are not meaningful)" if args.quick else ""),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-grad-norm-") as tmp, quiet():
        for workload in workloads:
            lines += ["", *report(workload, measure(workload, Path(tmp), steps))]
    text = "\n".join(lines)
    print(text)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    write_results(args.out, "grad_norm.py", text, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
