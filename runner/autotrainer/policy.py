"""The AutoTrainer hook: reads the live diagnosis, picks at most one repair per check, records it.

It is placed after the :class:`~diag.live.DiagnosticsHook` whose diagnosis (``state.issues``) it
reads every ``check_every`` steps and at each epoch end. Cooldowns, per-code and total limits, a
restart count and a time budget bound it; when it gives up it says so and why. Under data-parallel
training rank 0 alone decides (its inputs, such as activation statistics of its own batches or
wall time, may differ on other ranks) and every rank follows it through
:func:`runner.distributed.follow_rank_zero`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import replace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diag.codes import SEVERITY_RANK
from diag.hooks import FitState, Hook
from diag.live import DiagnosticsHook
from runner import distributed
from runner.autotrainer import (
    explosion_evidence,
    lr_evidence,
    outcomes,
    overfit_evidence,
    setting_causes,
)
from runner.autotrainer.actions import ACTIONS, ONLINE_ACTIONS
from runner.autotrainer.attempts import Session
from runner.autotrainer.judgement import judge
from runner.autotrainer.lr_surgery import scale_lr
from runner.autotrainer.restarts import carried_over, config_fix, refusal
from runner.autotrainer.setting_causes import SettingCause
from runner.autotrainer.settings import RestartRule, Settings
from runner.autotrainer.snapshots import BestWeights, Snapshot, set_dropout
from runner.autotrainer.state import PolicyState
from runner.errors import UserError

log = logging.getLogger("runner.autotrainer")


class AutoTrainer(Hook):
    """Reads ``state.issues`` and repairs the run online or asks for a guided restart.

    ``settings`` are the keys of ``runner/conf/autotrainer/default.yaml`` (see :class:`Settings`);
    ``session`` is shared with the attempt loop (a fresh one for a hand-written loop), ``cfg``
    is the run's config (a restart changes it; without it restarts are refused), and
    ``diagnostics`` is the hook whose diagnosis this one reads.
    """

    def __init__(
        self,
        *,
        session: Session | None = None,
        cfg: DictConfig | None = None,
        diagnostics: DiagnosticsHook | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings.from_config(settings)
        self.session = session if session is not None else Session()
        self.cfg = cfg
        # the recipe's LR (a number; None for lr=auto or no config): the update ratios are read at it
        recipe_lr = OmegaConf.select(cfg, "optimizer.lr") if cfg is not None else None
        self._recipe_lr = float(recipe_lr) if isinstance(recipe_lr, (int, float)) else None
        self.diagnostics = diagnostics
        if diagnostics is not None:
            diagnostics.every_epoch = True  # it acts on each epoch end's findings: that epoch's
        self.carried = PolicyState(actions=self.session.actions, gave_up=self.session.gave_up)
        self.snapshots: list[Snapshot] = []
        self.initial: Snapshot | None = None
        self.keep_best = bool(self.settings.restore_best.codes) or any(
            rule.action == "regularize" and rule.rollback for rule in self.settings.online.values()
        )
        self._restored: dict[str, Any] | None = (
            None  # a checkpoint's state_dict, applied at fit start
        )
        self._t0 = time.perf_counter()
        self._before: dict[str, Any] | None = (
            None  # loss and accuracy just before the action being taken
        )
        self._loop_info: tuple[Any, int] = (None, 0)  # the loop and its steps per epoch (may_treat)
        self._val_accs: list[float] = []  # this attempt's validation accuracies
        # the number of classes (FitState.num_classes): the chance level of those accuracies
        self._num_classes: int | None = None
        self._val_examples = 0  # of the last validation (the binomial noise of its accuracy)
        self._ratios = lr_evidence.NewSamples()  # the update ratios not read yet
        self._progress: tuple[int, int] = (0, 0)  # the step and max_steps of the last check
        # the held explosion last said so (said once)
        self._held_note: tuple[Any, str] | None = None

    @property
    def actions(self) -> list[dict[str, Any]]:
        return self.session.actions

    @property
    def restart_request(self) -> dict[str, Any] | None:
        return self.session.restart_request

    def _counted(self) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["action"] != "give_up"]

    @staticmethod
    def optimizer(state: FitState) -> torch.optim.Optimizer:
        if state.optimizer is None:
            raise RuntimeError("the AutoTrainer acts on the optimizer: FitState.optimizer is None")
        return state.optimizer

    # -- events --------------------------------------------------------------------------
    def on_fit_start(self, state: FitState) -> None:
        if self.diagnostics is None:
            raise UserError(
                "autotrainer=default needs the live diagnosis: use diag=default or diag=full"
            )
        self._t0 = time.perf_counter()
        state.actions = self.actions
        self.carried.lr_peak = state.current_lr
        self.carried.best = None
        # after a checkpoint: its repairs first, then the rollback baseline includes them
        self._resume(state)
        # only the deciding rank ever rolls back (a rollback reaches the others through follow_rank_zero)
        self.snapshots = [Snapshot.take(state)] if distributed.is_rank_zero() else []
        # the weights the run started from: after an explosion every later snapshot may be damaged
        self.initial = self.snapshots[0] if self.snapshots else None
        self._loop_info = (state.loop, state.steps_per_epoch)
        self._val_accs = []
        if (
            self.settings.setting_causes.at_setup
            and state.step == 0
            and self.restart_request is None
        ):
            self._check(state, setup=True)

    def on_train_batch_end(self, state: FitState) -> None:
        if self.restart_request is not None:
            return
        if state.step % self.settings.check_every == 0:
            self._measure_train(state)
            self._check(state)
        if (
            state.step % self.settings.snapshot_every == 0
            and self.restart_request is None
            and distributed.is_rank_zero()
        ):
            self._maybe_snapshot(state)

    def on_validation_end(self, state: FitState) -> None:
        """Keep the weights of the best validation loss (a CPU copy, only when it improves); measure the
        actions taken since the last validation; keep the run's best validation accuracy."""
        acc = state.metrics.get("val/acc")
        self._num_classes = state.num_classes
        self._val_examples = state.val_examples
        if acc is not None and math.isfinite(acc):
            self._val_accs.append(float(acc))
            best = self.session.best_val_acc
            self.session.best_val_acc = acc if best is None else max(best, acc)
        self._measure_val(state)
        loss = state.metrics.get("val/loss")
        if (
            not self.keep_best
            or not distributed.is_rank_zero()
            or loss is None
            or not math.isfinite(loss)
        ):
            return
        if self.carried.best is None or loss < self.carried.best.val_loss:
            self.carried.best = BestWeights.take(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.restart_request is None:
            self._check(state, epoch_end=True)

    def on_fit_end(self, state: FitState) -> None:
        """Say how each action of this attempt turned out, from the final diagnosis and test accuracy."""
        from diag.report import status_of

        attempt = self.session.attempt
        final = {i["code"] for i in state.issues or []}
        acc = state.metrics.get("test/acc")
        tail = (
            f"test_acc {acc:.3f}" if acc is not None and math.isfinite(acc) else "no test accuracy"
        )
        verdict = judge(
            state.issues or [],
            state.metrics.get("val/acc"),
            self.session.best_val_acc,
            state.num_classes,
            self.settings.healthy,
        )
        self.session.judgement = verdict
        self._measure_end(state)
        for a in self.actions:
            if a.get("attempt") == attempt and a["action"] == "restore_best":
                a["outcome"] = f"tested with the epoch-{a['best_epoch']} weights ({tail})"
                continue
            if (
                a.get("attempt") == attempt
                and a["action"] in ONLINE_ACTIONS
                and a["outcome"] == "applied"
            ):
                later = [
                    b
                    for b in self.actions
                    if b is not a
                    and b["code"] == a["code"]
                    and b["step"] > a["step"]
                    and b.get("attempt") == a["attempt"]
                ]
                again = "gave up" if later and later[0]["action"] == "give_up" else "acted again"
                a["outcome"] = (
                    f"recurred: {again} at step {later[0]['step']}"
                    if later
                    else f"{a['code']} still present at the end ({tail})"
                    if a["code"] in final
                    else f"resolved: {a['code']} not present at the end ({tail})"
                )
            if a["action"] == "restart" and a.get("next_attempt") == attempt:
                a["outcome"] = (
                    f"attempt-{attempt} ended {status_of(state.issues or [])}"
                    + (f" with {', '.join(sorted(final))}" if final else "")
                    + f", {tail}; {verdict['why']}"
                )
                if a.get("measured") and a["measured"]["verdict"] is None:
                    a["measured"]["after"] = self._now(state, since=None)
                    self._report_effect(a)
        if self.restart_request is None:
            return
        for a in self.actions:
            if a["action"] == "restart" and a.get("attempt") == attempt:
                a["outcome"] = f"restarting as attempt-{attempt + 1}"

    # -- measuring each action's effect ----------------------------------------------------------
    def _now(self, state: FitState, since: int | None) -> dict[str, Any]:
        """Training loss (median of the last three samples, only those after step ``since``) and the last
        validation, as :mod:`outcomes` compares them."""
        series = self.diagnostics.series if self.diagnostics is not None else None
        loss = outcomes.recent_loss(series.step, series.loss, since) if series else None
        return outcomes.before(state.metrics, loss)

    def _pending(self) -> list[dict[str, Any]]:
        """This attempt's online actions whose effect is not measured yet (a restart waits for the next attempt)."""
        if not distributed.is_rank_zero():
            return []
        return [
            a
            for a in self.actions
            if a.get("attempt") == self.session.attempt
            and a["action"] != "restart"
            and a.get("measured")
            and a["measured"]["verdict"] is None
        ]

    def _report_effect(self, action: dict[str, Any], state: FitState | None = None) -> None:
        effect = outcomes.finish(action)
        log.warning(
            "autotrainer: %s(%s)@%d, measured after it: %s",
            action["action"],
            action["code"],
            action["step"],
            effect,
        )
        if state is not None:
            state.events.write(
                "autotrainer_effect",
                step=state.step,
                action_step=action["step"],
                code=action["code"],
                action=action["action"],
                **action["measured"],
            )

    def _measure_train(self, state: FitState) -> None:
        for a in self._pending():
            after = a["measured"]["after"]
            if "train_loss" not in after and state.step >= a["measured"]["by_step"]:
                after["train_loss"] = self._now(state, since=a["step"])["train_loss"]
                if "val_acc" in after:
                    self._report_effect(a, state)

    def _measure_val(self, state: FitState) -> None:
        for a in self._pending():
            after = a["measured"]["after"]
            if "val_acc" not in after and state.step > a["step"]:
                now = self._now(state, since=a["step"])
                after["val_acc"], after["val_loss"] = now["val_acc"], now["val_loss"]
                if "train_loss" in after:
                    self._report_effect(a, state)

    def _measure_end(self, state: FitState) -> None:
        """At the fit's end: what there is after each action still open (a short interval, or none)."""
        for a in self._pending():
            after = a["measured"]["after"]
            after.setdefault("train_loss", self._now(state, since=a["step"])["train_loss"])
            self._report_effect(a, state)

    # -- the carried state: checkpoint, resume, DDP --------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The actions so far and the repairs that live outside the optimizer's and model's state dicts
        (clipping is the loop's, dropout a module attribute), so a resumed run keeps them."""
        return self.carried.as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Held until :meth:`on_fit_start`: the loop is known only then."""
        self._restored = dict(state)

    def _resume(self, state: FitState) -> None:
        """Carry a checkpoint's actions and repairs into this fit, and say which repairs still hold."""
        data, self._restored = self._restored, None
        if not data:
            return
        saved, mine = PolicyState.from_dict(data), self.carried
        if [_key(a) for a in saved.actions[: len(self.actions)]] == [_key(a) for a in self.actions]:
            # the checkpoint's story continues this launch's (a fresh session, or earlier attempts replayed)
            self.session.actions[:] = saved.actions
            self.session.gave_up[:] = saved.gave_up
        mine.last_acted = saved.last_acted
        mine.lr_scale = saved.lr_scale
        mine.lr_peak = max(mine.lr_peak, saved.lr_peak)
        mine.seen_codes = saved.seen_codes
        mine.peak_update_ratio = saved.peak_update_ratio
        mine.peak_ratio_at_recipe_lr = saved.peak_ratio_at_recipe_lr
        held = []
        clip = self.settings.clip_max_norm
        if (
            saved.clip_turned_on
            and state.loop is not None
            and getattr(state.loop, "clip_max_norm", 0) is None
        ):
            state.loop.set_clip(clip)
            mine.clip_turned_on = True
            held.append(f"gradient clipping (max_norm {clip:g})")
        if saved.dropout is not None:
            mine.dropout = saved.dropout
            if set_dropout(state.model, saved.dropout):
                held.append(f"dropout {saved.dropout:g}")
        if saved.dropout_lowered is not None:
            mine.dropout_lowered = saved.dropout_lowered
            if set_dropout(state.model, saved.dropout_lowered, lower=True):
                held.append(f"dropout lowered to {saved.dropout_lowered:g}")
        if (
            saved.best is not None and distributed.is_rank_zero()
        ):  # rank 0 alone decides and restores
            mine.best = saved.best
        if held:
            log.warning("autotrainer: resumed with its earlier repairs: %s", ", ".join(held))
        attempt = self.session.attempt
        asked = [
            a for a in self.actions if a["action"] == "restart" and a.get("attempt") == attempt
        ]
        if asked:  # this attempt had already asked for its restart when it was saved: go on to the next one
            a = asked[-1]
            self.session.restart_request = {"code": a["code"], "changes": dict(a["changes"])}
            state.stop_training = True
            state.stop_reason = (
                f"autotrainer: attempt-{attempt} had asked at step {a['step']} for "
                f"a guided restart ({a['code']}); going on to attempt-{attempt + 1}"
            )

    def _check(self, state: FitState, epoch_end: bool = False, setup: bool = False) -> None:
        """Decide (``setup``: on the settings read at fit start); under DDP rank 0 decides and every rank
        follows (a collective: same step on every rank)."""
        self.carried.lr_peak = max(self.carried.lr_peak, state.current_lr)
        self._progress = (state.step, state.max_steps)
        self._note_update_ratio(state.current_lr)

        def decide() -> None:
            if setup:
                self._treat_setup(state)
            else:
                self._decide(state, epoch_end)

        if distributed.get_world_size() == 1:
            decide()
            return
        decision = None
        if distributed.is_rank_zero():
            before = len(self.actions)
            decide()
            new = self.actions[before:]
            if new:
                # the best weights stay on rank 0, the only rank that restores them
                decision = {
                    "state": replace(self.carried, best=None).as_dict(),
                    "restart_request": self.restart_request,
                    "stop": (state.stop_training, state.stop_reason),
                    "fresh_start": any(a["action"] in ONLINE_ACTIONS for a in new),
                }
        # weights, optimizer, scheduler, scaler and clipping too, when rank 0 acted
        decision = distributed.follow_rank_zero(state, decision)
        if decision is not None and not distributed.is_rank_zero():
            self._adopt(state, decision)

    def _adopt(self, state: FitState, decision: dict[str, Any]) -> None:
        """On a rank other than 0: take on what rank 0 decided, as if this rank had acted itself."""
        theirs = PolicyState.from_dict(decision["state"])
        self.session.actions[:] = theirs.actions  # in place: state.actions is this list
        self.session.gave_up[:] = theirs.gave_up
        self.carried = replace(
            theirs,
            actions=self.session.actions,
            gave_up=self.session.gave_up,
            dropout=self.carried.dropout if theirs.dropout is None else theirs.dropout,
            best=self.carried.best,
        )
        self.session.restart_request = decision["restart_request"]
        # a module attribute: not part of the broadcast training state
        if theirs.dropout is not None:
            set_dropout(state.model, theirs.dropout)
        if theirs.dropout_lowered is not None:
            set_dropout(state.model, theirs.dropout_lowered, lower=True)
        state.stop_training, state.stop_reason = decision["stop"]
        state.lr = state.current_lr
        if (
            decision["fresh_start"] and self.diagnostics is not None
        ):  # as rank 0 did after its online repair
            self.diagnostics.reset(state.step)
            state.issues = []

    # -- snapshots -------------------------------------------------------------------------
    def _healthy_now(self, state: FitState) -> bool:
        """A snapshot is worth keeping only with finite loss and gradients and no blow-up diagnosed."""
        rollback_codes = {
            c for c, rule in self.settings.online.items() if rule.action == "rollback"
        }
        if any(i["code"] in rollback_codes for i in state.issues or []):
            return False
        if state.step_skipped or state.loss is None or state.grad_norm is None:
            return False
        # one host read
        return bool(torch.isfinite(state.loss).all() & torch.isfinite(state.grad_norm).all())

    def _maybe_snapshot(self, state: FitState) -> None:
        if not self._healthy_now(state):
            return
        self.snapshots.append(Snapshot.take(state))
        # the first (the baseline after fit start or the last action) is always kept: the rollback of last resort
        if len(self.snapshots) > self.settings.keep_snapshots + 1:
            del self.snapshots[1]

    # -- deciding ------------------------------------------------------------------------------
    def _decide(self, state: FitState, epoch_end: bool = False) -> None:
        issues = {
            i["code"]: i
            for i in state.issues or []
            if SEVERITY_RANK.get(str(i.get("severity")), 0) >= self.settings.min_rank
        }
        self.carried.seen_codes.update(issues)
        final = epoch_end and self._last_epoch(state)
        self._treat(state, issues, final)
        if final and self.restart_request is None:
            ACTIONS["restore_best"].run(self, state, issues)

    def _treat(
        self, state: FitState, issues: dict[str, dict[str, Any]], final: bool = False
    ) -> None:
        online, restarts = self.settings.online, self.settings.restarts
        if self._treat_setting_cause(state, issues):
            return  # the setting that causes the symptom is repaired, not the symptom
        for code in self.settings.priority:
            issue = issues.get(code)
            if issue is None or code in self.session.gave_up:
                continue
            rule = online.get(code)
            if final and rule is not None and rule.action == "regularize":
                continue  # no steps left to regularise: early stopping (restore_best) picks the weights tested
            if self._mild(issue, rule) or self._not_learned(rule):
                continue  # validation accuracy not falling, or never risen: no overfitting to repair
            if self._held(issue, rule, state.step):
                continue  # a validation-only blow-up while the training loss learns (a warm-up's)
            if rule is None and code not in restarts:
                continue
            if (
                rule is not None
                and rule.after
                and not any(
                    a["code"] in rule.after and a.get("attempt") == self.session.attempt
                    for a in self._counted()
                )
            ):
                # a symptom treated only as the aftermath of another repair, unless the evidence shows
                # the LR too high for it: then its repair is a restart at the cut LR
                if self._treat_lr_evidence(state, issue):
                    return
                continue
            if (
                state.step - self.carried.last_acted.get(code, -(10**9))
                < self.settings.cooldown_steps
            ):
                continue  # the last action on this code has not had time to show its effect
            if code in restarts and SEVERITY_RANK[issue["severity"]] < self._restart_floor(code):
                continue
            if code in restarts and self._late_warning(issue):
                continue
            reason = self._limit_reached(code)
            if reason:
                self._give_up(state, issue, reason)
                continue
            self._before = self._now(state, since=None)  # before the action changes anything
            done = self._restart(state, issue) if code in restarts else self._online(state, issue)
            if done:
                return  # one action per check: let it show its effect before the next

    def _lr_evidence_restart(self, issue: dict[str, Any]) -> tuple[float, str] | None:
        """The LR cut (over the recipe's) of a restart for ``issue`` whose code has no restart rule of its
        own (``STUCK_AT_CHANCE``) but is one of ``lr_evidence.codes`` and the evidence shows the LR too
        high; None when no such restart is due (cooldown and limits are the caller's)."""
        code = issue["code"]
        if code in self.settings.restarts or code not in self.settings.lr_evidence.codes:
            return None
        if SEVERITY_RANK.get(str(issue.get("severity")), 0) < self._restart_floor(code):
            return None
        return self._lr_cut(code, str(issue.get("severity")))

    def _treat_lr_evidence(self, state: FitState, issue: dict[str, Any]) -> bool:
        """A run stuck at chance with no explosion before it, whose weights moved far more per step than a
        healthy run's: the LR is too high (seed 5's one-cycle CNN at 100x its LR sat at chance from step 120
        with no action), and the repair is a restart at the cut the update ratio shows."""
        code = issue["code"]
        cut = self._lr_evidence_restart(issue)
        if cut is None:
            return False
        if state.step - self.carried.last_acted.get(code, -(10**9)) < self.settings.cooldown_steps:
            return False
        if self._limit_reached(code):
            return False
        self._before = self._now(state, since=None)
        factor = cut[0] / max(self.carried.lr_scale, 1e-30)
        return self._restart_at_lr(state, issue, "lr_evidence", factor, why=cut[1])

    def _treat_setting_cause(self, state: FitState, issues: dict[str, dict[str, Any]]) -> bool:
        """A stalled or stuck run whose cause is one of its settings (:mod:`setting_causes`): that setting
        repaired, in place (clipping) or by a restart (batch size, a deep MLP without normalisation)."""
        rules = self.settings.setting_causes
        order = {code: i for i, code in enumerate(self.settings.priority)}
        present = sorted(
            (i for c, i in issues.items() if c in rules.codes and c not in self.session.gave_up),
            key=lambda i: order.get(i["code"], len(order)),
        )
        if not present:
            return False
        clip = getattr(state.loop, "clip_max_norm", None) if state.loop is not None else None
        cause = setting_causes.find(self.cfg, clip, state.steps_per_epoch, rules)
        if cause is None:
            return False
        issue = present[0]
        code = issue["code"]
        if state.step - self.carried.last_acted.get(code, -(10**9)) < self.settings.cooldown_steps:
            return False
        if self._limit_reached(code):
            return False  # the table's turn: it gives up on the code and says why
        return self._repair_cause(state, issue, cause)

    def _repair_cause(self, state: FitState, issue: dict[str, Any], cause: SettingCause) -> bool:
        """The setting ``cause`` repaired: in place (its online action) or by a restart with its changes."""
        self._before = self._now(state, since=None)
        if cause.action is not None:
            return self._online(state, issue, action=cause.action, cause=cause)
        rule = RestartRule(changes=cause.changes, lr_factor=None, min_severity=None)
        return self._restart(state, issue, rule=rule, cause=cause)

    def _treat_setup(self, state: FitState) -> None:
        """At fit start, before any step: a setting read from the config that would cause a symptom is
        repaired now (a restart here costs only the set-up; a deep net named at step 80 had a third of its
        steps left). Under DDP rank 0 decides and every rank follows, as at any check (:meth:`_check`)."""
        cause = self._cause(state.loop, state.steps_per_epoch)
        if cause is None or self._limit_reached(cause.code):
            return
        issue = {
            "code": cause.code,
            "severity": "warning",
            "first_step": state.step,
            "evidence": f"read from the config at set-up, before any step: {cause.why}",
            "recommendations": [],
        }
        self._repair_cause(state, issue, cause)

    def _cause(self, loop: Any, steps_per_epoch: int) -> SettingCause | None:
        """The setting of this run that causes a stalled or stuck run (:mod:`setting_causes`), or None."""
        clip = getattr(loop, "clip_max_norm", None) if loop is not None else None
        return setting_causes.find(self.cfg, clip, steps_per_epoch, self.settings.setting_causes)

    def _mild(self, issue: dict[str, Any], rule: Any) -> bool:
        """A warning (not critical) whose rule asks for a fall in validation accuracy (``min_val_acc_drop``)
        that this attempt has not shown: the last validation accuracy is within it of the attempt's best,
        or within the attempt's own epoch-to-epoch noise (the median change between consecutive
        validations) where that is larger: on 144 validation examples one example is 0.7 points, and a
        healthy run that moved between 141 and 142 correct was regularised for a "fall" of one."""
        drop = getattr(rule, "min_val_acc_drop", None)
        if drop is None or issue.get("severity") == "critical":
            return False
        accs = self._val_accs
        if not accs:
            return False  # no validation accuracy to judge by: not known to be mild
        series = self.diagnostics.series if self.diagnostics is not None else None
        if getattr(rule, "sustained", None) and not overfit_evidence.shown(
            series, self._val_examples, rule
        ):
            return True  # ordinary overfitting: the best weights at the end (restore_best), no change now
        # the noise of the validations before the last (the fall being judged is not its own yardstick)
        steps = [abs(b - a) for a, b in zip(accs[:-1], accs[1:-1])]
        noise = statistics.median(steps) if len(steps) >= 3 else 0.0
        return accs[-1] > max(accs) - max(drop, noise) - 1e-9

    def _held(self, issue: dict[str, Any], rule: Any, step: int) -> bool:
        """A rollback rule with ``hold_steps`` whose explosion shows only in the validation loss while the
        training loss learns (:func:`explosion_evidence.held`): a batch-normalised run's validation loss
        spikes while a warm-up raises its LR and comes back by itself (seed 8's healthy one-cycle ResNet,
        rolled back and restarted at 1/100 of its LR, ended at chance)."""
        hold = getattr(rule, "hold_steps", None)
        series = self.diagnostics.series if self.diagnostics is not None else None
        if hold is None or series is None:
            return False
        why = explosion_evidence.held(
            series,
            step,
            max_train_share=float(rule.max_train_share),
            max_train_rise=float(rule.max_train_rise),
            hold_steps=int(hold),
        )
        if why is not None and self._held_note != (issue.get("first_step"), issue["code"]):
            self._held_note = (issue.get("first_step"), issue["code"])
            log.warning("autotrainer: step %d %s left alone: %s", step, issue["code"], why)
        return why is not None

    def _not_learned(self, rule: Any) -> bool:
        """A rule with ``min_learned`` (regularize) on an attempt whose best validation accuracy never got
        that share of the way from chance to 1: a model that never generalised has no fit to its training
        data to trade back; its cause is elsewhere (an LR far too high or too low), and regularising only
        slowed it (seed 3's test half: OVERFITTING at validation accuracy 0.19 and 0.06, regularised)."""
        share = getattr(rule, "min_learned", None)
        if share is None or not self._val_accs:
            return False
        k = self._num_classes or 0
        chance = 1.0 / k if k > 1 else 0.0
        return max(self._val_accs) < chance + share * (1.0 - chance)

    def _note_update_ratio(self, lr: float) -> None:
        """The highest per-step update ratio |dw|/|w| of this attempt: the evidence of an LR too high that
        sizes the LR cut a restart carries (the live diagnosis forgets its history after each repair);
        and the same read at the recipe's LR from the samples since the last check, taken at about ``lr``
        (:mod:`lr_evidence`)."""
        series = self.diagnostics.series if self.diagnostics is not None else None
        ratios = [
            r for r in (series.update_ratio if series else []) if r is not None and math.isfinite(r)
        ]
        if ratios:
            # at the recipe's LR: the series holds only steps since the last repair, all at this LR scale
            # (the ratio grows with the LR)
            at_recipe = max(ratios) / max(self.carried.lr_scale, 1e-30)
            self.carried.peak_update_ratio = max(self.carried.peak_update_ratio, at_recipe)
        fresh = self._ratios.read(series.update_ratio if series is not None else [], series)
        if self._recipe_lr is not None:
            scaled = lr_evidence.peak_at_recipe_lr(fresh, lr, self._recipe_lr)
            self.carried.peak_ratio_at_recipe_lr = max(self.carried.peak_ratio_at_recipe_lr, scaled)

    def _late_warning(self, issue: dict[str, Any]) -> bool:
        """A restart only the LR evidence allows at this severity (below the rule's own floor), after
        ``lr_evidence.warning_until`` of the run: the attempt has mostly run and learns, and a new one
        would double its time (seed 4: dead units named at the last check of an AdamW run at 0.917 after a
        rolled-back explosion; its restart cost 1.95x the twin's time)."""
        code = issue["code"]
        below = SEVERITY_RANK.get(str(issue.get("severity")), 0) < self.settings.restart_floor(code)
        step, max_steps = self._progress
        return below and step > self.settings.lr_evidence.warning_until * max(max_steps, 1)

    def _restart_floor(self, code: str) -> int:
        """The severity a restart for ``code`` needs; ``lr_evidence.min_severity`` when the evidence shows the
        LR too high for it (units killed by big steps are named at a warning, then stay dead: a run 100x
        too fast recovered to a plateau 2 points under its twin, its dead units only a warning)."""
        floor = self.settings.restart_floor(code)
        if code in self.settings.lr_evidence.codes and self._lr_cut(code) is not None:
            floor = min(floor, SEVERITY_RANK[self.settings.lr_evidence.min_severity])
        return floor

    def evidence_factor(self) -> float | None:
        """The LR factor, from the current LR, that brings this attempt's peak update ratio down to
        ``lr_evidence.target_update_ratio``; None without evidence of an LR too high (a peak under
        ``max_update_ratio`` at the current LR)."""
        ev = self.settings.lr_evidence
        now = self.carried.peak_update_ratio * self.carried.lr_scale
        return ev.target_update_ratio / now if now > ev.max_update_ratio else None

    def _lr_cut(self, code: str, severity: str = "warning") -> tuple[float, str] | None:
        """The LR factor (over the recipe's) the evidence asks a restart for ``code`` to carry, with its words:
        an update ratio far above healthy, and a restart for units killed by big steps or after an LR repair."""
        ev = self.settings.lr_evidence
        peak = self.carried.peak_update_ratio
        lr_codes = {
            c for c, r in self.settings.online.items() if r.action in ("rollback", "scale_lr")
        }
        after_lr = any(
            a["code"] in lr_codes and a.get("attempt") == self.session.attempt
            for a in self._counted()
        )
        if code in ev.scale_codes or not (code in ev.codes or after_lr):
            return None
        critical = severity == "critical" and code in ev.codes
        floor = ev.critical_update_ratio if critical else ev.max_update_ratio
        at_recipe = self.carried.peak_ratio_at_recipe_lr
        if not lr_evidence.shows_too_high(peak, at_recipe, floor, critical, ev.max_update_ratio):
            return self._explosion_cut(code)
        sized = max(peak, at_recipe)
        factor = ev.target_update_ratio / sized
        return factor, (
            f"the LR cut x{factor:.3g} (the weights moved {peak:.3g} of their norm in one step, "
            f"{sized:.3g} read at the recipe's LR; healthy is about {ev.target_update_ratio:g})"
        )

    def _explosion_cut(self, code: str) -> tuple[float, str] | None:
        """Without the update ratio's evidence (Adam's steps barely grow with its LR: a one-cycle MLP at
        100x its LR peaked at 0.18), an explosion rolled back in this attempt is the evidence: units that
        die after it (one of ``lr_evidence.codes``) say its cut was not enough. The cut once more (x0.1
        again: seed 5's warm-up case rolled back at x0.1 named dead units 80 steps later and ended 0.805,
        its twin 0.958)."""
        if code not in self.settings.lr_evidence.codes:
            return None
        factors = [
            float(rule.lr_factor)
            for c, rule in self.settings.online.items()
            if rule.action == "rollback" and not rule.after and rule.lr_factor
        ]
        blown = [
            a
            for a in self._counted()
            if a["action"] == "rollback"
            and a.get("attempt") == self.session.attempt
            and not self.settings.online[a["code"]].after
        ]
        if not blown or not factors:
            return None
        factor = self.carried.lr_scale * min(factors)
        return factor, (
            f"the LR cut x{factor:.3g} of the recipe's (the explosion rolled back at step "
            f"{blown[0]['step']} showed it too high, and {code} followed its x{min(factors):g}: the cut "
            "once more)"
        )

    def may_treat(self, issue: dict[str, Any]) -> bool:
        """Whether this policy may still act on ``issue``: what ``stop_on`` waits for before it stops a run.

        False for a code it has no rule for, gave up on, treats only after another repair that did
        not happen (``after``), or sees below the severity it acts on: waiting would wait forever.
        """
        code = str(issue["code"])
        rank = SEVERITY_RANK.get(str(issue.get("severity")), 0)
        if code in self.session.gave_up or rank < self.settings.min_rank:
            return False
        if (
            code in self.settings.setting_causes.codes
            and not self._limit_reached(code)
            and self._cause(*self._loop_info) is not None
        ):
            return True  # its cause is a setting the policy repairs (_treat_setting_cause)
        if code not in self.settings.priority:
            return False
        rule = self.settings.online.get(code)
        if self._mild(issue, rule) or self._not_learned(rule):
            return False  # a mild warning it leaves alone, or an attempt that never learned
        if self._held(issue, rule, self._progress[0]):
            return False  # a validation-only blow-up while the training loss learns: left alone now
        if code in self.settings.restarts:  # a restart code is never treated online (see _treat)
            restart = self.settings.restarts[code]
            if (
                restart.capacity is not None
                and not restart.changes
                and not config_fix(self.cfg, restart)[1]
            ):
                return False  # a capacity restart for a model that is not small never comes
            return rank >= self._restart_floor(code) and not self._late_warning(issue)
        rule = self.settings.online.get(code)
        if rule is None:
            return False
        return (
            not rule.after
            or any(
                a["code"] in rule.after and a.get("attempt") == self.session.attempt
                for a in self._counted()
            )
            or self._lr_evidence_restart(issue) is not None
        )

    @staticmethod
    def _last_epoch(state: FitState) -> bool:
        """Whether the loop stops after this epoch end (the test evaluation comes next)."""
        loop = state.loop
        if state.stop_training:
            return True
        if loop is None:
            return False
        max_steps = getattr(loop, "max_steps", None)
        if max_steps and state.step >= max_steps:
            return True
        return state.epoch >= int(getattr(loop, "max_epochs", 0)) - 1

    def _limit_reached(self, code: str) -> str | None:
        counted = self._counted()
        if len(counted) >= self.settings.max_actions:
            return f"the limit of {self.settings.max_actions} actions per run is reached"
        rule = self.settings.online.get(code)
        limit = (
            rule.max_times
            if rule is not None and rule.max_times is not None
            else self.settings.max_per_code
        )
        done = sum(a["code"] == code for a in counted)
        if done >= limit:
            return f"{code} was already treated {'once' if done == 1 else f'{done} times'} (limit {limit})"
        return None

    def _give_up(self, state: FitState, issue: dict[str, Any], reason: str) -> None:
        """Once per code: say that nothing more will be tried for it, and why."""
        self.session.gave_up.append(issue["code"])
        self.record(
            state,
            issue,
            "give_up",
            state.current_lr,
            state.current_lr,
            {},
            f"giving up on {issue['code']}: {reason}",
            outcome=f"gave up: {reason}",
        )

    # -- online repairs ----------------------------------------------------------------------------
    def _online(
        self,
        state: FitState,
        issue: dict[str, Any],
        action: str | None = None,
        cause: SettingCause | None = None,
    ) -> bool:
        """The table's repair of ``issue`` (or ``action``, the repair of a setting ``cause``), in place."""
        rule = self.settings.online.get(issue["code"])
        name = action or (rule.action if rule is not None else "")
        lr_before = state.current_lr
        changes: dict[str, Any] = {}
        repair = ACTIONS[name].run(self, state, issue, rule, changes)
        if repair is None:
            return False
        # late: the repaired LR from the first step, with the run's steps and schedule
        late = cause is None and self._late_lr(name, rule, state)
        if late and self._restart_at_lr(state, issue, name, repair.factor):
            return True
        if repair.lr_before is not None:
            lr_before = repair.lr_before
        factor, detail = repair.factor, repair.detail
        if factor != 1.0:
            scale_lr(self.optimizer(state), state.scheduler, factor)
        self.carried.lr_scale *= factor
        lr_after = state.current_lr
        state.lr = lr_after
        if factor != 1.0:
            changes["lr_factor"] = round(factor, 6)
            detail = ", ".join(
                p
                for p in (
                    detail,
                    f"lr {lr_before:.3g} -> {lr_after:.3g} (x{factor:.3g}) through the scheduler",
                )
                if p
            )
        # a fresh start for the diagnosis and the snapshots: what came before describes another LR
        if self.diagnostics is not None:
            self.diagnostics.reset(state.step)
        state.issues = []
        self.snapshots = [Snapshot.take(state)]
        self.carried.lr_peak = lr_after
        extra: dict[str, Any] = {}
        if cause is not None:
            detail = f"cause: {cause.why}; {detail}"
            extra["cause"] = cause.name
        self.record(
            state, issue, name, lr_before, lr_after, changes, detail, outcome="applied", **extra
        )
        return True

    def _late_lr(self, name: str, rule: Any, state: FitState) -> bool:
        """An LR repair better made as a restart at the repaired LR: a rollback to the fit start (it throws
        every step away, but in place keeps the schedule where it was and the clipping the explosion
        turned on: an LR 100x too high rolled back to the fit start at step 40 of 240 ended 0.811, its
        twin 0.936), or a raise of an LR that barely moved the weights after ``late_lr_restart`` of the
        run (raised at step 80 of 120, a run ended 9 points under its twin)."""
        if name == "rollback":
            return getattr(rule, "to", None) == "baseline"
        late = state.step >= self.settings.late_lr_restart * max(state.max_steps, 1)
        return name == "raise_lr" and late

    def _restart_at_lr(
        self,
        state: FitState,
        issue: dict[str, Any],
        name: str,
        factor: float,
        why: str | None = None,
    ) -> bool:
        """A guided restart at the LR the repair asked for (the recipe's times the LR scale reached, times
        ``factor``, for the reason ``why`` when it is not an online repair ``name``); False (the repair is
        made in place, or not at all) when no restart may be made now."""
        base_lr = OmegaConf.select(self.cfg, "optimizer.lr") if self.cfg is not None else None
        if not isinstance(base_lr, (int, float)):
            return False
        scale = self.carried.lr_scale * factor
        lr = float(f"{base_lr * scale:.6g}")
        rule = RestartRule(changes={"optimizer": {"lr": lr}}, lr_factor=None, min_severity=None)
        wanted, fix = config_fix(self.cfg, rule)
        if self._refusal(state, fix, wanted):
            return False
        self.carried.lr_scale = scale
        what = why if why is not None else f"{name} x{factor:.3g}"
        note = (
            f"LR repair made as a restart at the repaired LR: {what} at step "
            f"{state.step} of {state.max_steps}"
        )
        return self._restart(state, issue, rule=rule, note=note)

    # -- guided restarts -----------------------------------------------------------------------------
    def _refusal(self, state: FitState, fix: dict[str, Any], wanted: dict[str, Any]) -> str | None:
        """Why a restart with ``fix`` may not be made now (limits, budget, the run's progress), or None."""
        return refusal(
            self.settings,
            self.cfg,
            fix,
            wanted,
            attempt=self.session.attempt,
            progress=state.step / max(state.max_steps, 1),
            session_started=self.session.started,
            attempt_started=self.session.attempt_started,
            fit_started=self._t0,
        )

    def _restart(
        self,
        state: FitState,
        issue: dict[str, Any],
        rule: RestartRule | None = None,
        cause: SettingCause | None = None,
        note: str | None = None,
    ) -> bool:
        """A guided restart with the table's fix for ``issue`` (or ``rule``: the repair of a setting ``cause``,
        or a late LR repair, said in ``note``)."""
        code = issue["code"]
        rule = rule if rule is not None else self.settings.restarts[code]
        wanted, fix = config_fix(self.cfg, rule)
        if rule.capacity is not None and not rule.changes and not fix:
            return False  # the model is not small (or has no width to change): capacity is not the cause
        reason = self._refusal(state, fix, wanted)
        if reason:
            self._give_up(state, issue, reason)
            return False
        # the new attempt keeps what this one learned online: the LR scale and clipping
        lr_scale = self.carried.lr_scale
        # a setting cause is not the LR's; an LR repair made as a restart (note) carries its own LR
        cut = (
            self._lr_cut(code, str(issue.get("severity")))
            if cause is None and note is None
            else None
        )
        if cut is not None and cut[0] < lr_scale * (rule.lr_factor or 1.0):
            lr_scale = cut[0] / (rule.lr_factor or 1.0)
        else:
            cut = None
        # the LR that blew the run up is repaired (a cut from the update ratio, a late LR repair): the
        # clipping its explosion turned on is not carried, a guard and not a repair (a max norm of 1 held
        # a CNN at 0.708 where the same LR without it reached 0.919, its twin 0.928)
        guard = self.carried.clip_turned_on and cut is None and note is None
        changes = carried_over(
            self.cfg,
            fix,
            rule,
            lr_scale,
            self.settings.clip_max_norm if guard else None,
            self._cause_repairs(),
        )
        dropped = ""
        if self.carried.clip_turned_on and not guard:
            if changes.get("trainer.clip.max_norm") == self.settings.clip_max_norm:
                del changes["trainer.clip.max_norm"]
            dropped = (
                f"; the gradient clipping (max_norm {self.settings.clip_max_norm:g}) the explosion "
                "turned on is not carried: the LR that caused it is repaired"
            )
        base_lr = OmegaConf.select(self.cfg, "optimizer.lr") if self.cfg is not None else None
        # a restart replaces the configured LR, not the one the schedule had reached (a cosine's end: 0)
        lr_before, lr_after = state.current_lr, state.current_lr
        if isinstance(base_lr, (int, float)) and not isinstance(base_lr, bool):
            lr_before = float(base_lr)
            lr_after = float(changes.get("optimizer.lr", base_lr))
        self.session.restart_request = {"code": code, "changes": changes}
        state.stop_training = True
        text = ", ".join(f"{k}={v}" for k, v in changes.items())
        state.stop_reason = f"autotrainer: {code} needs a guided restart with {text}"
        detail = f"restart as attempt-{self.session.attempt + 1} with {text}"
        if cut is not None:
            detail += f"; {cut[1]}"
        if cause is not None:
            detail = f"cause: {cause.why}; {detail}"
        if note is not None:
            detail = f"{note}; {detail}"
        detail += dropped
        if (
            not self.settings.plot_stopped_attempts
            and self.diagnostics is not None
            and self.diagnostics.summary_png
        ):
            self.diagnostics.summary_png = False  # seconds on a small run; the curves stay in tb/
            detail += "; no summary.png for the stopped attempt"
        self.record(
            state,
            issue,
            "restart",
            lr_before,
            lr_after,
            changes,
            detail,
            outcome="pending",
            next_attempt=self.session.attempt + 1,
            **({"cause": cause.name} if cause is not None else {}),
        )
        return True

    def _cause_repairs(self) -> dict[str, Any]:
        """Config keys a restart takes over from this attempt: what its online repairs changed (a weight
        decay lowered, a gentler schedule), and the config form of the repair of every cause it diagnosed
        but did not act on, so the setting that caused it does not come back with the new attempt."""
        out: dict[str, Any] = {}
        attempt, acted = self.session.attempt, set()
        for a in self._counted():
            if a.get("attempt") == attempt and a["action"] in ONLINE_ACTIONS:
                acted.add(a["code"])
                if outcomes.so_far(a) == "worse":
                    # measured to have hurt: not a repair to keep (seed 5's lr_high_explosion carried a
                    # weight decay x10 whose regularize sent val acc 0.54 -> 0.10 into its restart)
                    continue
                out.update({k: v for k, v in a["changes"].items() if "." in k})
        if self.cfg is None:
            return out
        for code in sorted(self.carried.seen_codes - acted):
            rule = self.settings.online.get(code)
            form = ACTIONS[rule.action].config if rule is not None else None
            if form is not None and rule is not None:
                out.update(form(self.cfg, rule))
        return out

    # -- recording -------------------------------------------------------------------------------------
    def record(
        self,
        state: FitState,
        issue: dict[str, Any],
        action: str,
        lr_before: float,
        lr_after: float,
        changes: dict[str, Any],
        detail: str,
        outcome: str,
        **extra: Any,
    ) -> None:
        """One action: the action list, events.jsonl, a console line, TensorBoard text and marker."""
        if action != "give_up":
            self.carried.last_acted[issue["code"]] = state.step
        entry = {
            "step": state.step,
            "epoch": state.epoch,
            "attempt": self.session.attempt,
            "code": issue["code"],
            "severity": issue.get("severity"),
            "evidence": issue.get("evidence", ""),
            "action": action,
            "lr_before": lr_before,
            "lr_after": lr_after,
            "changes": changes,
            "detail": detail,
            "outcome": outcome,
            **extra,
        }
        if action not in ("give_up", "restore_best"):
            outcomes.start(
                entry,
                getattr(self, "_before", None) or self._now(state, since=None),
                by_step=state.step + self.settings.measure_steps,
            )
        self.actions.append(entry)
        state.events.write("autotrainer", **entry)
        if action != "give_up":
            state.annotations.append((state.step, action))
        line = f"autotrainer: step {state.step} {issue['code']} -> {action}: {detail}"
        log.warning(line)  # TensorBoard: the tensorboard hook writes each action from state.actions


def _key(action: dict[str, Any]) -> tuple:
    """What identifies an action across a checkpoint (its outcome is rewritten as the run goes on)."""
    return action.get("attempt"), action.get("step"), action.get("code"), action.get("action")
