"""The end of a run: ``report.json``/``report.md`` from the fit's state, and the closing console lines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from diag.hooks import FitState
from diag.report import build_report, write_report

log = logging.getLogger(__name__)


def final_metrics(state: FitState, best_val_loss: float) -> dict[str, Any]:
    """The headline numbers that go into ``report.json``."""
    m = state.metrics
    return {
        "final_train_loss": m.get("train/loss"),
        "final_val_loss": m.get("val/loss"),
        "best_val_loss": best_val_loss,
        "final_val_acc": m.get("val/acc"),
        "test_loss": m.get("test/loss"),
        "test_acc": m.get("test/acc"),
        "epochs": len(state.history),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
    }


def report_run(
    state: FitState,
    run_dir: Path,
    best_val_loss: float,
    completed: bool = True,
    interrupted: str | None = None,
    lr_finder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the report from the state the hooks filled; rank 0 writes it into ``run_dir``."""
    extra: dict[str, Any] = {"completed": completed}
    if interrupted:
        extra["interrupted"] = interrupted
    if lr_finder:
        extra["lr_finder"] = lr_finder
    report = build_report(
        issues=state.issues or [],
        metrics=final_metrics(state, best_val_loss),
        actions=state.actions,
        diagnosed=state.issues is not None,
        **extra,
    )
    if state.is_rank_zero:
        write_report(run_dir, report)
    return report


def print_summary(
    report: dict[str, Any], run_dir: Path, restart: dict[str, Any] | None = None
) -> None:
    """The last lines a user sees: accuracy, status, where things are, how to look at them.

    An attempt the AutoTrainer stopped for a guided restart gets one line instead: the run goes on, and
    the block that reads like a final result comes once, from the attempt that ends it.
    """
    m = report["metrics"]
    acc = m.get("test_acc")
    accuracy = f"test accuracy {acc:.4f}" if acc is not None else "test accuracy n/a"
    diagnosis = report["status"] + (
        ": " + ", ".join(i["code"] for i in report["issues"]) if report["issues"] else ""
    )
    if restart:
        log.info(
            "attempt stopped for a guided restart (%s): %s, diagnosis %s; its files are in %s",
            restart["code"],
            accuracy,
            diagnosis,
            run_dir,
        )
        return
    lines = [
        "",
        accuracy,
        f"best val loss {m['best_val_loss']:.4f}"
        if m.get("best_val_loss") is not None
        else "best val loss n/a",
        f"diagnosis     {diagnosis}",
        f"run directory {run_dir}",
        f"tensorboard   tensorboard --logdir {run_dir / 'tb'}",
        f"analyze       python -m diag analyze {run_dir}",
    ]
    log.info("\n".join(lines))
