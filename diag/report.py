"""The final report of a run: ``report.json`` for tools and ``report.md`` for people.

Shape::

    {"status": "healthy|warning|critical",
     "issues": [{"code", "severity", "first_step", "evidence", "recommendations"}],
     "metrics": {...}, "autotrainer": {"actions": [...]}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from diag.codes import SEVERITY_RANK


def status_of(issues: list[dict[str, Any]]) -> str:
    """``critical`` if any issue is, else ``warning`` if any warning, else ``healthy``."""
    worst = max((SEVERITY_RANK.get(i.get("severity", "info"), 0) for i in issues), default=0)
    return {0: "healthy", 1: "warning", 2: "critical"}[worst]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def build_report(
    issues: list[dict[str, Any]],
    metrics: dict[str, Any],
    actions: list[dict[str, Any]] | None = None,
    diagnosed: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the report dict; ``diagnosed=False`` (diagnostics off) gives status ``not_diagnosed``."""
    report = {
        "status": status_of(issues) if diagnosed else "not_diagnosed",
        "issues": issues,
        "metrics": metrics,
        "autotrainer": {"actions": actions or []},
    }
    report.update(extra)
    return _clean(report)


def render_markdown(report: dict[str, Any], title: str = "Run report") -> str:
    """A human report: status, metrics, each issue with its evidence and what to change."""
    lines = [f"# {title}", "", f"**Status: {report['status']}**", ""]
    metrics = report.get("metrics", {})
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    issues = report.get("issues", [])
    lines += ["## Diagnosis", ""]
    if not issues:
        lines.append(
            "No issues found."
            if report["status"] != "not_diagnosed"
            else "Diagnostics were off for this run (`diag=off`)."
        )
    for issue in issues:
        lines += [
            f"### {issue['code']} ({issue.get('severity', 'warning')}, first seen at step "
            f"{issue.get('first_step')})",
            "",
            str(issue.get("evidence", "")),
            "",
        ]
        for rec in issue.get("recommendations", []):
            lines.append(f"- {rec}")
        lines.append("")
    actions = report.get("autotrainer", {}).get("actions", [])
    if actions:
        lines += ["## AutoTrainer", ""]
        lines += [f"- {action_line(a)}" for a in actions]
        lines.append("")
    return "\n".join(lines)


def action_line(action: dict[str, Any]) -> str:
    """One AutoTrainer action as people read it (report.md, ``diag analyze``): step, code, what, how it went."""
    return (
        f"step {action.get('step')}: {action.get('code')} → {action.get('action')} "
        f"({action.get('detail', '')}) — {action.get('outcome', '')}"
    )


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``report.json`` and ``report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
