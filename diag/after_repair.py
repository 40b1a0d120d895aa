"""The run as the AutoTrainer left it: the series after its last online repair.

Every online repair (a rollback, an LR change, more regularisation) starts the live diagnosis afresh: what
came before describes a run that no longer exists, and its findings were the reason for the repair. The
analyzer reads a repaired run the same way, so its verdict and ``report.json``'s agree: no CRITICAL from
before a rollback, no recommendation to do what was already done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diag.readers import TRAIN_JSONL, VAL_JSONL, attempt_number
from diag.series import LAYER_FIELDS, RunSeries

# actions after which the live diagnosis went on with its series: giving up, asking for a restart (the
# attempt stops), testing with the best weights (at the fit's end)
NOT_A_FRESH_START = ("give_up", "restart", "restore_best")


def last_repair_step(actions: list[dict[str, Any]], attempt: int) -> int | None:
    """The step of the last online repair applied in ``attempt`` (None when there was none)."""
    steps = [
        a["step"]
        for a in actions
        if isinstance(a.get("step"), int)
        and a.get("attempt", 0) == attempt
        and a.get("action") not in NOT_A_FRESH_START
    ]
    return max(steps) if steps else None


def series_after(s: RunSeries, step: int) -> RunSeries:
    """The part of ``s`` recorded after ``step``: what the live diagnosis saw once it started afresh there.

    Per-step samples, epochs and per-layer samples after ``step`` are kept; the start-of-run facts (the
    first loss on the initial weights, the weight scale at initialisation) belong to the run before it.
    """

    def keep(steps: list[int], *lists: list[Any]) -> list[list[Any]]:
        idx = [i for i, st in enumerate(steps) if st > step]
        return [[lst[i] for i in idx if i < len(lst)] for lst in lists]

    out = RunSeries(num_classes=s.num_classes, planned_steps=s.planned_steps, sampling=s.sampling)
    out.step, out.loss, out.grad_norm, out.lr = keep(s.step, s.step, s.loss, s.grad_norm, s.lr)
    out.skipped_steps = [st for st in s.skipped_steps if st > step]
    dropped = sum(1 for st in s.epoch_step if st <= step)
    out.epoch_offset = s.epoch_offset + dropped
    (
        out.epoch_step,
        out.epoch_train_loss,
        out.epoch_train_acc,
        out.epoch_val_loss,
        out.epoch_val_acc,
        out.epoch_lr,
        out.epoch_weight_update,
    ) = keep(
        s.epoch_step,
        s.epoch_step,
        s.epoch_train_loss,
        s.epoch_train_acc,
        s.epoch_val_loss,
        s.epoch_val_acc,
        s.epoch_lr,
        s.epoch_weight_update,
    )
    (out.layer_step, out.update_ratio) = keep(s.layer_step, s.layer_step, s.update_ratio)
    for name in LAYER_FIELDS:
        setattr(
            out,
            name,
            {k: keep(s.layer_step, v)[0] for k, v in getattr(s, name).items()},
        )
    if s.first_nonfinite_step is not None and s.first_nonfinite_step > step:
        out.first_nonfinite_step, out.first_nonfinite_layer = (
            s.first_nonfinite_step,
            s.first_nonfinite_layer,
        )
    return out


def awaits_attempt(report: dict[str, Any] | None) -> bool:
    """Whether ``report`` is an attempt's that asked for a guided restart the run has not finished.

    A run killed during ``attempt-N/`` keeps the first attempt's ``report.json`` at its top, and it says
    completed; the run's own (naming its ``final_attempt``) is written only when the last attempt ends.
    """
    at = report.get("autotrainer") if isinstance(report, dict) else None
    if not isinstance(at, dict) or "final_attempt" in at:
        return False
    actions = at.get("actions")
    return isinstance(actions, list) and any(
        isinstance(a, dict) and a.get("action") == "restart" for a in actions
    )


def _has_data(attempt: Path) -> bool:
    """Whether an attempt directory holds anything the analyzer reads as a series (not only its config)."""
    files = [attempt / "report.json", attempt / TRAIN_JSONL, attempt / VAL_JSONL]
    files += list(attempt.glob("events.out.tfevents.*"))
    return any(f.is_file() and f.stat().st_size > 0 for f in files)


def newest_attempt_dir(run: Path) -> Path | None:
    """The highest-numbered ``attempt-N/`` of ``run`` with data: where an interrupted run had got to."""
    attempts = [(attempt_number(p), p) for p in run.glob("attempt-*") if p.is_dir()]
    for _, path in sorted(((n, p) for n, p in attempts if n is not None), reverse=True):
        if _has_data(path):
            return path
    return None


def final_attempt_dir(run: Path, report: dict[str, Any] | None) -> Path | None:
    """The directory of the attempt whose result is the run's (``attempt-N/``), when it is not ``run``.

    A finished run's report names it; a run interrupted during a restart names none (its top report is
    the first attempt's, stale): the newest attempt with data is where the run had got to.
    """
    at = report.get("autotrainer") if isinstance(report, dict) else None
    final = at.get("final_attempt") if isinstance(at, dict) else None
    if not isinstance(final, str):
        return newest_attempt_dir(run) if final is None else None
    if final in ("", "."):
        return None
    path = run / final
    return path if path.is_dir() and path.resolve() != run.resolve() else None


def attempt_note(run: Path, final: Path, report: dict[str, Any] | None) -> str:
    """What the analyzer says of the attempt :func:`final_attempt_dir` chose: the run's result, or an
    unfinished attempt of an interrupted run (its top report the first attempt's, not the run's)."""
    at = report.get("autotrainer") if isinstance(report, dict) else None
    if isinstance(at, dict) and at.get("final_attempt") not in (None, "", "."):
        return (
            f"the AutoTrainer's final attempt, {final.name}, is the run's result: reading {final} "
            f"(the first attempt's series are in {run})"
        )
    return (
        f"{final.name} is an unfinished attempt: the run was interrupted during it (its report.json, "
        f"the first attempt's, names no final attempt): reading {final}, where the run had got to (the "
        f"first attempt's series are in {run}); trainer.resume=auto with the same command continues it"
    )
