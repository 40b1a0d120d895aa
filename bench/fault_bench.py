"""A randomized fault benchmark: sampled faulty and healthy runs, scored on a held-out half.

    python bench/fault_bench.py [--split dev|test|all] [--limit N] [--jobs N] [--quick]
                                [--score-only] [--runs DIR] [--out FILE]

Cases come from ``bench/fault_families.py``: fault families x magnitude x model x optimizer x
scheduler x batch x data x seed, and healthy recipes from a sane space. Each family's
acceptable codes are fixed in code before any run. A stable hash of each case puts it in the
``dev`` or the ``test`` half: tune on dev, report on test.

Per family and overall: recall (the final report names an acceptable code at warning or
above), false alarms (healthy runs with a warning or worse), wrong cause (faulty runs with a
warning or worse but no acceptable code), first live line wrong (faulty runs whose first
warning-or-worse line printed live, from ``events.jsonl``, names a code the family does not
accept), and the first detection of an acceptable code as a
share of the run (median, 90th percentile), each with a 95% interval (Wilson for rates,
order statistics for quantiles). A crashed run is an error row, never dropped. Runs are kept
under ``--runs`` (one directory per case); a case whose ``report.json`` exists is not rerun,
and ``--score-only`` rescores the saved reports without running anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_families import Case, generate, quick_cases  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERIOUS = ("warning", "critical")
Z = 1.959964  # 95% two-sided


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials ((0, 1) for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def quantile_interval(values: list[float], q: float) -> tuple[float, float, float]:
    """The q-quantile and a 95% distribution-free interval from order statistics (binomial ranks)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    est = xs[min(n - 1, max(0, math.ceil(q * n) - 1))]
    half = Z * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half) - 1)
    hi = min(n - 1, math.ceil(n * q + half))
    return est, xs[lo], xs[hi]


def run_one(case: dict[str, Any], runs: str, threads: int) -> dict[str, Any]:
    """Run one case in this process (the runner in-process, as bench/fault_suite.py does); never raises."""
    import torch
    from fault_suite import run_case

    torch.set_num_threads(threads)
    logging.disable(logging.INFO)
    run_dir = Path(runs) / case["name"]
    if (run_dir / "report.json").exists():  # done since this process listed it (by another process)
        return {"name": case["name"], "error": None}
    try:
        run_case(case["overrides"], run_dir, seed=case["seed"])
        return {"name": case["name"], "error": None}
    except BaseException as e:  # a crash is a result (an error row), not the end of the benchmark
        run_dir.mkdir(parents=True, exist_ok=True)
        msg = f"{type(e).__name__}: {e}"
        (run_dir / "error.txt").write_text(msg + "\n" + traceback.format_exc())
        return {"name": case["name"], "error": msg}


