"""The end of a run: ``report.json``/``report.md`` from the fit's state, and the closing console lines."""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from diag.hooks import FitState
from diag.report import build_report, next_lr, write_report
from diag.run_files import write_run_text

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
    not_drawn: str | None = None,
) -> dict[str, Any]:
    """Build the report from the state the hooks filled; rank 0 writes it into ``run_dir``.
    ``not_drawn`` says why a sweep trial has no figures (``StopOnDiagnosis.beaten``)."""
    extra: dict[str, Any] = {"completed": completed}
    # a hook stopped the fit before max_epochs: the report says so and why, not only a console line
    extra["stopped"] = bool(state.stop_training)
    if state.stop_training:
        extra["stop_reason"] = state.stop_reason or "stopped by a hook"
    if interrupted:
        extra["interrupted"] = interrupted
    if lr_finder:
        extra["lr_finder"] = lr_finder
    if not_drawn:
        extra["not_drawn"] = not_drawn
    command = run_command(run_dir)
    if command:
        extra["command"] = command
    extra["tensorboard"] = tensorboard_command(run_dir)
    lr = lr_used(run_dir, state, lr_finder)
    if lr is not None:
        extra["lr"] = lr
    report = build_report(
        issues=state.issues or [],
        metrics=final_metrics(state, best_val_loss),
        actions=state.actions,
        diagnosed=state.issues is not None,
        **extra,
    )
    suggestion = next_lr(report)
    if suggestion:
        report["next_lr"] = suggestion
    if state.is_rank_zero:
        write_report(run_dir, report)
    return report


def _completed_report(run_dir: Path) -> dict[str, Any] | None:
    """The run's own ``report.json`` (no link) when it reads as a dict that says it completed, else None."""
    path = Path(run_dir) / "report.json"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("completed") is True else None


def finished_report(run_dir: Path, payload: dict[str, Any], trainer: Any) -> dict[str, Any] | None:
    """The run's ``report.json`` when it says the run completed at the checkpoint's step, else None.

    A run resumed after it finished has nothing to train: its report stays byte for byte as it is. A
    run killed after its last checkpoint but before its report is not finished: it tests and reports.
    """
    report = None if payload.get("mid_epoch") else _completed_report(run_dir)
    if report is None:
        return None
    metrics = report.get("metrics")
    if not isinstance(metrics, dict) or metrics.get("steps") != payload.get("step"):
        return None
    at_end = trainer.start_epoch >= trainer.max_epochs or bool(
        trainer.max_steps and payload["step"] >= trainer.max_steps
    )
    return report if at_end or report.get("stopped") else None


def finished_job(run_dir: Path) -> dict[str, Any] | None:
    """A sweep job's report when its ``report.json`` says it completed with this launch's overrides.

    A killed sweep relaunched into its own ``hydra.sweep.dir`` skips the jobs that finished (their
    files untouched) and runs the others. A job the AutoTrainer restarted gives its final attempt's
    command (the repair applied); one killed during a restart has not finished.
    """
    from diag.after_repair import awaits_attempt, final_attempt_dir

    report = _completed_report(run_dir)
    if report is None or report.get("status") == "failed" or awaits_attempt(report):
        return None
    made_by = final_attempt_dir(Path(run_dir), report) or run_dir
    if report.get("command") != run_command(made_by):
        return None
    return report


def objective_of(report: dict[str, Any], penalty: Any) -> float:
    """What a finished run returns to a sweeper: its best validation loss, else ``objective_penalty``."""
    metrics = report.get("metrics")
    best = metrics.get("best_val_loss") if isinstance(metrics, dict) else None
    if isinstance(best, (int, float)) and math.isfinite(best):
        return float(best)
    try:
        return float(penalty)
    except (TypeError, ValueError):
        return 1e3


