"""The repairs the policy can take, by name: ``online.<CODE>.action`` in the YAML looks them up here.

An online repair acts on the live fit and returns the LR factor it wants applied through the
scheduler and what it did, or None when it would change nothing (then the policy acts on the
next code). ``restore_best`` is the end-of-fit repair of early stopping, not a table entry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from diag.hooks import FitState
from runner.autotrainer import lr_evidence
from runner.autotrainer.lr_surgery import plateau_cuts, reset_plateau_patience, slow_schedule
from runner.autotrainer.schedule_ahead import peak_ahead
from runner.autotrainer.snapshots import Snapshot, set_dropout

if TYPE_CHECKING:
    from runner.autotrainer.policy import AutoTrainer
    from runner.autotrainer.settings import OnlineRule

log = logging.getLogger("runner.autotrainer")


@dataclass
class Repair:
    """What an online repair did: the LR factor still to apply and its words for the record."""

    factor: float
    detail: str
    lr_before: float | None = (
        None  # the LR the repair started from, when it moved the LR itself (rollback)
    )


@dataclass(frozen=True)
class Action:
    run: Callable[..., Any]
    # the table keys it reads (no defaults in code)
    needs: Callable[[Mapping[str, Any]], tuple[str, ...]]
    in_table: bool = True  # usable as online.<CODE>.action
    # the same repair as config overrides, for a restart whose attempt saw the code but did not act on it
    config: Callable[[DictConfig, OnlineRule], dict[str, Any]] | None = None


ACTIONS: dict[str, Action] = {}


def register(
    name: str,
    needs: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda spec: (),
    in_table: bool = True,
    config: Callable[[DictConfig, OnlineRule], dict[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        ACTIONS[name] = Action(fn, needs, in_table, config)
        return fn

    return add


def reset_moments(optimizer: torch.optim.Optimizer) -> int:
    """Forget the optimizer's moments and momentum buffers (they are rebuilt at its next step); how many
    parameters had some. After a change of weight decay or momentum they describe another optimizer:
    Adam's second moment holds the old decay term's scale, SGD's buffer the old velocity."""
    n = len(optimizer.state)
    optimizer.state.clear()
    return n


