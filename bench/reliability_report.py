"""Writes the README's "Reliability" list from the reliability tests themselves: name and outcome of each.

    python bench/reliability_report.py            # runs the reliability tests, prints markdown

Nothing here is hand-written: a claim appears only as the name of a test that just ran, with its result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_reliability.py",
    "tests/test_runner_e2e.py::test_resume_matches_an_uninterrupted_run",
    "tests/test_runner_e2e.py::test_a_resumed_run_announces_only_new_findings",
    "tests/test_autotrainer.py::test_a_resumed_run_keeps_its_actions_and_its_clipping",
    "tests/test_runner_e2e.py::test_bad_input_exits_2_with_one_line",
    "tests/test_runner_e2e.py::test_unknown_group_option_lists_choices",
    "tests/test_amp.py",
    "tests/test_analyze.py::test_generated_garbage_gives_a_report_or_a_clean_error",
]


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
        cases = ET.parse(xml).getroot().iter("testcase")
        lines = []
        for case in cases:
            outcome = (
                "failed"
                if case.find("failure") is not None or case.find("error") is not None
                else ("skipped" if case.find("skipped") is not None else "held")
            )
            name = case.get("name", "").removeprefix("test_")
            text, _, params = name.partition("[")
            label = text.replace("_", " ") + (f" [{params}" if params else "")
            lines.append(f"- {label}: **{outcome}**")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
