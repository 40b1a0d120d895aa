"""A trial of a sweep compared with the trials of the same sweep that already finished.

A trial that learns but stays weak (SGD at 0.0015 on digits: 0.82 against the grid's 0.99) trains its
whole budget under the per-trial rules of :mod:`runner.stop_on`: its own curve says nothing is wrong,
only the other trials show it is far behind. Optuna's ``MedianPruner`` (Google Vizier's median
stopping rule) compares a trial's best value so far with the median of the finished trials at the same
step; a median stops half the trials, healthy ones among them. This rule asks a narrower question of
one finished reference (the sweep's best so far by validation loss): can this trial still end within
``behind`` of the reference's final validation accuracy?

It places the trial on the reference's curve: the step where the reference first had the trial's best
validation loss (and, past the reference's first epoch, its best training loss: the further place
counts). A trial at step ``t`` that stands where the reference was at step ``p`` learns at ``p / t`` of
its pace; at ``pace`` times that rate (or its rate since its last validation, if higher) for the steps
it has left, it would end where the reference was at ``p_end``. When the reference's accuracy there is
still more than ``behind`` below its final one, the trial cannot end healthy, and it stops. The
reference's curve starts at step 0 at the chance loss and accuracy, so a trial not yet where the
reference was after one epoch is placed inside that first epoch by a straight line, which puts it
further on than a loss that falls fastest at first really was: the projection errs towards letting a
trial run.

The verdict needs a reference that trained the same number of steps to its end (not stopped, finite),
so in a sweep whose trials run one after another it is the later trials that are judged: a grid run
from its middle out (``hydra_plugins/runner_sweeper``) puts the likely best trials first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Curve:
    """A finished trial's validation curve: loss and accuracy at each validation's step."""

    name: str
    steps: list[int]
    losses: list[float]
    accs: list[float]
    train_losses: list[float] | None = None  # each epoch's mean training loss, at the same steps

    @property
    def max_steps(self) -> int:
        return self.steps[-1]

    @property
    def final_acc(self) -> float:
        return self.accs[-1]

    @property
    def best_loss(self) -> float:
        return min(self.losses)


def read_curve(run_dir: Path) -> Curve | None:
    """A finished, unstopped trial's curve from its run directory (``val_diagnostics.jsonl``), or None:
    a trial still running, failed, stopped early, or with a non-finite validation is no reference."""
    report_file = run_dir / "report.json"
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
        rows, train = (
            _rows(run_dir / "val_diagnostics.jsonl"),
            _rows(run_dir / "train_diagnostics.jsonl"),
        )
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not report.get("completed") or report.get("stopped"):
        return None
    try:
        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        accs = [float(r["accuracy"]) for r in rows]
    except (KeyError, TypeError, ValueError):
        return None
    finite = all(math.isfinite(v) for v in losses + accs)
    if len(rows) < 2 or not finite or steps != sorted(steps) or steps[0] <= 0:
        return None
    train_losses = [r.get("loss") for r in train]
    if [r.get("step") for r in train] != steps or not all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in train_losses
    ):
        train_losses = []  # no training curve at the validations' steps: judged by validation alone
    return Curve(
        name=run_dir.name,
        steps=steps,
        losses=losses,
        accs=accs,
        train_losses=[float(v) for v in train_losses] or None,  # type: ignore[arg-type]
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an epoch log (``diag.epoch_log``), one a line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        row for row in (json.loads(line) for line in lines if line.strip()) if isinstance(row, dict)
    ]


def finished_trials(sweep_dir: Path, own_dir: Path) -> list[Curve]:
    """The curves of the sweep's other job directories (``<sweep>/<job>``) that can be references."""
    own = own_dir.resolve()
    curves = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if job.resolve() == own or own.is_relative_to(job.resolve()):
            continue  # this trial (or the attempt-N folder of its AutoTrainer) is no reference for itself
        curve = read_curve(job)
        if curve is not None:
            curves.append(curve)
    return curves


def beaten_by(sweep_dir: Path, own_dir: Path, best_val_loss: float) -> dict[str, Any] | None:
    """A finished trial of the sweep that the sweep summary could pick as its best (``diag.sweep``: not
    diverged, not stopped, a finite best validation loss; and completed) with a best validation loss
    strictly below ``best_val_loss``, or None. Such a trial exists only if this one cannot be the sweep's
    best: the summary picks the lowest best validation loss among its candidates, and trials only finish.
    The lowest one is returned (the trial to name); a malformed or unreadable job is no evidence."""
    from diag.sweep import MalformedRun, read_run

    if not math.isfinite(best_val_loss):
        return None
    own = own_dir.resolve()
    found: list[tuple[float, str]] = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        if job.resolve() == own or own.is_relative_to(job.resolve()):
            continue
        try:
            run = read_run(job)
            report = json.loads((job / "report.json").read_text(encoding="utf-8"))
        except (MalformedRun, OSError, ValueError):
            continue
        loss = run.best_val_loss
        finished = isinstance(report, dict) and report.get("completed") is True
        # among the summary's candidates for the best (not diverged, not stopped) and finished
        candidate = finished and not run.diverged and not run.stopped
        if candidate and loss is not None and loss < best_val_loss:
            found.append((loss, job.name))
    if not found:
        return None
    loss, name = min(found)
    return {"trial": name, "best_val_loss": loss}


