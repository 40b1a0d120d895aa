"""Does the AutoTrainer repair the fault benchmark's cases, measured against each fault's healthy twin?

    python bench/autotrainer.py [--split dev|test] [--sample-seed 0] [--per-family 2] [--healthy 8] [--jobs N]
                                [--runs DIR] [--out FILE] [--quick] [--score-only]
                                [--families a,b] [--skip N] [--variants off,twin]

Cases come from ``bench/fault_families.py`` (the randomized fault benchmark of ``bench/fault_bench.py``):
each faulty case names its healthy twin, the same recipe without the fault. Tune on ``dev``, report
``test`` (a stable hash of each case picks its half); ``--sample-seed`` draws another sample of cases
from the generator (a fresh test half once a seed's has been looked at). To fit the time, the first ``--per-family``
cases of each family in the half are run (the case list is shuffled, so that is a random sample), and
the first ``--healthy`` healthy cases.

Each faulty case runs three times, same seed: as is, with ``autotrainer=default``, and its twin.
Printed per family: test accuracy without, with and of the twin (means), how many end within 2
points of their twin, the data ceiling where the family is bounded by its data
(``bench/data_ceiling.py``: the best classical classifier fit on the case's own training examples;
a case whose ceiling is more than 2 points below its twin is reported apart, as bounded), the
actions taken, and the wall time with the AutoTrainer over the twin's. Each healthy case runs as is
and with ``autotrainer=default``: the actions taken and the accuracy change.

Targets (issue 21): >= 90% of faults whose data allows it within 2 points of their twin; mean wall
time <= 1.3x the twin's; actions on <= 2% of healthy runs and none lowering a healthy run's accuracy
by more than half a point. Runs are kept under ``--runs`` (a run with its ``bench.json`` is not
rerun), so an interrupted benchmark resumes; ``--score-only`` reprints the tables from them.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_families import Case, generate, quick_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WITHIN = 0.02  # "within 2 points of the twin"
HEALTHY_DROP = 0.005  # an action may not cost a healthy run more than half a point
# families whose data bounds what any training can reach: their ceiling is measured
DATA_BOUNDED = ("labels_noisy", "too_few_examples")
AT = "autotrainer=default"


def variants(case: Case) -> dict[str, list[str]]:
    """The runs of one case: as is, with the AutoTrainer, and (for a fault) its healthy twin."""
    out = {"off": case.overrides, "on": [*case.overrides, AT]}
    if case.family != "healthy":
        out["twin"] = case.twin
    return out


def run_one(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """One run in this process (the runner in-process, as fault_bench does); never raises."""
    import torch
    from fault_suite import run_case

    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    run_dir = Path(job["dir"])
    try:
        t0 = time.process_time()
        report = run_case(job["overrides"], run_dir, seed=job["seed"])
        cpu = time.process_time() - t0
        (run_dir / "bench.json").write_text(
            json.dumps({"wall_time": report["wall_time"], "cpu_time": cpu})
        )
        return {"name": job["name"], "error": None}
    except BaseException as e:  # a crash is a result (an error row), not the end of the benchmark
        run_dir.mkdir(parents=True, exist_ok=True)
        msg = f"{type(e).__name__}: {e}"
        (run_dir / "error.txt").write_text(msg + "\n" + traceback.format_exc())
        return {"name": job["name"], "error": msg}


def load(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's report plus its times, or None."""
    if not (run_dir / "bench.json").exists():
        return None
    report = json.loads((run_dir / "report.json").read_text())
    report.update(json.loads((run_dir / "bench.json").read_text()))
    return report


def acc(report: dict[str, Any] | None) -> float | None:
    if report is None:
        return None
    value = report.get("metrics", {}).get("test_acc")
    return 0.0 if value is None else float(value)  # a run that ended without a test accuracy failed


