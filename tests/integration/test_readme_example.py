"""The README's hand-written-loop example runs as printed and diagnoses the fault it shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- example: hand-written loop -->"


def readme_block(marker: str) -> str:
    """The fenced python block that follows ``marker`` in README.md."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(marker) + 1
    while not lines[start].strip():
        start += 1
    if lines[start].strip() != "```python":
        raise AssertionError(f"no ```python block right after {marker!r} in README.md")
    end = lines.index("```", start + 1)
    return "\n".join(lines[start + 1 : end]) + "\n"


def test_hand_written_loop_example_diagnoses_the_explosion(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = readme_block(MARKER)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    with caplog.at_level(logging.INFO, logger="diag"):
        exec(compile(code, str(README), "exec"), namespace)

    issues = namespace["hook"].issues  # type: ignore[attr-defined]
    codes = {issue.code: issue.severity for issue in issues}
    assert codes.get("LOSS_EXPLOSION") == "critical", codes
    out = capsys.readouterr().out
    assert "LOSS_EXPLOSION critical - training loss reached" in out
    assert any(
        r.getMessage().startswith("diag: LOSS_EXPLOSION (critical) at step 10:")
        for r in caplog.records
    )
    # what the README says it prints is what it printed
    readme = README.read_text(encoding="utf-8")
    for line in out.splitlines():
        assert line in readme, line
    assert not list(tmp_path.iterdir()), "the example writes no files"