def _first_reach(steps: list[int], values: list[float], target: float) -> float | None:
    """The (interpolated) step where a running best first reached ``target`` (``values`` rising, as
    accuracy; negate a loss), or None if it never did."""
    best_prev, step_prev = values[0], steps[0]
    if best_prev >= target:
        return float(step_prev)
    for step, v in zip(steps[1:], values[1:]):
        best = max(best_prev, v)
        if best >= target:
            return step_prev + (target - best_prev) / (best - best_prev) * (step - step_prev)
        best_prev, step_prev = best, step
    return None


def _at(steps: list[int], values: list[float], step: float) -> float:
    """The running best (highest) of ``values`` at ``step``, interpolated between validations."""
    best_prev, step_prev = values[0], steps[0]
    for s, v in zip(steps[1:], values[1:]):
        best = max(best_prev, v)
        if step <= s:
            return best_prev + (best - best_prev) * (step - step_prev) / max(s - step_prev, 1)
        best_prev, step_prev = best, s
    return best_prev


def position(steps: list[int], losses: list[float], loss: float, start: float) -> float:
    """Where on a reference's loss curve (at ``steps``) a trial whose best loss is ``loss`` stands: the
    step where the reference's best loss first came down to it (from ``start``, the chance loss, at step
    0), its last step if it never did."""
    found = _first_reach([0, *steps], [-start, *(-v for v in losses)], -loss)
    return float(steps[-1]) if found is None else found


def _place(rows: list[dict[str, Any]], ref: Curve, chance_loss: float) -> float:
    """The further of the trial's places on the reference's curve by its best validation loss and, when
    both have one, by its best training loss past the reference's first epoch: a BatchNorm network's
    validation lags its training after big steps (running statistics; the CNN at 0.81 on digits read
    3.05 at its second validation, above chance, training at 1.81, and ended at 0.97), and the training
    loss shows how far it got. Not within the reference's first epoch: an epoch's mean training loss
    there holds the losses of its start (2.01 for the CNN at 0.23, validating at 0.42)."""
    here = position(ref.steps, ref.losses, min(float(h["val/loss"]) for h in rows), chance_loss)
    train = [float(h["train/loss"]) for h in rows if _finite(h.get("train/loss"))]
    if ref.train_losses and train and min(train) < ref.train_losses[0]:
        here = max(here, position(ref.steps, ref.train_losses, min(train), ref.train_losses[0]))
    return here


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def judge(
    history: list[dict[str, Any]],
    step: int,
    max_steps: int,
    ref: Curve,
    num_classes: int,
    pace: float = 2.0,
    behind: float = 0.02,
) -> dict[str, Any] | None:
    """The verdict on a trial at ``step`` (its epoch history: ``val/loss``, ``val/acc``, ``train/loss``,
    ``step``) against ``ref``: where it stands and where it would end, ``stop`` true when it cannot end
    within ``behind`` of the reference's final accuracy. None when the two cannot be compared: another
    budget, fewer than two finite validations, or a best validation loss not yet below the chance loss
    (a trial that has learned nothing has no place on the curve: the stuck and blow-up rules judge it)."""
    rows = [h for h in history if _finite(h.get("val/loss")) and _finite(h.get("val/acc"))]
    if ref.max_steps != max_steps or len(rows) < 2 or num_classes < 2 or step <= 0:
        return None
    chance_loss, chance_acc = math.log(num_classes), 1.0 / num_classes
    if min(float(h["val/loss"]) for h in rows) >= chance_loss:
        return None
    here, before = _place(rows, ref, chance_loss), _place(rows[:-1], ref, chance_loss)
    last_step, prev_step = int(rows[-1]["step"]), int(rows[-2]["step"])
    # its mean rate so far, or its rate since the last validation if that is higher (a curve speeding up)
    rate = max(here / max(last_step, 1), (here - before) / max(last_step - prev_step, 1))
    remaining = max(max_steps - step, 0)
    end = min(here + pace * rate * remaining, float(ref.max_steps))
    reached = _at([0, *ref.steps], [chance_acc, *ref.accs], end)
    bar = ref.final_acc - behind
    best_acc = max(float(h["val/acc"]) for h in rows)
    return {
        "trial": ref.name,
        "at_step": here,
        "rate": rate,
        "projected_step": end,
        "projected_val_acc": reached,
        "ref_final_val_acc": ref.final_acc,
        "ref_best_val_loss": ref.best_loss,
        "best_val_acc": best_acc,
        "bar": bar,
        # a trial whose accuracy is already at the bar is not behind, whatever its loss says (a high
        # LR's confident mistakes cost loss that a lower LR's answers do not)
        "stop": reached < bar and best_acc < bar,
    }


def reference(curves: list[Curve]) -> Curve | None:
    """The sweep's best finished trial so far: the lowest best validation loss (as ``diag.sweep`` picks)."""
    return min(curves, key=lambda c: c.best_loss, default=None)