def changing(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions that changed the run (a give-up changes nothing)."""
    return [a for a in actions if a["action"] != "give_up"]


def summarize(actions: list[dict[str, Any]]) -> str:
    """``lower_momentum(MOMENTUM_TOO_HIGH)@40+, restart(UNDERFITTING)@120/a1 ...`` (+ improved, - worse)."""
    mark = {"improved": "+", "worse": "-", "no change": "=", "not measured": "?"}
    parts = []
    for a in actions:
        verdict = (a.get("measured") or {}).get("verdict")
        parts.append(
            f"{a['action']}({a['code']})@{a['step']}"
            + (f"/a{a['attempt']}" if a.get("attempt") else "")
            + mark.get(verdict or "", "")
        )
    return ", ".join(parts) or "-"


def score(case: Case, runs: Path, ceilings: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """One row of the per-case table."""
    got = {v: load(runs / case.name / v) for v in variants(case)}
    row: dict[str, Any] = {"case": case, "done": all(r is not None for r in got.values())}
    if not row["done"]:
        errors = [
            (runs / case.name / v / "error.txt").read_text().splitlines()[0][:100]
            for v in got
            if (runs / case.name / v / "error.txt").exists()
        ]
        row["error"] = errors[0] if errors else "not run"
        return row
    on = got["on"]
    assert on is not None
    actions = on.get("autotrainer", {}).get("actions", [])
    row.update(
        off=acc(got["off"]),
        on=acc(on),
        actions=actions,
        changed=len(changing(actions)),
        wall_on=on["wall_time"],
        wall_off=got["off"]["wall_time"] if got["off"] else None,
    )
    if case.family == "healthy":
        row["delta"] = row["on"] - row["off"]
        return row
    twin = got["twin"]
    assert twin is not None
    row["twin"] = acc(twin)
    row["ratio"] = on["wall_time"] / twin["wall_time"]
    # CPU time of the run's process: less bent than wall time by other work on a shared machine
    row["cpu_ratio"] = on["cpu_time"] / twin["cpu_time"] if twin.get("cpu_time") else None
    row["within"] = row["on"] >= row["twin"] - WITHIN
    ceiling = ceilings.get(case.name)
    row["ceiling"] = ceiling
    row["bounded"] = ceiling is not None and ceiling[0] < row["twin"] - WITHIN
    return row


def _mean_x(xs: Iterable[float | None]) -> str:
    known = [x for x in xs if x is not None]
    return f"{statistics.mean(known):.2f}x" if known else "-"


def _mean(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" if xs else "-"


def tables(rows: list[dict[str, Any]], title: str) -> tuple[str, dict[str, Any]]:
    """The per-family table, the healthy table, the per-case table and the totals against the targets."""
    done = [r for r in rows if r["done"]]
    faults = [r for r in done if r["case"].family != "healthy"]
    healthy = [r for r in done if r["case"].family == "healthy"]
    lines = [
        f"## AutoTrainer against each fault's healthy twin ({title})",
        "",
        "| family | cases | acc without | acc with | twin | ceiling | within 2 pts | bounded | actions "
        "| time with/twin | CPU with/twin |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam in sorted({r["case"].family for r in faults}):
        group = [r for r in faults if r["case"].family == fam]
        ceil = [r["ceiling"][0] for r in group if r["ceiling"] is not None]
        lines.append(
            f"| {fam} | {len(group)} | {_mean([r['off'] for r in group])} | "
            f"{_mean([r['on'] for r in group])} | {_mean([r['twin'] for r in group])} | "
            f"{_mean(ceil) if ceil else '-'} | {sum(r['within'] for r in group)}/{len(group)} | "
            f"{sum(r['bounded'] for r in group)} | {sum(r['changed'] for r in group)} | "
            f"{statistics.mean(r['ratio'] for r in group):.2f}x | {_mean_x(r['cpu_ratio'] for r in group)} |"
        )
    fixable = [r for r in faults if not r["bounded"]]
    bounded = [r for r in faults if r["bounded"]]
    repaired = sum(r["within"] for r in fixable)
    ratios = [r["ratio"] for r in faults]
    acted = [r for r in healthy if r["changed"]]
    hurt = [r for r in healthy if r["changed"] and r["delta"] < -HEALTHY_DROP]
    totals = {
        "fixable": len(fixable),
        "repaired": repaired,
        "ratio": statistics.mean(ratios) if ratios else None,
        "healthy": len(healthy),
        "acted": len(acted),
        "hurt": len(hurt),
    }
    lines += [
        "",
        "| healthy case | acc without | acc with | change | actions |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case'].name} | {r['off']:.3f} | {r['on']:.3f} | {r['delta']:+.3f} | "
        f"{summarize(r['actions'])} |"
        for r in healthy
    ]
    lines += [
        "",
        "| case | split | acc without | acc with | twin | ceiling | within 2 pts | time with/twin | actions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in faults:
        ceil = f"{r['ceiling'][0]:.3f} ({r['ceiling'][1]})" if r["ceiling"] else "-"
        lines.append(
            f"| {r['case'].name} | {r['case'].split} | {r['off']:.3f} | {r['on']:.3f} | "
            f"{r['twin']:.3f} | {ceil} | {'yes' if r['within'] else 'no'}"
            f"{' (bounded)' if r['bounded'] else ''} | {r['ratio']:.2f}x | {summarize(r['actions'])} |"
        )
    for r in rows:
        if not r["done"]:
            lines.append(f"| {r['case'].name} | {r['case'].split} | error: {r['error']} |")
    lines += [""]
    if fixable:
        lines.append(
            f"faults whose data allows it within 2 points of their twin: {repaired}/{len(fixable)} "
            f"({repaired / len(fixable):.0%}; target >= 90%)"
        )
    lines.append(
        "bounded by their data (ceiling more than 2 points below the twin): "
        + (
            "; ".join(
                f"{r['case'].name} ceiling {r['ceiling'][0]:.3f} ({r['ceiling'][1]}), "
                f"with {r['on']:.3f}, twin {r['twin']:.3f}"
                for r in bounded
            )
            or "none"
        )
    )
    cpu = [r["cpu_ratio"] for r in faults if r["cpu_ratio"] is not None]
    if cpu:
        lines.append(
            f"CPU time with the AutoTrainer over the twin's: mean {statistics.mean(cpu):.2f}x, "
            f"median {statistics.median(cpu):.2f}x, max {max(cpu):.2f}x"
        )
    if ratios:
        lines.append(
            f"wall time with the AutoTrainer over the twin's: mean {statistics.mean(ratios):.2f}x, "
            f"median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x (target mean <= 1.3x)"
        )
    if healthy:
        lines.append(
            f"healthy runs with an action that changed them: {len(acted)}/{len(healthy)} "
            f"({len(acted) / len(healthy):.0%}; target <= 2%); of those losing more than half a point: "
            f"{len(hurt)} (target 0)"
        )
    errors = [r for r in rows if not r["done"]]
    lines.append(f"runs that crashed or did not run: {len(errors)}")
    return "\n".join(lines) + "\n", totals


def select(args: argparse.Namespace) -> list[Case]:
    """The first ``per_family`` cases of each family and the first ``healthy`` healthy ones, in the half."""
    if args.quick:
        return quick_cases()
    cases = [c for c in generate(seed=args.sample_seed) if c.split == args.split]
    if args.families:
        wanted = set(args.families.split(","))
        cases = [c for c in cases if c.family in wanted]
    picked: list[Case] = []
    counts: dict[str, int] = {}
    for c in cases:
        limit = args.healthy if c.family == "healthy" else args.per_family
        seen = counts.get(c.family, 0)
        counts[c.family] = seen + 1
        if args.skip <= seen < args.skip + limit:
            picked.append(c)
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", choices=("dev", "test"), default="dev")
    ap.add_argument(
        "--sample-seed",
        type=int,
        default=0,
        help="seed of the case sampler (bench/fault_families.py)",
    )
    ap.add_argument("--per-family", type=int, default=2, help="faulty cases per family and half")
    ap.add_argument("--healthy", type=int, default=8, help="healthy cases from the half")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--families", default=None, help="only these families (comma-separated; 'healthy' too)"
    )
    ap.add_argument(
        "--variants",
        default=None,
        help="run only these of off,on,twin (e.g. the runs without the AutoTrainer ahead of time)",
    )
    ap.add_argument("--skip", type=int, default=0, help="skip the first N cases of each family")
    ap.add_argument("--quick", action="store_true", help="fault_families' four tiny cases")
    ap.add_argument("--score-only", action="store_true", help="reprint from saved runs")
    ap.add_argument("--runs", type=Path, default=ROOT / "outputs" / "autotrainer_bench")
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the tables")
    args = ap.parse_args()
    cases = select(args)
    args.runs.mkdir(parents=True, exist_ok=True)
    jobs = [
        {
            "name": f"{c.name}/{v}",
            "dir": str(args.runs / c.name / v),
            "overrides": o,
            "seed": c.seed,
        }
        for c in cases
        for v, o in variants(c).items()
        if not (args.runs / c.name / v / "bench.json").exists()
        and (args.variants is None or v in args.variants.split(","))
    ]
    if jobs and not args.score_only:
        print(f"{len(jobs)} runs to do ({len(cases)} cases)", flush=True)
        if args.jobs <= 1:
            for i, job in enumerate(jobs, 1):
                res = run_one(job, args.threads)
                print(f"[{i}/{len(jobs)}] {res['name']}: {res['error'] or 'done'}", flush=True)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = [pool.submit(run_one, job, args.threads) for job in jobs]
                for i, fut in enumerate(as_completed(futures), 1):
                    res = fut.result()
                    print(f"[{i}/{len(jobs)}] {res['name']}: {res['error'] or 'done'}", flush=True)
    from data_ceiling import data_ceiling

    from runner.conf_dir import CONF_DIR

    ceilings = {
        c.name: data_ceiling(c.overrides, CONF_DIR) for c in cases if c.family in DATA_BOUNDED
    }
    rows = [score(c, args.runs, ceilings) for c in cases]
    title = (
        "quick"
        if args.quick
        else f"{args.split} half of sample seed {args.sample_seed}, {args.per_family} cases per family, {args.healthy} healthy"
    )
    text, _ = tables(rows, title)
    print()
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
