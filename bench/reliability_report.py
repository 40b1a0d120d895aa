"""Writes docs/reliability.md's "What was tried and what held" table from the reliability tests themselves.

    python bench/reliability_report.py            # runs the reliability tests, prints markdown

Nothing here is hand-written: a claim appears only as the name of a test that just ran, with its result.
A parametrized test is one row with its case count (the fuzz matrix has hundreds); a row that is not
all held lists the cases that were not.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/integration/test_reliability.py",
    "tests/integration/test_run_directory.py",
    "tests/integration/test_sweep_survival.py",
    "tests/integration/test_hydra_errors.py",
    "tests/integration/test_config_cli.py::test_a_text_file_given_as_a_checkpoint_is_one_line_and_exit_2",
    "tests/integration/test_runner_e2e.py::test_resume_matches_an_uninterrupted_run",
    "tests/integration/test_runner_e2e.py::test_a_resumed_run_announces_only_new_findings",
    "tests/integration/test_runner_e2e.py::test_bad_input_exits_2_with_one_line",
    "tests/integration/test_runner_e2e.py::test_unknown_group_option_lists_choices",
    "tests/unit/runner/test_autotrainer.py::test_a_resumed_run_keeps_its_actions_and_its_clipping",
    "tests/unit/runner/test_checkpoint_fuzz.py",
    "tests/unit/runner/test_checkpoint_cadence.py",
    "tests/unit/runner/test_config_matrix.py",
    "tests/unit/runner/test_validation.py",
    "tests/unit/runner/test_amp.py",
    "tests/unit/diag/test_sweep_malformed.py",
    "tests/unit/diag/test_analyze.py::test_generated_garbage_gives_a_report_or_a_clean_error",
]


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "held"


def table(xml: Path) -> str:
    """One row per test function, in the order they ran: cases, held, and any case that was not."""
    rows: dict[tuple[str, str], Counter[str]] = {}
    bad: dict[tuple[str, str], list[str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name, _, params = case.get("name", "").partition("[")
        key = (case.get("classname", "").rsplit(".", 1)[-1], name.removeprefix("test_"))
        result = outcome(case)
        rows.setdefault(key, Counter())[result] += 1
        if result != "held":
            bad.setdefault(key, []).append(f"{params.rstrip(']') or name}: {result}")
    lines = ["| test | file | cases | held | not held |", "|---|---|---:|---:|---|"]
    for (module, name), counts in rows.items():
        total = sum(counts.values())
        misses = "; ".join(bad.get((module, name), [])) or "-"
        lines.append(
            f"| {name.replace('_', ' ')} | {module} | {total} | {counts['held']} | {misses} |"
        )
    totals = Counter[str]()
    for counts in rows.values():
        totals.update(counts)
    lines.append(
        f"| **all** | | **{sum(totals.values())}** | **{totals['held']}** | "
        f"{totals['failed']} failed, {totals['skipped']} skipped |"
    )
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-n",
                "0",
                "-p",
                "no:cacheprovider",
                f"--junitxml={xml}",
                *TESTS,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        print(table(xml))
    return 0


if __name__ == "__main__":
    sys.exit(main())
