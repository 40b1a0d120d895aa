"""What does ``stop_on=critical`` save on a grid LR sweep, and does it cost the sweep its answer?

For each workload (MLP and CNN on digits, SGD and Adam) the same 12-point log grid of learning rates
(1e-5 .. 10) runs twice as a real ``python -m runner -m optimizer.lr=...`` multirun (Hydra's basic
launcher: one process, the trials one after the other): once without early stopping and once with
``stop_on=critical`` (with it, ``BEHIND_SWEEP`` compares each trial with the sweep's best finished trial,
and the grid runs from its middle out: ``runner/behind_sweep.py``). The two sweeps of a workload run back to back, their order alternating from one
workload to the next, so the machine's load drifts over both alike. Printed side by side: each sweep's
wall time and their ratio, each sweep's best trial (``diag.sweep.summarize``: lowest best validation
loss among the runs that neither diverged nor were stopped) and its best validation loss, the trials
stopped (LR, code, step), and whether any healthy trial was stopped: one whose final validation
accuracy in the sweep without early stopping is within 2 points of that sweep's best.

Targets (issue 25): wall time with stop_on at most 60% of the time without, the same best trial and the
same best validation loss, no healthy trial stopped.

    python bench/lr_sweep_stop.py                  # 4 workloads x 12 LRs x 2 sweeps
    python bench/lr_sweep_stop.py --quick          # smoke test: MLP/SGD, 3 LRs, 1 epoch
    python bench/lr_sweep_stop.py --seed 2 --out bench/results/lr_sweep_stop_seed2.md   # another seed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_results  # noqa: E402  (bench/ is on sys.path)

from diag.sweep import summarize  # noqa: E402
from runner.stop_on import project  # noqa: E402

# overrides and epochs per trial: the digits recipe's 20 (runner/conf/trainer/default.yaml)
WORKLOADS: dict[str, tuple[list[str], int]] = {
    "mlp/sgd": (["model=mlp", "optimizer=sgd"], 20),
    "mlp/adam": (["model=mlp", "optimizer=adam"], 20),
    "cnn/sgd": (["model=cnn", "optimizer=sgd"], 20),
    "cnn/adam": (["model=cnn", "optimizer=adam"], 20),
}
GRID = [float(f"{10 ** (-5 + 6 * i / 11):.3g}") for i in range(12)]  # 1e-05 .. 10, log-spaced
QUICK_GRID = [1e-3, 0.1, 10.0]
HEALTHY_POINTS = 0.02  # a trial within 2 points of the grid's best val accuracy is healthy
TARGET_RATIO = 0.60
# callbacks.stop_on's early grace (where the projection starts) and need; digits' 10 classes
EARLY_GRACE, NEED, CHANCE = 0.1, 0.75, math.log(10)


def run_sweep(
    overrides: list[str], lrs: list[float], sweep_dir: Path
) -> tuple[float, float, tuple[float, float]]:
    """One real multirun in a fresh process; returns its wall time and its CPU time (user + system)
    in seconds, and the 1-minute load average before and after it. On a shared machine the CPU time
    is the steadier measure of the work done; the load says how far to trust the wall time."""
    cmd = [
        sys.executable,
        "-m",
        "runner",
        "-m",
        *overrides,
        "optimizer.lr=" + ",".join(f"{lr:g}" for lr in lrs),
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={sweep_dir.parent}",
        "trainer.progress=false",
    ]
    # one thread: the machine is shared, and both sweeps get the same
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=sweep_dir.parent, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, cpu, (load0, os.getloadavg()[0])


def bench_workload(
    name: str,
    overrides: list[str],
    lrs: list[float],
    epochs: int,
    work: Path,
    first_with: bool,
    seed: int | None = None,
) -> dict[str, Any]:
    """The two sweeps of one workload, in the given order; what each found."""
    base = [
        *overrides,
        f"trainer.max_epochs={epochs}",
        *([f"seed={seed}"] if seed is not None else []),
    ]
    sweeps: dict[str, dict[str, Any]] = {}
    order = ["with", "without"] if first_with else ["without", "with"]
    for kind in order:
        sweep_dir = work / name.replace("/", "_") / kind
        extra = ["stop_on=critical"] if kind == "with" else []
        seconds, cpu, load = run_sweep([*base, *extra], lrs, sweep_dir)
        summary = summarize(sweep_dir, write=False)
        sweeps[kind] = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "load": load,
            "trial_seconds": trial_seconds(sweep_dir),
            "summary": summary,
            "dir": str(sweep_dir),
        }
    return {"workload": name, "order": order, "epochs": epochs, **sweeps}


def trial_seconds(sweep_dir: Path) -> float:
    """Seconds inside the trials (fit_start to fit_end of each events.jsonl: build and the process's
    start-up are outside; the end-of-run summary, test and report inside), summed over the sweep."""
    total = 0.0
    for events in sweep_dir.glob("*/events.jsonl"):
        times = {
            e["kind"]: e["time"]
            for e in map(json.loads, events.read_text().splitlines())
            if e.get("kind") in ("fit_start", "fit_end")
        }
        if len(times) == 2:
            total += times["fit_end"] - times["fit_start"]
    return total


def healthy_projections(
    sweep_dir: Path, summary: dict[str, Any], best_acc: float
) -> dict[str, Any]:
    """How near the healthy trials of the sweep without stop_on came to stop_on's projection bar: the
    highest projected end (runner.stop_on.project, its defaults) at any epoch past the early grace, over the
    trials within 2 points of the best, read from each trial's val_diagnostics.jsonl."""
    worst: dict[str, Any] = {"projected": None, "lr": None, "epoch": None}
    for r in summary["runs"]:
        if (r["val_acc"] or 0.0) < best_acc - HEALTHY_POINTS:
            continue
        path = sweep_dir / r["name"] / "val_diagnostics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        history = [{"step": row["step"], "val/loss": row["loss"]} for row in rows]
        max_steps = int(history[-1]["step"]) if history else 0
        for n in range(1, len(history)):  # an epoch's end before the last, past the grace
            if history[n - 1]["step"] < EARLY_GRACE * max_steps:
                continue
            seen = project(history[:n], int(history[n - 1]["step"]), max_steps)
            if seen and (
                worst["projected"] is None or seen["projected_val_loss"] > worst["projected"]
            ):
                worst = {"projected": seen["projected_val_loss"], "lr": r["lr"], "epoch": n}
    return worst


