"""Stop a run the live diagnosis finds sick beyond what more training repairs.

In a sweep a trial that blew up at step 10 still trained to its last epoch; this hook ends it as soon
as the diagnosis says so, records why, and the task returns the sweep penalty. It acts only on
findings at ``level`` or above, and only on codes training cannot recover from: a clear blow-up at
once (a loss that went non-finite or reached ``clear_blowup`` times the chance-level loss), a run stuck
(at chance, not learning, converging far too slowly) once ``grace`` of the run has passed, and one
with dead units or vanishing gradients, or a smaller blow-up, then only if its validation accuracy is
at chance. A spike to 5x the chance loss in the first 10 steps is called an explosion by the diagnosis,
yet Adam at 0.066 and the CNN at 0.81 on digits trained on from one to 0.95-0.98 validation accuracy;
the training losses that never recovered reached 28x and more. With
the AutoTrainer on, a code it may still treat stops the run only after it gave up on it; a code it
has no repair for (or one it treats only after another repair) stops the run as without it.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from diag.codes import BLOWUP_CODES, SEVERITY_RANK
from diag.hooks import FitState, Hook

# still there after the grace period: more epochs of the same training will not fix them
STUCK_CODES = frozenset(
    {"STUCK_AT_CHANCE", "NO_LEARNING", "SLOW_CONVERGENCE", "DEAD_NEURONS", "VANISHING_GRADIENTS"}
)
# what a model's insides look like, not whether it learns: a run with dead units can still reach 95%
# (Adam at 0.066 on digits), so these stop a run only while its validation accuracy is at chance
INSIDE_CODES = frozenset({"DEAD_NEURONS", "VANISHING_GRADIENTS"})


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


class Repairer(Protocol):
    """What the stop rule asks the AutoTrainer (``runner.autotrainer.AutoTrainer.may_treat``)."""

    def may_treat(self, issue: dict[str, Any]) -> bool: ...


class StopOnDiagnosis(Hook):
    """Sets ``stop_training`` when a finding at ``level`` or above says the run cannot recover."""

    def __init__(
        self,
        level: str | None = None,
        grace: float = 0.25,
        check_every: int = 10,
        clear_blowup: float = 20.0,
        autotrainer: Repairer | None = None,
        diagnostics: Any = None,
    ) -> None:
        if level is not None and level not in SEVERITY_RANK:
            raise ValueError(
                f"stop_on={level!r}: choose one of {', '.join(SEVERITY_RANK)}, or null"
            )
        self.level = level
        self.grace = float(grace)
        self.check_every = max(1, int(check_every))
        self.clear_blowup = float(clear_blowup)
        self.autotrainer = autotrainer  # the run's AutoTrainer (build_hooks passes it), or None
        self.diagnostics = diagnostics  # the run's DiagnosticsHook: the losses its rules read
        self.stopped: dict[str, Any] | None = None  # what stopped the run: code, step, steps saved

    def on_train_batch_end(self, state: FitState) -> None:
        if self.level is not None and self.stopped is None and state.step % self.check_every == 0:
            self._check(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.level is not None and self.stopped is None:
            self._check(state)

    def _check(self, state: FitState) -> None:
        floor = SEVERITY_RANK[str(self.level)]
        share = state.step / max(state.max_steps, 1)
        for issue in state.issues or []:
            code = issue["code"]
            if SEVERITY_RANK.get(issue.get("severity", "info"), 0) < floor:
                continue
            late = share >= self.grace
            # a spike that may pass waits for the grace, like a dead layer, and stops only at chance
            if code in BLOWUP_CODES:
                stops = self._clear_blowup(state) or (late and at_chance(state))
            elif code in INSIDE_CODES:  # dead or vanishing, yet learning: not a run to stop
                stops = late and at_chance(state)
            else:
                stops = late and code in STUCK_CODES
            if not stops:
                continue
            if self.autotrainer is not None and self.autotrainer.may_treat(issue):
                continue  # the AutoTrainer gets its chance first
            self._stop(state, issue)
            return

    def _clear_blowup(self, state: FitState) -> bool:
        """A loss went non-finite or the training loss reached ``clear_blowup`` x the chance loss (no
        numbers: the diagnosis is trusted as it is)."""
        peak, chance = loss_peak(state, self.diagnostics), chance_loss(state, self.diagnostics)
        if peak is None or chance is None:
            return True
        return peak >= self.clear_blowup * chance

    def _stop(self, state: FitState, issue: dict[str, Any]) -> None:
        saved = max(state.max_steps - state.step, 0)
        self.stopped = {
            "code": issue["code"],
            "severity": issue.get("severity"),
            "step": state.step,
            "max_steps": state.max_steps,
            "saved_steps": saved,
        }
        state.stop_training = True
        state.stop_reason = (
            f"stop_on={self.level}: {issue['code']} ({issue.get('severity')}) at step {state.step}, "
            f"{issue.get('evidence', '')}; more training of this configuration will not fix it "
            f"({saved} of {state.max_steps} steps saved)"
        )
        state.events.write("stopped", **self.stopped, reason=state.stop_reason)
