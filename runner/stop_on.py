"""Stop a run the live diagnosis finds sick beyond what more training repairs.

In a sweep a trial that blew up at step 10 still trained to its last epoch; this hook ends it as soon
as the diagnosis says so, records why, and the task returns the sweep penalty. It acts only on
findings at ``level`` or above, and only on codes training cannot recover from: a clear blow-up at
once (a loss that went non-finite or reached ``clear_blowup`` times the chance-level loss), a run stuck
(at chance, not learning, converging far too slowly) once ``grace`` of the run has passed, or once
``early_grace`` has if its validation accuracy is at chance too, and one
with dead units or vanishing gradients, or a smaller blow-up, then only if its validation accuracy is
at chance. A spike to 5x the chance loss in the first 10 steps is called an explosion by the diagnosis,
yet Adam at 0.066 and the CNN at 0.81 on digits trained on from one to 0.95-0.98 validation accuracy;
the training losses that never recovered reached 28x and more. With
the AutoTrainer on, a code it may still treat stops the run only after it gave up on it; a code it
has no repair for (or one it treats only after another repair) stops the run as without it.

A run the diagnosis finds slow or stuck at a lower level (a ``SLOW_CONVERGENCE`` warning: learning, but
slowly) stops too once the early grace has passed if its own curve says it cannot get far from chance in the
budget it has left: its best validation loss, projected to the last step at ``projection_pace`` times
its improvement per step over the last ``projection_window`` validations, stays above ``need`` of the
chance-level loss (see :func:`project`). The pace is measured while the LR is not rising (a schedule that
decays it only slows the rest), so the projection is generous, and the verdict comes from the trial
alone: it holds in a grid, an Optuna study or a single run.

In a multirun (``sweep_dir`` given), a trial that learns but stays weak stops too once the early grace
has passed when the sweep's best finished trial shows it cannot end within ``behind`` of that trial's
final validation accuracy (``BEHIND_SWEEP``, ``behind_sweep=true``; :mod:`runner.behind_sweep`): the
per-trial rules cannot tell a trial heading for 0.82 from one heading for 0.99, the trials before it can.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from diag.codes import BLOWUP_CODES, SEVERITY_RANK
from diag.diagnosis import weights_still as still_ratio
from diag.hooks import FitState, Hook
from runner.behind_sweep import Curve, beaten_by, finished_trials, judge, reference

# still there after the grace period: more epochs of the same training will not fix them
STUCK_CODES = frozenset(
    {"STUCK_AT_CHANCE", "NO_LEARNING", "SLOW_CONVERGENCE", "DEAD_NEURONS", "VANISHING_GRADIENTS"}
)
# what a model's insides look like, not whether it learns: a run with dead units can still reach 95%
# (Adam at 0.066 on digits), so these stop a run only while its validation accuracy is at chance
INSIDE_CODES = frozenset({"DEAD_NEURONS", "VANISHING_GRADIENTS"})
# the share of its run after which a trial is no longer judged against the sweep (BEHIND_SWEEP)
BEHIND_UNTIL = 0.5


def weights_still(diagnostics: Any) -> bool:
    """The live diagnosis measured the weights barely moving (:func:`diag.diagnosis.weights_still`): a run
    at chance for that reason has an LR too low to move them, not labels or a model that cannot learn."""
    series = getattr(diagnostics, "series", None)
    return series is not None and still_ratio(series) is not None


def at_chance(state: FitState) -> bool:
    """The last validation accuracy is below 1.5x chance (the diagnosis's own STUCK_AT_CHANCE bound)."""
    acc, k = state.metrics.get("val/acc"), state.num_classes
    return acc is not None and bool(k) and float(acc) < 1.5 / float(k or 1)


def loss_peak(state: FitState, diagnostics: Any = None) -> float | None:
    """The highest training loss the run has shown so far (the interval means the diagnosis sampled,
    else the state's current one), ``inf`` once any loss, validation's included, went non-finite;
    None when there is no number at all. A finite validation spike is left out: a BatchNorm CNN's
    first validation after a big step read 31x the chance loss (its running statistics lag), and
    the run trained on to 0.95."""
    series = getattr(diagnostics, "series", None)
    if series is not None:
        train, val = list(series.loss), list(series.epoch_val_loss)
    else:
        train = [] if state.loss is None else [float(state.loss.detach().float().max())]
        val = [float(state.metrics["val/loss"])] if "val/loss" in state.metrics else []
    if any(not math.isfinite(v) for v in [*train, *val]):
        return math.inf
    return max(train) if train else None


def chance_loss(state: FitState, diagnostics: Any = None) -> float | None:
    """The cross-entropy of a guess, ``ln(classes)`` (or the run's first loss if that was higher)."""
    series = getattr(diagnostics, "series", None)
    first = getattr(series, "initial_loss", None)
    k = state.num_classes
    levels = [v for v in (math.log(k) if k and k > 1 else None, first) if v and math.isfinite(v)]
    return max(levels) if levels else None


def project(
    history: list[dict[str, Any]], step: int, max_steps: int, window: int = 3, pace: float = 2.0
) -> dict[str, float] | None:
    """Where the validation loss would be at ``max_steps`` if it kept falling at ``pace`` times its
    rate over the last ``window`` validations (per step, from the epoch history's ``val/loss`` and
    ``step``), starting from its best so far. None without three finite validations, or while the LR
    rose between the last two (a warm-up: the pace there says nothing about the rest)."""
    rows = [
        h
        for h in history
        if isinstance(h.get("val/loss"), (int, float)) and math.isfinite(float(h["val/loss"]))
    ]
    if len(rows) < 3 or len(rows) != sum("val/loss" in h for h in history):
        return None  # too few, or a non-finite validation (a blow-up is the other rules' business)
    if "lr" in rows[-1] and "lr" in rows[-2] and float(rows[-1]["lr"]) > float(rows[-2]["lr"]):
        return None
    w = min(window, len(rows) - 1)
    first, last = rows[-1 - w], rows[-1]
    steps = max(int(last["step"]) - int(first["step"]), 1)
    rate = max(float(first["val/loss"]) - float(last["val/loss"]), 0.0) / steps
    best = min(float(h["val/loss"]) for h in rows)
    remaining = max(max_steps - step, 0)
    return {
        "best_val_loss": best,
        "rate_per_step": rate,
        "remaining_steps": float(remaining),
        "projected_val_loss": best - pace * rate * remaining,
    }


class Repairer(Protocol):
    """What the stop rule asks the AutoTrainer (``runner.autotrainer.AutoTrainer.may_treat``)."""

    def may_treat(self, issue: dict[str, Any]) -> bool: ...


class StopOnDiagnosis(Hook):
    """Sets ``stop_training`` when a finding at ``level`` or above says the run cannot recover."""

    def __init__(
        self,
        level: str | None = None,
        grace: float = 0.25,
        early_grace: float = 0.1,
        check_every: int = 10,
        clear_blowup: float = 20.0,
        need: float = 0.75,
        projection_window: int = 3,
        projection_pace: float = 2.0,
        plot_stopped: bool = False,
        plot_beaten: bool = False,
        behind_sweep: bool = True,
        behind: float = 0.02,
        behind_pace: float = 2.0,
        autotrainer: Repairer | None = None,
        diagnostics: Any = None,
        sweep_dir: str | Path | None = None,
    ) -> None:
        if level is not None and level not in SEVERITY_RANK:
            raise ValueError(
                f"stop_on={level!r}: choose one of {', '.join(SEVERITY_RANK)}, or null"
            )
        self.level = level
        self.grace = float(grace)
        # where the evidence is unambiguous (a stuck code with the validation accuracy at chance; the
        # projection, which judges the trial's own curve) a shorter wait: never longer than the grace
        self.early_grace = min(float(early_grace), self.grace)
        self.check_every = max(1, int(check_every))
        self.clear_blowup = float(clear_blowup)
        self.need = float(need)  # of the chance loss: a projected end above it is "near chance"
        self.projection_window = max(1, int(projection_window))
        self.projection_pace = float(projection_pace)
        self.plot_stopped = bool(plot_stopped)  # draw summary.png for a trial this hook stopped
        # draw the figures of a trial a finished trial of the sweep already beat (see `beaten`)
        self.plot_beaten = bool(plot_beaten)
        # compare with the sweep's finished trials (a multirun)
        self.behind_sweep = bool(behind_sweep)
        # of val accuracy: a trial that cannot end this near the best stops
        self.behind = float(behind)
        # the projection's generosity: this x the trial's pace
        self.behind_pace = float(behind_pace)
        self.sweep_dir = Path(sweep_dir) if sweep_dir else None  # the multirun's hydra.sweep.dir
        self.references: list[Curve] = []  # the sweep's trials finished when this one started
        self.autotrainer = autotrainer  # the run's AutoTrainer (build_hooks passes it), or None
        self.diagnostics = diagnostics  # the run's DiagnosticsHook: the losses its rules read
        if level is not None and diagnostics is not None:  # it stops on each epoch end's findings
            diagnostics.every_epoch = True
        self.stopped: dict[str, Any] | None = None  # what stopped the run: code, step, steps saved

    def _armed(self, state: FitState) -> bool:
        """A level is set, nothing stopped the run yet, and there are steps left to save (a run that
        trained its whole budget has its result: stopping it at the end would only cost it its test)."""
        return self.level is not None and self.stopped is None and state.step < state.max_steps

    def on_fit_start(self, state: FitState) -> None:
        """Read the curves of the sweep's finished trials once: in a sweep run one trial after another
        (the basic launcher) they are all there is to compare with."""
        on = self.level is not None and self.behind_sweep and state.run_dir is not None
        if on and self.sweep_dir is not None and self.sweep_dir.is_dir():
            self.references = finished_trials(self.sweep_dir, Path(str(state.run_dir)))

    def beaten(self, run_dir: Path, best_val_loss: float) -> dict[str, Any] | None:
        """At a multirun trial's end (not stopped): the sweep's finished trial that already has a lower
        best validation loss, so this one cannot be the sweep's best; its figures are then not drawn
        (``summary.png`` here, ``confusion_matrix.png`` and the input grid by the caller). On digits the
        two figures cost ~1 s of CPU a trial, as much as 8-10 MLP epochs, and in a grid run from its
        middle out most trials that train to their end are beaten by one that finished before them.
        None (figures drawn) when stop_on is off, outside a multirun, with ``plot_beaten`` or when no
        finished trial is better: the sweep's best always has every figure."""
        if self.level is None or self.plot_beaten or self.sweep_dir is None:
            return None
        if not self.sweep_dir.is_dir():
            return None
        better = beaten_by(self.sweep_dir, Path(run_dir), best_val_loss)
        if better is not None and getattr(self.diagnostics, "summary_png", False):
            self.diagnostics.summary_png = False
        return better

    def on_train_batch_end(self, state: FitState) -> None:
        if self._armed(state) and state.step % self.check_every == 0:
            self._check(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self._armed(state):
            self._check(state)
        if self._armed(state):
            self._check_projection(state)
        if self._armed(state) and self.references:
            self._check_sweep(state)

    def _check_sweep(self, state: FitState) -> None:
        """Past the early grace and before half the run, behind the sweep's best finished trial by more
        than it can make up. Not later: a late verdict saves little, and it is where the projection is
        weakest (the end of a decaying schedule brings gains its pace does not foresee)."""
        share = state.step / max(state.max_steps, 1)
        if share < self.early_grace or share > BEHIND_UNTIL:
            return
        # the best finished trial of this trial's budget (a sweep over max_epochs has several)
        ref = reference([c for c in self.references if c.max_steps == state.max_steps])
        if ref is None or not state.num_classes:
            return
        verdict = judge(
            state.history,
            state.step,
            state.max_steps,
            ref,
            int(state.num_classes),
            self.behind_pace,
            self.behind,
        )
        if verdict is None or not verdict["stop"]:
            return
        issue = {
            "code": "BEHIND_SWEEP",
            "evidence": (
                f"its best val loss is where trial #{ref.name} (best val loss "
                f"{ref.best_loss:.3g}, final val acc {ref.final_acc:.3f}) was at step "
                f"{verdict['at_step']:.0f}"
            ),
        }
        self._stop(
            state,
            issue,
            compared_with=verdict,
            why=(
                f"at {self.behind_pace:g}x its pace for the {state.max_steps - state.step} steps left "
                f"it would get where #{ref.name} was at step {verdict['projected_step']:.0f}, val acc "
                f"{verdict['projected_val_acc']:.3f}: more than {self.behind:g} below #{ref.name}'s "
                f"final {ref.final_acc:.3f}"
            ),
        )

    def _check_projection(self, state: FitState) -> None:
        """A slow or stuck finding at any level, past the early grace, whose projected end is near chance."""
        if state.step / max(state.max_steps, 1) < self.early_grace:
            return
        warning = SEVERITY_RANK["warning"]
        slow = [
            i
            for i in state.issues or []
            if i["code"] in STUCK_CODES - INSIDE_CODES
            and SEVERITY_RANK.get(i.get("severity", "info"), 0) >= warning
        ]
        k = state.num_classes
        if not slow or not k or k < 2:
            return
        chance = math.log(k)  # a guess's loss: where a run that learns nothing stays
        seen = project(
            state.history,
            state.step,
            state.max_steps,
            self.projection_window,
            self.projection_pace,
        )
        if seen is None or seen["projected_val_loss"] < self.need * chance:
            return
        issue = slow[0]
        if self._autotrainer_may_treat(issue):
            return  # the AutoTrainer gets its chance first
        projection = {**seen, "chance_loss": chance, "need": self.need}
        self._stop(
            state,
            issue,
            projection=projection,
            why=(
                f"best val loss {seen['best_val_loss']:.3g} falling {seen['rate_per_step']:.2g} per "
                f"step; at {self.projection_pace:g}x that pace for the {int(seen['remaining_steps'])} "
                f"steps left it would end at {seen['projected_val_loss']:.3g}, above "
                f"{self.need:g} x the chance loss {chance:.3g}: it cannot get far from chance in "
                "its budget"
            ),
        )

    def _check(self, state: FitState) -> None:
        floor = SEVERITY_RANK[str(self.level)]
        share = state.step / max(state.max_steps, 1)
        for issue in state.issues or []:
            code = issue["code"]
            if SEVERITY_RANK.get(issue.get("severity", "info"), 0) < floor:
                continue
            late = share >= self.grace
            # a run stuck at chance by its validation accuracy too: no need to wait as long
            early = share >= self.early_grace and code in STUCK_CODES and at_chance(state)
            # a spike that may pass waits for the grace, like a dead layer, and stops only at chance
            if code in BLOWUP_CODES:
                stops = self._clear_blowup(state) or (late and at_chance(state))
            elif code in INSIDE_CODES:  # dead or vanishing, yet learning: not a run to stop
                stops = late and at_chance(state)
            else:
                stops = (late and code in STUCK_CODES) or early
            if not stops:
                continue
            if self._autotrainer_may_treat(issue):
                continue  # the AutoTrainer gets its chance first
            self._stop(state, issue)
            return

    def _autotrainer_may_treat(self, issue: dict[str, Any]) -> bool:
        """The AutoTrainer may still act on ``issue``, or, for a run stuck because its weights barely
        move, on the too-low LR behind it: it raises the LR once the diagnosis calls the run
        SLOW_CONVERGENCE, a raise it never got to make when stop_on ended the run as STUCK_AT_CHANCE."""
        if self.autotrainer is None:
            return False
        if self.autotrainer.may_treat(issue):
            return True
        return (
            issue["code"] in STUCK_CODES
            and weights_still(self.diagnostics)
            and self.autotrainer.may_treat({**issue, "code": "SLOW_CONVERGENCE"})
        )

    def _clear_blowup(self, state: FitState) -> bool:
        """A loss went non-finite or the training loss reached ``clear_blowup`` x the chance loss (no
        numbers: the diagnosis is trusted as it is)."""
        peak, chance = loss_peak(state, self.diagnostics), chance_loss(state, self.diagnostics)
        if peak is None or chance is None:
            return True
        return peak >= self.clear_blowup * chance

    def _stop(
        self,
        state: FitState,
        issue: dict[str, Any],
        projection: dict[str, float] | None = None,
        why: str = "",
        compared_with: dict[str, Any] | None = None,
    ) -> None:
        saved = max(state.max_steps - state.step, 0)
        # a stopped trial's summary.png (~0.4 s of CPU on digits, timed in a sweep) cost more than the
        # 1-6 epochs it trained; its curves are in TensorBoard and its evidence in the reason
        unplotted = not self.plot_stopped and bool(getattr(self.diagnostics, "summary_png", False))
        if unplotted:
            self.diagnostics.summary_png = False
        self.stopped = {
            "code": issue["code"],
            "severity": issue.get("severity"),
            "step": state.step,
            "max_steps": state.max_steps,
            "saved_steps": saved,
        }
        if projection is not None:
            self.stopped["projection"] = projection
        if compared_with is not None:  # the sweep's finished trial it was judged against
            self.stopped["compared_with"] = compared_with
        state.stop_training = True
        state.stop_reason = (
            f"stop_on={self.level}: {issue['code']}"
            + (f" ({issue.get('severity')})" if compared_with is None else "")
            + f" at step {state.step}, "
            f"{issue.get('evidence', '')}; {why + '; ' if why else ''}more training of this "
            f"configuration will not fix it ({saved} of {state.max_steps} steps saved)"
            + (
                "; no summary.png for the stopped trial (its curves are in TensorBoard; "
                "callbacks.stop_on.plot_stopped=true draws it)"
                if unplotted
                else ""
            )
        )
        state.events.write("stopped", **self.stopped, reason=state.stop_reason)
