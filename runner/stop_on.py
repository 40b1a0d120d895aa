"""Stop a run the live diagnosis finds sick beyond what more training repairs.

In a sweep a trial that blew up at step 10 still trained to its last epoch; this hook ends it as soon
as the diagnosis says so, records why, and the task returns the sweep penalty. It acts only on
findings at ``level`` or above, and only on codes training cannot recover from: a blow-up at once,
a run stuck (at chance, not learning, converging far too slowly) once ``grace`` of the run has
passed, and one with dead units or vanishing gradients then only if its validation accuracy is at
chance (such a run may still learn well). With
the AutoTrainer on, a code it may still treat stops the run only after it gave up on it; a code it
has no repair for (or one it treats only after another repair) stops the run as without it.
"""

from __future__ import annotations

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
        autotrainer: Repairer | None = None,
    ) -> None:
        if level is not None and level not in SEVERITY_RANK:
            raise ValueError(
                f"stop_on={level!r}: choose one of {', '.join(SEVERITY_RANK)}, or null"
            )
        self.level = level
        self.grace = float(grace)
        self.check_every = max(1, int(check_every))
        self.autotrainer = autotrainer  # the run's AutoTrainer (build_hooks passes it), or None
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
            if not (code in BLOWUP_CODES or (code in STUCK_CODES and share >= self.grace)):
                continue
            if code in INSIDE_CODES and not at_chance(state):
                continue  # dead or vanishing, but learning: not a run to stop
            if self.autotrainer is not None and self.autotrainer.may_treat(issue):
                continue  # the AutoTrainer gets its chance first
            self._stop(state, issue)
            return

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