@register(
    "rollback",
    needs=lambda spec: (
        "lr_factor",
        "clip",
        *(("max_train_share", "max_train_rise") if spec.get("hold_steps") is not None else ()),
    ),
)
def rollback(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """Back to a snapshot from before the problem began, LR cut, clipping on (explosions).

    ``to: baseline`` (still at chance after an explosion was rolled back): the weights the fit started
    from, with the optimizer and schedule kept as the earlier cuts left them and the moments reset.
    Every snapshot since the explosion may hold weights it damaged: a dev run went back to the state
    after its last action three times and stayed at chance (0.07 against its twin's 0.93)."""
    if rule.to == "baseline" and policy.initial is not None:
        lr_before = state.current_lr
        state.model.load_state_dict(policy.initial.model)
        reset_moments(policy.optimizer(state))
        forget = getattr(state.loop, "forget_epoch_sums", None)
        if forget is not None:
            forget(state.step)
        detail = (
            f"weights back to the fit start (step {policy.initial.step}), the schedule kept, "
            "the optimizer's moments reset"
        )
    else:
        snap = rollback_target(policy, int(issue.get("first_step") or state.step))
        snap.restore(state)
        # the restored state's LR: the schedule is back at the snapshot's step
        lr_before = state.current_lr
        policy.snapshots = [s for s in policy.snapshots if s.step <= snap.step]
        detail = f"rolled back to step {snap.step}"
    factor = _given(rule.lr_factor)
    resized = rule.to == "baseline" and lr_evidence.sized_cut_made(
        policy.actions, policy.session.attempt
    )
    if resized:
        # the LR is the one the update ratio asked for: its cut is read again at this LR, not compounded
        ev = policy.settings.lr_evidence
        series = policy.diagnostics.series if policy.diagnostics is not None else None
        factor, words = lr_evidence.cut_at_current_lr(
            series.update_ratio if series is not None else [],
            ev.max_update_ratio,
            ev.target_update_ratio,
        )
        detail += f", {words}"
    again = any(
        a["action"] == "rollback" and a.get("attempt") == policy.session.attempt
        for a in policy.actions
    )
    evidence = policy.evidence_factor() if again and not resized else None
    if evidence is not None and evidence < factor:
        # a rollback's x0.1 was not enough: the cut the update ratio shows (an LR 10000x too high was
        # still 10x too high after three rollbacks). Not at the first: an init far too large also makes
        # huge first steps at a sane LR, and its restart follows.
        factor = evidence
        changes[lr_evidence.SIZED] = "update_ratio"
        detail += (
            f", the LR cut the update ratio shows (x{factor:.3g}: the weights moved "
            f"{policy.carried.peak_update_ratio * policy.carried.lr_scale:.3g} of their norm in a step)"
        )
    clip = policy.settings.clip_max_norm
    if rule.clip and state.loop is not None and getattr(state.loop, "clip_max_norm", 0) is None:
        state.loop.set_clip(clip)
        policy.carried.clip_turned_on = True
        changes["trainer.clip.max_norm"] = clip
        detail += f", gradient clipping on (max_norm {clip:g})"
    return Repair(factor=factor, detail=detail, lr_before=lr_before)


@register("scale_lr", needs=lambda spec: ("lr_factor",))
def scale_lr(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """The LR times ``lr_factor`` (oscillation)."""
    return Repair(factor=_given(rule.lr_factor), detail="")


@register(
    "raise_lr",
    needs=lambda spec: ("lr_factor", *(("max_factor",) if spec.get("target_update_ratio") else ())),
)
def raise_lr(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """The LR up (slow convergence), unless the first layer gets no gradient at all, the schedule is still
    raising it (a warm-up), or the update ratio read at the schedule's peak ahead is not too low."""
    if not gradient_reaches_first_layer(policy):
        return None  # no LR moves weights that get no gradient: wait for the mechanism's diagnosis
    lr_now = state.current_lr
    peak, climbing = peak_ahead(state.scheduler, lr_now, _scheduler_steps_left(state))
    if climbing:
        return None  # the warm-up raises the LR itself: a ratio sampled now understates its steps
    sized = raise_factor(policy, rule, at_peak=peak / lr_now if lr_now > 0 else 1.0)
    if sized is None:
        return None  # the weights move enough per step at the schedule's peak: not the LR's fault
    factor, detail = sized, ""
    ceiling = 1.0 / policy.carried.lr_scale if policy.carried.lr_scale < 1.0 else None
    if ceiling is not None and factor > ceiling:
        # this attempt cut the LR on the evidence that the recipe's was too high: back to it, not above
        factor = ceiling
        detail = "back to the recipe's LR at most (this attempt cut it before)"
    undo = plateau_cuts(state.scheduler, lr_now, policy.carried.lr_peak)
    if undo != 1.0:
        factor *= undo
        words = f"the plateau scheduler's cuts since the last action undone (x{undo:.3g})"
        detail = f"{detail}, {words}" if detail else words
        reset_plateau_patience(state.scheduler)  # the stalled epochs were the too-low LR's
    if factor <= 1.0:
        return None
    return Repair(factor=factor, detail=detail)


def _scheduler_steps_left(state: FitState) -> int:
    """The scheduler's steps left: epochs or optimizer steps, as the loop steps it."""
    per_epoch = getattr(state.loop, "scheduler_interval", "epoch") == "epoch"
    left = max(state.max_steps - state.step, 0)
    return math.ceil(left / max(state.steps_per_epoch, 1)) if per_epoch else left


@register("loosen_clip")
def loosen_clip(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule | None,
    changes: dict[str, Any],
) -> Repair | None:
    """Gradient clipping off when its max norm is below ``setting_causes.min_clip`` (a stalled run): a clip
    of 1e-4 makes every step tiny at any LR. Turned on again (at ``clip_max_norm``) by an explosion's
    rollback, like any run without clipping."""
    loop = state.loop
    clip = getattr(loop, "clip_max_norm", None) if loop is not None else None
    if loop is None or clip is None or clip >= policy.settings.setting_causes.min_clip:
        return None  # no clip, or not one tight enough to stall the run: another cause
    loop.set_clip(None)
    policy.carried.clip_turned_on = False
    changes["trainer.clip.max_norm"] = None
    return Repair(factor=1.0, detail=f"gradient clipping off (was max_norm {clip:g})")


@register("lower_dropout")
def lower_dropout(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule | None,
    changes: dict[str, Any],
) -> Repair | None:
    """Every dropout layer above ``setting_causes.max_dropout`` cut to ``setting_causes.dropout`` (the MLP's
    default) in one action, in place: a dropout of 0.95 found in the config (a setting cause), at fit start
    before any step (the weights have not been thrown out yet, nothing to roll back)."""
    causes = policy.settings.setting_causes
    if not any(
        isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > causes.max_dropout
        for m in state.model.modules()
    ):
        return None  # not a dropout strong enough to be the cause
    changed = set_dropout(state.model, causes.dropout, lower=True)
    policy.carried.dropout_lowered = causes.dropout
    changes["model.dropout"] = causes.dropout
    return Repair(
        factor=1.0,
        detail=f"dropout {max(b for b, _ in changed):.2g} -> {causes.dropout:.2g} in "
        f"{len(changed)} layer{'s' if len(changed) > 1 else ''}",
    )


@register("lower_weight_decay")
def lower_weight_decay(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule | None,
    changes: dict[str, Any],
) -> Repair | None:
    """Weight decay above ``setting_causes.max_weight_decay`` in any param group cut to
    ``setting_causes.weight_decay``, in place, the optimizer's moments reset (they hold the old decay term
    for coupled L2): a weight decay of 3 found in the config (a setting cause), at fit start before any
    step has shrunk the weights."""
    causes = policy.settings.setting_causes
    optimizer = policy.optimizer(state)
    before = [float(g.get("weight_decay") or 0.0) for g in optimizer.param_groups]
    if max(before, default=0.0) <= causes.max_weight_decay:
        return None  # not a weight decay strong enough to be the cause
    for group, value in zip(optimizer.param_groups, before):
        group["weight_decay"] = min(value, causes.weight_decay)
    changes["optimizer.weight_decay"] = causes.weight_decay
    detail = f"weight decay {max(before):.3g} -> {causes.weight_decay:.3g}"
    if reset_moments(optimizer):
        changes["optimizer_state"] = "reset"
        detail += ", the optimizer's moments reset"
    return Repair(factor=1.0, detail=detail)


def _gentler_schedule(cfg: DictConfig, rule: OnlineRule) -> dict[str, Any]:
    """restore_lr as config: the schedule's cuts no harder than the rule allows (StepLR, plateau)."""
    sched = OmegaConf.select(cfg, "scheduler.lr_scheduler", default=None)
    if sched is None:
        return {}
    target = str(sched.get("_target_", ""))
    out: dict[str, Any] = {}
    stepwise = target.endswith(("StepLR", "MultiStepLR"))
    if stepwise and rule.min_gamma and float(sched.get("gamma", 1.0)) < rule.min_gamma:
        out["scheduler.lr_scheduler.gamma"] = rule.min_gamma
    if target.endswith("ReduceLROnPlateau"):
        if rule.min_patience is not None and int(sched.get("patience", 0)) < rule.min_patience:
            out["scheduler.lr_scheduler.patience"] = rule.min_patience
        if rule.min_factor is not None and float(sched.get("factor", 1.0)) < rule.min_factor:
            out["scheduler.lr_scheduler.factor"] = rule.min_factor
    return out


@register("restore_lr", config=_gentler_schedule)
def restore_lr(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """Back to the peak LR the schedule cut it from, and the rest of the schedule gentler (LR decayed
    too early): restoring the LR alone lets the same schedule cut it again at its next step."""
    lr_before, peak = state.current_lr, policy.carried.lr_peak
    if lr_before <= 0 or peak <= lr_before * 1.01:
        return None  # nothing to restore: the LR is already at its last good level
    per_epoch = getattr(state.loop, "scheduler_interval", "epoch") == "epoch"
    left = max(state.max_steps - state.step, 0)
    remaining = math.ceil(left / max(state.steps_per_epoch, 1)) if per_epoch else left
    gentler = slow_schedule(
        state.scheduler,
        remaining=remaining,
        min_gamma=rule.min_gamma,
        max_cuts=rule.max_cuts,
        min_patience=rule.min_patience,
        min_factor=rule.min_factor,
    )
    changes.update(gentler)
    detail = f"restored to the peak {peak:.3g} the schedule cut it from"
    if gentler:
        detail += ", the rest of the schedule gentler: " + ", ".join(
            f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in gentler.items()
        )
    return Repair(factor=peak / lr_before, detail=detail)


def _lowered(cfg: DictConfig, caps: dict[str, float | None]) -> dict[str, Any]:
    """Each config key whose number is above its cap, set to the cap (a None cap leaves the key alone)."""
    out: dict[str, Any] = {}
    for key, cap in caps.items():
        value = OmegaConf.select(cfg, key, default=None)
        if cap is not None and isinstance(value, (int, float)) and value > cap:
            out[key] = cap
    return out


def _less_regularization(cfg: DictConfig, rule: OnlineRule) -> dict[str, Any]:
    """lower_regularization as config: weight decay and dropout down to the rule's values."""
    return _lowered(
        cfg, {"optimizer.weight_decay": rule.weight_decay, "model.dropout": rule.dropout}
    )


@register(
    "lower_regularization",
    needs=lambda spec: ("reset_state", "rollback") if spec.get("weight_decay") is not None else (),
    config=_less_regularization,
)
def lower_regularization(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """Weight decay and dropout down to the rule's values, in place (too much regularisation).

    With ``rollback``, first back to a snapshot from before the problem began: weights the decay has
    shrunk towards zero pass almost no gradient and learn slowly again. The optimizer's moments are
    reset when the weight decay changes: for coupled L2 (Adam, SGD) they are dominated by the old decay
    term and would keep the steps tiny for hundreds of steps."""
    parts = []
    lr_before = None
    optimizer = policy.optimizer(state)
    too_strong = rule.weight_decay is not None and any(
        float(g.get("weight_decay") or 0.0) > rule.weight_decay for g in optimizer.param_groups
    )
    # dropout of 0.9+ blows the activations up by 1/(1-p): by the time it is found the weights are often
    # thrown far out (a loss of 1e5), and lowering it there left a run that kept exploding
    too_much_dropout = rule.dropout is not None and any(
        isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > rule.dropout
        for m in state.model.modules()
    )
    if (too_strong or too_much_dropout) and rule.rollback:
        # the weights the decay has shrunk towards zero learn slowly again: back to before it began
        snap = rollback_target(policy, int(issue.get("first_step") or state.step))
        snap.restore(state)  # restores the param groups too: the decay is changed after it
        lr_before = state.current_lr
        policy.snapshots = [s for s in policy.snapshots if s.step <= snap.step]
        parts.append(f"rolled back to step {snap.step}")
    if rule.weight_decay is not None:
        before = [float(g.get("weight_decay") or 0.0) for g in optimizer.param_groups]
        after = [min(b, rule.weight_decay) for b in before]
        if after != before:
            for group, value in zip(optimizer.param_groups, after):
                group["weight_decay"] = value
            changes["optimizer.weight_decay"] = float(f"{max(after):.6g}")
            parts.append(f"weight decay {max(before):.3g} -> {max(after):.3g}")
            if rule.reset_state and reset_moments(optimizer):
                changes["optimizer_state"] = "reset"
                parts.append("the optimizer's moments reset")
    if rule.dropout is not None:
        changed = set_dropout(state.model, rule.dropout, lower=True)
        if changed:
            policy.carried.dropout_lowered = rule.dropout
            changes["model.dropout"] = rule.dropout
            parts.append(
                f"dropout {max(b for b, _ in changed):.2g} -> {rule.dropout:.2g} in "
                f"{len(changed)} layer{'s' if len(changed) > 1 else ''}"
            )
    if not parts:
        return None  # nothing above the rule's values: another cause
    return Repair(factor=1.0, detail=", ".join(parts), lr_before=lr_before)


def _less_momentum(cfg: DictConfig, rule: OnlineRule) -> dict[str, Any]:
    """lower_momentum as config: SGD momentum or Adam's beta1 down to the rule's value."""
    out = _lowered(cfg, {"optimizer.momentum": rule.momentum})
    betas = OmegaConf.select(cfg, "optimizer.betas", default=None)
    if rule.momentum is not None and betas is not None and float(betas[0]) > rule.momentum:
        out["optimizer.betas"] = [rule.momentum, float(betas[1])]
    return out


@register(
    "lower_momentum",
    needs=lambda spec: ("momentum", "reset_state", "rollback"),
    config=_less_momentum,
)
def lower_momentum(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """SGD momentum / Adam beta1 down to ``momentum`` and the buffers reset (momentum too high): the
    velocity built at the old momentum would carry the weights on past the minimum. With ``rollback``,
    first back to a snapshot from before the problem began (a run thrown far out does not come back)."""
    optimizer = policy.optimizer(state)
    target = _given(rule.momentum)
    high = [
        g
        for g in optimizer.param_groups
        if float(g.get("momentum") or 0.0) > target or float(g.get("betas", (0.0,))[0]) > target
    ]
    if not high:
        return None  # the momentum is already at most the rule's: another cause
    detail = []
    lr_before = None
    if rule.rollback:
        snap = rollback_target(policy, int(issue.get("first_step") or state.step))
        snap.restore(state)  # restores the param groups too: the momentum is changed after it
        lr_before = state.current_lr
        policy.snapshots = [s for s in policy.snapshots if s.step <= snap.step]
        detail.append(f"rolled back to step {snap.step}")
    before = 0.0
    for group in optimizer.param_groups:
        if float(group.get("momentum") or 0.0) > target:
            before = max(before, float(group["momentum"]))
            group["momentum"] = target
            changes["optimizer.momentum"] = target
        if "betas" in group and float(group["betas"][0]) > target:
            before = max(before, float(group["betas"][0]))
            group["betas"] = (target, group["betas"][1])
            changes["optimizer.betas"] = [target, float(group["betas"][1])]
    name = "beta1" if "optimizer.betas" in changes else "momentum"
    detail.append(f"{name} {before:g} -> {target:g}")
    if rule.reset_state and reset_moments(optimizer):
        changes["optimizer_state"] = "reset"
        detail.append("momentum buffers reset")
    factor = rule.lr_factor if rule.lr_factor is not None else 1.0
    return Repair(factor=factor, detail=", ".join(detail), lr_before=lr_before)


@register(
    "regularize",
    needs=lambda spec: (
        "rollback",
        *(("weight_decay_factor",) if spec.get("weight_decay") else ()),
    ),
)
def regularize(
    policy: AutoTrainer,
    state: FitState,
    issue: dict[str, Any],
    rule: OnlineRule,
    changes: dict[str, Any],
) -> Repair | None:
    """Back to the best-validation weights, then weight decay and dropout up (overfitting)."""
    parts = []
    if rule.weight_decay:
        optimizer = policy.optimizer(state)
        factor = _given(rule.weight_decay_factor)
        before = [float(g.get("weight_decay") or 0.0) for g in optimizer.param_groups]
        decays = any(b > 0 for b in before)
        # up to weight_decay, or x factor where it is already set; groups left at 0 on purpose while
        # others decay (norms, biases) stay at 0
        after = [max(rule.weight_decay, b * factor) if b > 0 or not decays else 0.0 for b in before]
        for group, value in zip(optimizer.param_groups, after):
            group["weight_decay"] = value
        if after != before:
            changes["optimizer.weight_decay"] = float(f"{max(after):.6g}")
            parts.append(
                f"weight decay {max(before):.3g} -> {max(after):.3g} in the optimizer's param groups"
            )
    if rule.dropout:
        p = rule.dropout
        changed = set_dropout(state.model, p)
        if changed:
            policy.carried.dropout = p
            changes["model.dropout"] = p
            parts.append(
                f"dropout {min(b for b, _ in changed):.2g} -> {p:.2g} in "
                f"{len(changed)} layer{'s' if len(changed) > 1 else ''}"
            )
    if not parts:
        return None  # already as regularised as the policy would make it
    best = policy.carried.best
    if rule.rollback and best is not None and best.step < state.step:
        best.restore(state)
        changes["weights"] = f"epoch {best.epoch + 1}"
        parts.insert(
            0,
            f"back to the best-validation weights of epoch {best.epoch + 1} "
            f"(val loss {best.val_loss:.4g})",
        )
    return Repair(factor=1.0, detail=", ".join(parts))


@register("restore_best", in_table=False)
def restore_best(policy: AutoTrainer, state: FitState, issues: dict[str, dict[str, Any]]) -> bool:
    """Early stopping: a run that overfitted and ends with validation loss well above its best is tested
    with the best weights. Not when those had a lower validation accuracy than the last ones (on a small
    set a rising loss can be overconfidence on examples still classified right). With ``after_repair``,
    also a run this policy repaired (an action in this attempt, or the restart that began it): the weights
    it ends with are its doing, and a repaired run that ends on a swing is tested with its best."""
    settings = policy.settings.restore_best
    best, loss = policy.carried.best, state.metrics.get("val/loss")
    attempt = policy.session.attempt
    mine = [
        a
        for a in policy.session.actions
        if a["action"] not in ("give_up", "restore_best")
        and (
            (a.get("attempt") == attempt and a["action"] != "restart")
            or a.get("next_attempt") == attempt
        )
    ]
    # the codes named at the end (and those repaired) or, without named_at_end, any seen in the run
    named = (
        set(issues) | {a["code"] for a in mine}
        if settings.named_at_end
        else policy.carried.seen_codes
    )
    seen = sorted(named & settings.codes)
    repaired = not seen and settings.after_repair and bool(mine)
    if repaired:
        seen = [mine[-1]["code"]]
    if best is None or not seen or loss is None or not math.isfinite(loss):
        return False
    if loss <= best.val_loss * (1 + settings.min_rise):
        return False
    acc = state.metrics.get("val/acc")
    if (
        settings.unless_val_acc_drops
        and acc is not None
        and best.val_acc is not None
        and best.val_acc < acc
    ):
        log.info(
            "autotrainer: keeping the last weights: val loss %.3g is above its best %.3g (epoch %d), "
            "but val accuracy %.3f is above that epoch's %.3f",
            loss,
            best.val_loss,
            best.epoch + 1,
            acc,
            best.val_acc,
        )
        return False
    code = seen[0]
    issue = issues.get(code) or {
        "code": code,
        "severity": "warning",
        "evidence": f"{code} was {'repaired' if repaired else 'diagnosed'} during this run",
    }
    best.restore(state)
    detail = (
        f"tested with the best-validation weights of epoch {best.epoch + 1} (step {best.step}): val loss "
        f"{best.val_loss:.4g} instead of {loss:.4g}"
    )
    if acc is not None and best.val_acc is not None:
        detail += f", val acc {best.val_acc:.3f} instead of {acc:.3f}"
    # the report's final val metrics describe the weights tested
    state.metrics["val/loss"] = best.val_loss
    if best.val_acc is not None:
        state.metrics["val/acc"] = best.val_acc
    policy.record(
        state,
        issue,
        "restore_best",
        state.current_lr,
        state.current_lr,
        {"weights": f"epoch {best.epoch + 1}"},
        detail,
        outcome="applied",
        best_epoch=best.epoch + 1,
        best_step=best.step,
        best_val_loss=best.val_loss,
        last_val_loss=float(loss),
    )
    return True


ONLINE_ACTIONS = tuple(name for name, action in ACTIONS.items() if action.in_table)


def rollback_target(policy: AutoTrainer, first_step: int) -> Snapshot:
    """The newest snapshot taken safely before the problem began (else the oldest one kept)."""
    before = [s for s in policy.snapshots if s.step <= first_step - policy.settings.rollback_margin]
    return before[-1] if before else policy.snapshots[0]


def gradient_reaches_first_layer(policy: AutoTrainer) -> bool:
    """False when the first layer's recent gradient norms are zero (dead or blocked units, not a low LR)."""
    norms = policy.diagnostics.series.layer_grad_norm if policy.diagnostics else {}
    if not norms:
        return True
    recent = [v for v in next(iter(norms.values()))[-3:] if v is not None and math.isfinite(v)]
    return not recent or max(recent) > 0.0


def raise_factor(policy: AutoTrainer, rule: OnlineRule, at_peak: float = 1.0) -> float | None:
    """``lr_factor``, or what brings the measured update ratio, read at the schedule's peak ahead, up to
    ``target_update_ratio`` (at most ``max_factor``); None when that reading is already at the target.

    A too-low LR shows as weights that barely move. The ratio grows with the LR, so samples taken at a
    fraction of the peak the schedule will still reach are scaled by ``at_peak`` (that peak over the LR
    now) before the raise is sized: sized at a one-cycle warm-up's low LR, a raise x286 took the peak
    to 2.9x the recipe's own LR and blew the run up. Without samples, the rule's fixed ``lr_factor``.
    """
    target = rule.target_update_ratio
    ratios = [
        r
        for r in (policy.diagnostics.series.update_ratio[-3:] if policy.diagnostics else [])
        if r is not None and math.isfinite(r) and r > 0
    ]
    if not (target and ratios):
        return _given(rule.lr_factor)
    measured = sorted(ratios)[len(ratios) // 2] * max(at_peak, 1.0)
    wanted = target / measured
    if wanted <= 1.0:
        return None
    return min(_given(rule.max_factor), wanted)


def _given(value: float | None) -> float:
    """A value validation made sure the table sets for this action."""
    assert value is not None
    return value