def rediagnose(case: Case, run_dir: Path) -> dict[str, Any]:
    """The report a saved run would get from today's rules: its final series (from ``last.pt``) diagnosed
    again offline. The run's settings a newer hook reads at fit start come from the checkpoint's optimizer,
    the case's config and its first training batch. No live first line (that needs a live run)."""
    import torch
    from fault_suite import CONF_DIR
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from diag.diagnosis import diagnose
    from diag.run_state import optimizer_settings
    from diag.series import RunSeries

    report = json.loads((run_dir / "report.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    series = RunSeries(**ckpt["hooks"]["diagnostics"]["series"])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*case.overrides, f"seed={case.seed}"])
    if series.momentum is None:
        opt_cls = type("AdamW" if cfg.optimizer._target_.endswith("AdamW") else "Other", (), {})
        fake = opt_cls()
        fake.param_groups = ckpt["optimizer"]["param_groups"]  # type: ignore[attr-defined]
        for key, value in optimizer_settings(fake).items():
            setattr(series, key, value)
        series.dropout = float(cfg.model.get("dropout") or 0.0) or None
    if not series.layer_width:  # each Linear/Conv weight's outputs, as the live hook reads them
        series.layer_width = {
            k.removesuffix(".weight"): int(v.shape[0])
            for k, v in ckpt["model"].items()
            if k.endswith(".weight") and v.ndim >= 2
        }
    if series.batch_size is None:
        series.batch_size = int(cfg.data.batch_size)
    if series.input_mean is None or series.steps_per_epoch is None:
        data = instantiate(cfg.data)
        data.setup()
        loader = data.loader("train", device=torch.device("cpu"))
        series.steps_per_epoch = series.steps_per_epoch or len(loader)
        if series.input_mean is None:
            x, _ = next(iter(loader))
            series.input_mean, series.input_std = float(x.float().mean()), float(x.float().std())
    issues = [i.to_dict() for i in diagnose(series)]
    for i in issues:
        i["detected_step"] = i["first_step"]
    return {"issues": issues, "metrics": report.get("metrics", {})}


def first_live_line(run_dir: Path) -> dict[str, Any] | None:
    """The first warning-or-worse finding the run announced live (``events.jsonl``), as its issue dict.

    Each diagnosis event lists the codes it added; the live hook prints one line per added code, in the
    order of its issues (most severe first). None: the run never announced one.
    """
    events = run_dir / "events.jsonl"
    if not events.exists():
        return None
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") != "diagnosis":
            continue
        added = set(event.get("added", []))
        for issue in event.get("issues", []):
            if issue["code"] in added and issue["severity"] in SERIOUS:
                return dict(issue, step=event.get("step"))
    return None


def score_case(case: Case, runs: Path, offline: bool = False) -> dict[str, Any]:
    """One row: what the saved report says about this case (``offline``: what today's rules say of its run)."""
    run_dir = runs / case.name
    row: dict[str, Any] = {"name": case.name, "family": case.family, "split": case.split}
    report_file = run_dir / "report.json"
    if not report_file.exists():
        err = run_dir / "error.txt"
        row["outcome"] = "error" if err.exists() else "not run"
        row["error"] = err.read_text().splitlines()[0][:120] if err.exists() else ""
        return row
    report = rediagnose(case, run_dir) if offline else json.loads(report_file.read_text())
    issues = report.get("issues", [])
    serious = [i for i in issues if i["severity"] in SERIOUS]
    steps = max(1, int(report.get("metrics", {}).get("steps") or 1))
    row["codes"] = ", ".join(f"{i['code']}({i['severity'][0]})" for i in issues) or "-"
    row["steps"] = steps
    if case.family == "healthy":
        row["outcome"] = "alarm" if serious else "clean"
        return row
    first = None if offline else first_live_line(run_dir)
    if first is not None:
        row["first_line"] = first["code"]
        row["first_line_ok"] = first["code"] in case.acceptable
    hits = [i for i in serious if i["code"] in case.acceptable]
    if hits:
        first = min(int(i.get("detected_step", i["first_step"])) for i in hits)
        row["outcome"], row["detect"] = "found", min(1.0, first / steps)
    else:
        row["outcome"] = "wrong cause" if serious else "missed"
    return row


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "-"
    lo, hi = wilson(k, n)
    return f"{k}/{n} {k / n:.0%} [{lo:.0%}, {hi:.0%}]"


def _quant(values: list[float], q: float) -> str:
    if not values:
        return "-"
    est, lo, hi = quantile_interval(values, q)
    return f"{est:.0%} [{lo:.0%}, {hi:.0%}]"


def summary_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Per family, then faults overall, healthy, and all: the metrics table in markdown."""
    lines = [
        "| family | cases | errors | recall | false alarms | wrong cause | first live line wrong "
        "| first detection median | first detection p90 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    families = sorted({r["family"] for r in rows} - {"healthy"})

    def line(label: str, group: list[dict[str, Any]]) -> str:
        done = [r for r in group if r["outcome"] not in ("error", "not run")]
        errors = sum(r["outcome"] == "error" for r in group)
        faulty = [r for r in done if r["family"] != "healthy"]
        healthy = [r for r in done if r["family"] == "healthy"]
        found = sum(r["outcome"] == "found" for r in faulty)
        wrong = sum(r["outcome"] == "wrong cause" for r in faulty)
        alarms = sum(r["outcome"] == "alarm" for r in healthy)
        det = [r["detect"] for r in faulty if "detect" in r]
        # the first warning-or-worse line printed live names a code the family does not accept (of all
        # faulty runs; a run that printed none is not wrong, it is a miss the recall column counts)
        first_wrong = sum(r.get("first_line_ok") is False for r in faulty)
        measured = any("first_line" in r for r in group) or not faulty
        return (
            f"| {label} | {len(group)} | {errors} | {_rate(found, len(faulty))} | "
            f"{_rate(alarms, len(healthy))} | {_rate(wrong, len(faulty))} | "
            f"{_rate(first_wrong, len(faulty)) if measured else '-'} | "
            f"{_quant(det, 0.5)} | {_quant(det, 0.9)} |"
        )

    for fam in families:
        lines.append(line(fam, [r for r in rows if r["family"] == fam]))
    lines.append(line("**all faults**", [r for r in rows if r["family"] != "healthy"]))
    lines.append(line("**healthy**", [r for r in rows if r["family"] == "healthy"]))
    lines.append(line("**overall**", rows))
    return lines


def case_rows(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| case | split | outcome | codes | first live line | first detection |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        detail = r.get("codes", r.get("error", ""))
        det = f"{r['detect']:.0%}" if "detect" in r else "-"
        first = r.get("first_line", "-")
        if "first_line_ok" in r and r["family"] != "healthy":
            first += "" if r["first_line_ok"] else " (wrong)"
        lines.append(
            f"| {r['name']} | {r['split']} | {r['outcome']} | {detail} | {first} | {det} |"
        )
    return lines


def select(args: argparse.Namespace) -> list[Case]:
    cases = quick_cases() if args.quick else generate(args.faulty, args.healthy, args.sample_seed)
    if args.split != "all" and not args.quick:
        cases = [c for c in cases if c.split == args.split]
    return cases[: args.limit] if args.limit else cases


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", choices=("dev", "test", "all"), default="dev")
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases of the split")
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="run the cases left to do last-first (a second process helping one already running)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="cases run in parallel (processes)")
    ap.add_argument("--quick", action="store_true", help="a handful of tiny cases (smoke test)")
    ap.add_argument("--score-only", action="store_true", help="rescore saved reports, run nothing")
    ap.add_argument(
        "--rediagnose",
        action="store_true",
        help="run nothing; diagnose each saved run's series again with today's rules (implies --score-only)",
    )
    ap.add_argument("--faulty", type=int, default=170)
    ap.add_argument("--healthy", type=int, default=80)
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of the case sampler")
    ap.add_argument("--runs", type=Path, default=ROOT / "outputs" / "fault_bench")
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the tables")
    args = ap.parse_args()
    cases = select(args)
    args.runs.mkdir(parents=True, exist_ok=True)
    # resumable: a case with a report is not rerun
    todo = [c for c in cases if not (args.runs / c.name / "report.json").exists()]
    if args.reverse:
        todo.reverse()
    if args.rediagnose:
        args.score_only = True
    if not args.score_only and todo:
        payload = [{"name": c.name, "overrides": c.overrides, "seed": c.seed} for c in todo]
        if args.jobs <= 1:
            for i, p in enumerate(payload, 1):
                res = run_one(p, str(args.runs), threads=1)
                print(f"[{i}/{len(payload)}] {p['name']}: {res['error'] or 'done'}", flush=True)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                futures = [pool.submit(run_one, p, str(args.runs), 1) for p in payload]
                for i, fut in enumerate(as_completed(futures), 1):
                    res = fut.result()
                    print(
                        f"[{i}/{len(payload)}] {res['name']}: {res['error'] or 'done'}", flush=True
                    )
    rows = [score_case(c, args.runs, offline=args.rediagnose) for c in cases]
    title = "quick" if args.quick else f"split {args.split}, {len(cases)} cases"
    text = "\n".join(
        [f"## Fault benchmark ({title})", "", *summary_rows(rows), "", *case_rows(rows), ""]
    )
    print()
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
