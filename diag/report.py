"""The final report of a run: ``report.json`` for tools and ``report.md`` for people.

Shape::

    {"status": "healthy|warning|critical",
     "issues": [{"code", "severity", "first_step", "evidence", "recommendations"}],
     "metrics": {...}, "autotrainer": {"actions": [...]},
     "completed", "stopped", "stop_reason"?, "not_drawn"?, "command"?, "tensorboard"?, "lr"?,
     "next_lr"?: {"lr", "reason"}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from diag.codes import SEVERITY_RANK
from diag.run_files import write_run_text


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


# Diagnoses that imply a different LR next time: code -> factor on the LR the run started with.
LR_FACTORS: dict[str, float] = {
    "LOSS_EXPLOSION": 0.1,
    "NONFINITE_GRADIENTS": 0.1,
    "LOSS_OSCILLATION": 0.3,
    "SLOW_CONVERGENCE": 10.0,
    "NO_LEARNING": 10.0,
}
# Early-stopping advice that a ``restore_best`` action has already followed.
_STOP_EARLY = "Stop early"
# Regularisation advice that a ``regularize`` action has already tried.
_REGULARIZE = "Add weight decay"


def next_lr(report: dict[str, Any]) -> dict[str, Any] | None:
    """The LR to start the next run with, when the diagnosis implies one; ``None`` otherwise.

    An AutoTrainer LR change that ended healthy is the answer (the LR the run finished with);
    else a blow-up or oscillation divides the starting LR and a stall multiplies it.
    """
    lr = report.get("lr")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        return None
    actions = [  # a restart starts the schedule again at the configured LR: not an LR change
        a
        for a in report.get("autotrainer", {}).get("actions", [])
        if a.get("action") not in ("give_up", "restart")
        and a.get("lr_after") not in (None, a.get("lr_before"))
    ]
    if actions and report.get("status") != "critical":
        last = actions[-1]
        first = actions[0]
        factor = float(last["lr_after"]) / float(first["lr_before"])
        return {
            "lr": lr * factor,
            "reason": f"the AutoTrainer's LR changes ({len(actions)}) left a factor of {factor:.3g}",
        }
    codes = [i.get("code") for i in report.get("issues", []) if i.get("code") in LR_FACTORS]
    if not codes:
        return None
    down = [c for c in codes if LR_FACTORS[c] < 1]
    chosen = min(down, key=LR_FACTORS.__getitem__) if down else codes[0]
    return {"lr": lr * LR_FACTORS[chosen], "reason": f"{chosen} at optimizer.lr={lr:.3g}"}


def render_markdown(report: dict[str, Any], title: str = "Run report") -> str:
    """A human report: status, how the run ended, metrics, each issue with its evidence and what to change."""
    lines = [f"# {title}", "", f"**Status: {report['status']}**", ""]
    if report.get("command"):
        lines += ["Command:", "", "```", str(report["command"]), "```", ""]
    if report.get("tensorboard"):
        lines += ["TensorBoard:", "", "```", str(report["tensorboard"]), "```", ""]
    if report.get("stopped"):
        lines += [f"**Stopped early:** {report.get('stop_reason') or 'a hook stopped the fit'}", ""]
    if report.get("not_drawn"):
        lines += [f"**Figures not drawn:** {report['not_drawn']}", ""]
    if report.get("interrupted"):
        lines += [f"**Interrupted** by {report['interrupted']}", ""]
    suggestion = report.get("next_lr")
    if suggestion:
        lines += [
            f"**Next time:** `optimizer.lr={suggestion['lr']:.3g}` ({suggestion['reason']})",
            "",
        ]
    metrics = report.get("metrics", {})
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    issues = report.get("issues", [])
    lines += ["## Diagnosis", ""]
    actions = report.get("autotrainer", {}).get("actions", [])
    restored = any(a.get("action") == "restore_best" for a in actions)
    regularized = next((a for a in actions if a.get("action") == "regularize"), None)
    if not issues:
        lines.append(
            "No issues found."
            if report["status"] != "not_diagnosed"
            else "Diagnostics were off for this run (`diag=off`)."
        )
        lines.append("")
    for issue in issues:
        lines += [
            f"### {issue['code']} ({issue.get('severity', 'warning')}, first seen at step "
            f"{issue.get('first_step')})",
            "",
            str(issue.get("evidence", "")),
            "",
        ]
        for rec in issue.get("recommendations", []):
            if restored and str(rec).startswith(_STOP_EARLY):
                rec = "Done: the AutoTrainer tested the best-validation weights (restore_best)"
            elif regularized and str(rec).startswith(_REGULARIZE):
                rec = (
                    f"Tried: the AutoTrainer's regularize at step {regularized.get('step')} "
                    f"({regularized.get('detail', '')}); {regularized.get('outcome', '')}"
                )
            lines.append(f"- {rec}")
        lines.append("")
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
        + (f"; effect: {action['effect']}" if action.get("effect") else "")
    )


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``report.json`` and ``report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    write_run_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_run_text(run_dir / "report.md", render_markdown(report))