def _best(summary: dict[str, Any]) -> tuple[str, float | None, float | None]:
    best = summary["best"]
    if best is None:
        return "-", None, None
    return best["name"], best["lr"], best["best_val_loss"]


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """Ratio, same best, stopped trials and whether any was healthy (by the sweep without stop_on)."""
    without, with_ = result["without"]["summary"], result["with"]["summary"]
    full = {r["name"]: r for r in without["runs"]}
    best_acc = max((r["val_acc"] or 0.0) for r in without["runs"])
    stopped = []
    for r in with_["runs"]:
        if r["stopped"]:
            acc = full[r["name"]]["val_acc"] or 0.0
            stopped.append(
                {
                    "lr": r["lr"],
                    "code": r["stopped"]["code"],
                    "step": r["stopped"]["step"],
                    "max_steps": r["stopped"]["max_steps"],
                    "full_val_acc": acc,
                    "why": _projection(r["stopped"]),
                    "healthy": acc >= best_acc - HEALTHY_POINTS,
                }
            )
    ratio = result["with"]["seconds"] / result["without"]["seconds"]
    b0, b1 = _best(without), _best(with_)
    same_trial = b0[0] == b1[0]
    same_loss = b0[2] is not None and b1[2] is not None and abs(b0[2] - b1[2]) <= 1e-9
    healthy_stopped = [s for s in stopped if s["healthy"]]
    margin = healthy_projections(Path(result["without"]["dir"]), without, best_acc)
    return {
        "ratio": ratio,
        "best": (b0, b1),
        "best_acc": best_acc,
        "same_trial": same_trial,
        "same_loss": same_loss,
        "stopped": stopped,
        "healthy_stopped": healthy_stopped,
        "healthy_projection": margin,
        "met": ratio <= TARGET_RATIO and same_trial and same_loss and not healthy_stopped,
    }


