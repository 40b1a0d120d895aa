"""Does the diagnosis find each fault of the public suite, early, without false alarms?

    python bench/faults.py [--seed 42] [--only NAME ...] [--out bench/results/faults.md]

Prints, per case: expected code, codes found (with severity), the step at
which the expected code was first detected live and its share of the run; then
recall over faults and false alarms (warning/critical) over healthy runs.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from fault_suite import FAULTS, HEALTHY, run_case


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", nargs="*", help="case names to run")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file for the table (default: bench/results/faults.md for the full suite)",
    )
    args = ap.parse_args()
    logging.disable(logging.INFO)
    cases = [(n, code, o) for n, (code, o) in FAULTS.items()] + [
        (n, None, o) for n, o in HEALTHY.items()
    ]
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
    rows, found, faults, alarms, healthy = [], 0, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, expected, overrides in cases:
            report = run_case(overrides, Path(tmp) / name, seed=args.seed)
            issues = report["issues"]
            codes = ", ".join(f"{i['code']}({i['severity'][0]})" for i in issues) or "-"
            steps = report["metrics"]["steps"]
            if expected:
                faults += 1
                hit = next((i for i in issues if i["code"] == expected), None)
                ok = hit is not None
                found += ok
                when = hit.get("detected_step", hit["first_step"]) if hit else None
                early = f"{when} ({when / max(steps, 1):.0%})" if hit else "-"
                verdict = ("found" if ok and when <= steps / 3 else "late") if ok else "MISSED"
            else:
                healthy += 1
                bad = [i for i in issues if i["severity"] in ("warning", "critical")]
                alarms += bool(bad)
                early, verdict = "-", "FALSE ALARM" if bad else "clean"
            acc = report["metrics"].get("test_acc")
            rows.append(
                f"| {name} | {expected or 'healthy'} | {codes} | {early} | {steps} | "
                f"{acc:.3f} | {verdict} |"
                if acc is not None
                else f"| {name} | {expected or 'healthy'} | {codes} | {early} | {steps} | n/a | {verdict} |"
            )
            print(rows[-1], flush=True)
    header = [
        "| case | expected | codes found | first detected (share of run) | steps | test acc | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    total = [
        f"recall over faults: {found}/{faults}",
        f"false alarms over healthy runs: {alarms}/{healthy}",
    ]
    text = "\n".join(header + rows) + "\n\n" + "\n".join(total) + "\n"
    print()
    print(text)
    out = args.out or (None if args.only else Path(__file__).parent / "results" / "faults.md")
    if out is not None:  # a partial run never overwrites the full suite's table
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