def report_failed_job(run_dir: Path, error: str, penalty: Any) -> float:
    """A sweep job refused before training: ``report.json`` says failed and why; the sweeper gets
    ``objective_penalty`` (the sweep goes on to its next job)."""
    report = {
        "status": "failed",
        "completed": False,
        "error": error,
        "issues": [],
        "metrics": {},
        "command": run_command(run_dir),
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_run_text(Path(run_dir) / "report.json", json.dumps(report, indent=2) + "\n")
    return objective_of(report, penalty)


def _hydra_dir(run_dir: Path) -> Path | None:
    """The run's ``.hydra/``; an AutoTrainer attempt (``attempt-N/``) shares its parent's."""
    for d in (Path(run_dir), Path(run_dir).parent):
        if (d / ".hydra").is_dir():
            return d / ".hydra"
    return None


def _listed_overrides(hydra: Path) -> list[str] | None:
    """The overrides a ``.hydra/overrides.yaml`` lists (None without one)."""
    path = hydra / "overrides.yaml"
    if not path.exists():
        return None
    listed = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [str(o) for o in listed] if isinstance(listed, list) else None


def _override_key(override: str) -> str:
    """``model.hidden`` of ``model.hidden=[64]``, ``+model.hidden=[64]`` and ``~model.hidden``."""
    return override.lstrip("~+").split("=", 1)[0]


def with_overrides(given: list[str], changes: list[str]) -> list[str]:
    """The ``given`` overrides with ``changes`` applied: each change takes the place of the given override
    of its key (the user's order kept), or comes last. A key the user added (``+key``) or deleted
    (``~key``) is not in the primary config: its change is forced (``++key``)."""
    out = list(given)
    for change in changes:
        key = _override_key(change)
        same = [i for i, o in enumerate(out) if _override_key(o) == key]
        if not same:
            out.append(change)
            continue
        if out[same[0]].startswith(("+", "~")) and not change.startswith("+"):
            change = "++" + change
        out[same[0]] = change
        for i in reversed(same[1:]):
            del out[i]
    return out


def run_command(run_dir: Path) -> str | None:
    """The command that made the run, from Hydra's ``overrides.yaml`` (quoted the way a shell needs).

    An AutoTrainer attempt (``attempt-N/``) was made by the user's command (the run directory's) with
    the attempt's repairs (its own ``overrides.yaml``) applied: that command makes it again.
    """
    run_dir = Path(run_dir)
    hydra = _hydra_dir(run_dir)
    overrides = _listed_overrides(hydra) if hydra is not None else None
    if overrides is None:
        return None
    if hydra == run_dir / ".hydra" and re.fullmatch(r"attempt-\d+", run_dir.name):
        given = _listed_overrides(run_dir.parent / ".hydra")
        if given is not None:
            overrides = with_overrides(given, overrides)
    return " ".join(["python -m runner", *(shlex.quote(o) for o in overrides)])


def lr_used(
    run_dir: Path, state: FitState, lr_finder: dict[str, Any] | None = None
) -> float | None:
    """The LR the run started with: the config's, the range test's for ``lr=auto``, else the optimizer's."""
    if lr_finder and isinstance(lr_finder.get("suggested_lr"), (int, float)):
        return float(lr_finder["suggested_lr"])
    hydra = _hydra_dir(run_dir)
    if hydra is not None and (hydra / "config.yaml").exists():
        cfg = yaml.safe_load((hydra / "config.yaml").read_text(encoding="utf-8")) or {}
        lr = (cfg.get("optimizer") or {}).get("lr")
        if isinstance(lr, (int, float)):
            return float(lr)
    groups = getattr(state.optimizer, "param_groups", None)
    if groups:
        lr = groups[0].get("initial_lr", groups[0].get("lr"))
        return float(lr) if isinstance(lr, (int, float)) and math.isfinite(lr) else None
    return None


def compact(value: float) -> str:
    """``0.2717`` for ordinary losses, ``1.565e+23`` for a blown-up one."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


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
    if acc is None and report.get("stopped"):
        accuracy += " (stopped early: not tested)"
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
    best = m.get("best_val_loss")
    lines = [
        "",
        accuracy,
        f"best val loss {compact(best)}" if best is not None else "best val loss n/a",
        f"diagnosis     {diagnosis}",
        f"run directory {run_dir}",
        f"tensorboard   {tensorboard_command(run_dir)}",
        f"analyze       python -m diag analyze {run_dir}",
    ]
    if report.get("stopped"):
        lines.insert(4, f"stopped early {report.get('stop_reason', '')}")
    if report.get("next_lr"):
        lines.insert(4, f"next time     optimizer.lr={report['next_lr']['lr']:.3g}")
    log.info("\n".join(lines))


def tensorboard_command(run_dir: Path) -> str:
    """The command that shows this run in TensorBoard under its own name, and the page with it alone.

    TensorBoard names a run by its event files' folder relative to ``--logdir`` (``--logdir <run>`` shows
    ``.``, and ``--logdir_spec name:<run>`` shows ``name/.``), so the run's event files live in the run
    directory itself and ``--logdir`` is its parent: the run is ``<name>`` (its AutoTrainer restarts
    ``<name>/attempt-N``) beside the runs next to it, and the Time Series page's ``runFilter`` opens on it.
    """
    run = Path(run_dir)
    if re.fullmatch(r"attempt-\d+", run.name):  # an AutoTrainer attempt: the run it belongs to
        run = run.parent
    name = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", run.name)  # regex metacharacters only
    pattern = quote(f"^{name}($|/)", safe="^$|()/")
    return (
        f"tensorboard --logdir {shlex.quote(str(run.parent))}"
        f"   # this run: http://localhost:6006/?runFilter={pattern}"
    )
