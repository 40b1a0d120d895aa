"""Writes the README's "Reliability" list from the reliability tests themselves: name and outcome of each.

    python bench/reliability_report.py            # runs tests/test_reliability.py, prints markdown

Nothing here is hand-written: a claim appears only as the name of a test that just ran, with its result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        str(ROOT / "tests" / "test_reliability.py")], cwd=ROOT, capture_output=True, text=True)
        cases = ET.parse(xml).getroot().iter("testcase")
        lines = []
        for case in cases:
            outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else (
                "skipped" if case.find("skipped") is not None else "held")
            name = case.get("name", "").removeprefix("test_")
            text, _, params = name.partition("[")
            label = text.replace("_", " ") + (f" [{params}" if params else "")
            lines.append(f"- {label}: **{outcome}**")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