def _loss(v: float | None) -> str:
    return "-" if v is None else (f"{v:.4f}" if v < 1e4 else f"{v:.2e}")


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _epochs(sweep: dict[str, Any]) -> int:
    """The epochs the sweep's trials trained, summed: the training compute stop_on controls."""
    return sum(int(r["epochs"] or 0) for r in sweep["summary"]["runs"])


def _projection(stopped: dict[str, Any]) -> str:
    """The projection that stopped a slow trial (runner.stop_on.project), or nothing."""
    ref = stopped.get("compared_with")
    if isinstance(ref, dict):  # BEHIND_SWEEP: the sweep's finished trial it was judged against
        return (
            f"; behind #{ref['trial']}: projected val acc {ref['projected_val_acc']:.3f} < "
            f"{ref['bar']:.3f} (#{ref['trial']}'s final {ref['ref_final_val_acc']:.3f} - "
            f"{ref['ref_final_val_acc'] - ref['bar']:.2g})"
        )
    p = stopped.get("projection")
    if not isinstance(p, dict):
        return ""
    return (
        f"; projected end val loss {p['projected_val_loss']:.3g} >= "
        f"{p['need']:g} x chance {p['chance_loss']:.3g}"
    )


def render(results: list[dict[str, Any]], lrs: list[float], seed: int | None = None) -> str:
    """Per workload the trials side by side, then one summary table."""
    out = [
        f"Grid of {len(lrs)} LRs ({lrs[0]:g} .. {lrs[-1]:g}) on digits, "
        f"one thread, seed {'the config default' if seed is None else seed}; "
        "without and with stop_on=critical",
        "",
    ]
    for res in results:
        j = res["judged"]
        w0, w1 = res["without"], res["with"]
        runs1 = {r["name"]: r for r in w1["summary"]["runs"]}
        out += [
            f"## {res['workload']}  ({res['epochs']} epochs per trial; run first: "
            f"{res['order'][0]} stop_on)",
            "",
            "| lr | no stop_on: best val loss | val acc | epochs | stop_on=critical: best val loss "
            "| val acc | epochs | stopped |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r0 in w0["summary"]["runs"]:
            r1 = runs1.get(r0["name"], {})
            s = r1.get("stopped")
            stop = f"{s['code']} at step {s['step']}" if s else "-"
            if s and isinstance(s.get("compared_with"), dict):
                stop += f" (vs #{s['compared_with']['trial']})"
            out.append(
                f"| {r0['lr']:g} | {_loss(r0['best_val_loss'])} | {_acc(r0['val_acc'])} "
                f"| {r0['epochs']} | {_loss(r1.get('best_val_loss'))} | {_acc(r1.get('val_acc'))} "
                f"| {r1.get('epochs')} | {stop} |"
            )
        (n0, lr0, l0), (n1, lr1, l1) = j["best"]
        out += [
            "",
            "|  | no stop_on | stop_on=critical |",
            "|---|---|---|",
            f"| wall time | {w0['seconds']:.1f} s | {w1['seconds']:.1f} s (ratio {j['ratio']:.2f}) |",
            f"| CPU time (user + system) | {w0['cpu_seconds']:.1f} s | {w1['cpu_seconds']:.1f} s "
            f"(ratio {w1['cpu_seconds'] / w0['cpu_seconds']:.2f}) |",
            f"| in the trials (fit start to end, summed) | {w0['trial_seconds']:.1f} s "
            f"| {w1['trial_seconds']:.1f} s (ratio {w1['trial_seconds'] / w0['trial_seconds']:.2f}) |",
            f"| epochs trained (summed over the trials) | {_epochs(w0)} | {_epochs(w1)} "
            f"(ratio {_epochs(w1) / max(_epochs(w0), 1):.2f}) |",
            f"| load average (1 min) before / after | {w0['load'][0]:.1f} / {w0['load'][1]:.1f} "
            f"| {w1['load'][0]:.1f} / {w1['load'][1]:.1f} |",
            f"| best trial | #{n0} lr={lr0:g} | #{n1} lr={lr1:g} |"
            if lr0 is not None and lr1 is not None
            else f"| best trial | #{n0} | #{n1} |",
            f"| best val loss | {_loss(l0)} | {_loss(l1)} |",
            f"| trials stopped | 0 | {len(j['stopped'])} |",
            "",
        ]
        for s in j["stopped"]:
            out.append(
                f"- stopped lr={s['lr']:g}: {s['code']} at step {s['step']} of {s['max_steps']} "
                f"(val acc without stop_on {s['full_val_acc']:.3f}; grid best {j['best_acc']:.3f}"
                f"{s['why']})" + ("  **HEALTHY**" if s["healthy"] else "")
            )
        out += [
            "",
            f"healthy trials stopped (within {100 * HEALTHY_POINTS:.0f} points of "
            f"{j['best_acc']:.3f}): {len(j['healthy_stopped']) or 'none'}",
        ]
        hp = j["healthy_projection"]
        if hp["projected"] is not None:
            out.append(
                f"healthy trials' highest projected end past the early grace (no stop_on): "
                f"{hp['projected']:.3g} (lr={hp['lr']:g}, epoch {hp['epoch']}); "
                f"the bar: {NEED:g} x {CHANCE:.3g} = {NEED * CHANCE:.3g}"
            )
        out.append("")
    out += [
        "## Summary",
        "",
        "| workload | wall no stop_on | wall stop_on | ratio (<= 0.60) | CPU ratio | same best trial "
        "| same best val loss | stopped | healthy stopped | target met | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        j = res["judged"]
        loads = [*res["without"]["load"], *res["with"]["load"]]
        out.append(
            f"| {res['workload']} | {res['without']['seconds']:.1f} s | {res['with']['seconds']:.1f} s "
            f"| {j['ratio']:.2f} "
            f"| {res['with']['cpu_seconds'] / res['without']['cpu_seconds']:.2f} "
            f"| {'yes' if j['same_trial'] else 'NO'} "
            f"| {'yes' if j['same_loss'] else 'NO'} | {len(j['stopped'])} "
            f"| {len(j['healthy_stopped'])} | {'yes' if j['met'] else 'NO'} "
            f"| {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="MLP/SGD, 3 LRs, 1 epoch: a smoke test"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default: per workload)"
    )
    parser.add_argument("--workloads", nargs="*", default=None, choices=list(WORKLOADS))
    parser.add_argument("--seed", type=int, default=None, help="seed=N for every trial")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweeps here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lr_sweep_stop.md")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else None)
    lrs = QUICK_GRID if args.quick else GRID
    names = args.workloads or (["mlp/sgd"] if args.quick else list(WORKLOADS))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lr_sweep_stop_") as tmp:
        work = args.keep or Path(tmp)
        results = []
        for i, name in enumerate(names):
            overrides, default_epochs = WORKLOADS[name]
            res = bench_workload(
                name,
                overrides,
                lrs,
                epochs or default_epochs,
                work,
                first_with=i % 2 == 1,
                seed=args.seed,
            )
            res["judged"] = judge(res)
            results.append(res)
            if args.keep:  # what was measured, for reading again
                (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
            print(f"{name}: done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    text = render(results, lrs, args.seed) + f"\n\ntotal {time.perf_counter() - t0:.0f}s"
    print(text)
    write_results(
        args.out, "lr_sweep_stop.py", text, list(argv if argv is not None else sys.argv[1:])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
