"""The AutoTrainer: a policy that reads the live diagnosis and repairs a sick run.

Seed 001 (exercise 8.12) sketches it: cut the LR and retry on explosion, raise
it on a plateau. Here it is a :class:`~diag.hooks.Hook` placed after the
:class:`~diag.live.DiagnosticsHook`. Every ``check_every`` steps and at each
epoch end it reads ``state.report["issues"]`` and takes at most one action:

* **online repairs** (no restart) act on the optimizer through the scheduler:
  roll back to an in-memory snapshot and cut the LR (explosions), cut the LR
  (oscillation), raise it (slow convergence), restore it (LR decayed too early);
  or regularise (overfitting: back to the best-validation weights, weight decay
  in the optimizer's groups and dropout raised in place);
* **early stopping**: the weights of the best validation loss are kept in memory
  (model only, taken when it improves); a run that ends overfitting is tested
  with them, not with its last weights;
* **guided restarts** for what no LR fixes (vanishing gradients, saturated or
  dead units, bad initialisation): the hook stops the fit and asks for a config
  change; :func:`run_attempts` re-runs the task as ``attempt-N/`` in the run
  directory.

Cooldowns, per-code and total limits, a restart count and a time budget bound
it; when it gives up it says so and why. Each action is a console line,
TensorBoard text and marker scalar, an ``events.jsonl`` line and an entry of
``report.json -> autotrainer.actions``. It belongs to the runner, not to diag,
because it drives the optimizer and the run itself.

Under data-parallel training rank 0 alone decides (its inputs, such as activation
statistics of its own batches or wall time, may differ on other ranks); at every
check each rank then calls :func:`runner.distributed.follow_rank_zero`, so every
rank continues with rank 0's weights, optimizer, schedule and clipping, adopts its
action list and restart request, and starts the same next attempt.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from diag.codes import CODES, SEVERITY_RANK
from diag.hooks import EventLog, FitState, Hook
from diag.live import DiagnosticsHook
from diag.report import write_report
from runner import distributed
from runner.errors import UserError

log = logging.getLogger("runner.autotrainer")

# Optimizer param-group keys that hold a learning rate (OneCycleLR keeps its schedule in initial/max/min_lr).
GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
# Scheduler attributes that hold learning rates: the schedule is computed from them.
SCHEDULER_LR_LISTS = ("base_lrs", "min_lrs", "max_lrs", "_last_lr")
SCHEDULER_LR_NUMBERS = ("eta_min", "default_min_lr")
ONLINE_ACTIONS = ("rollback", "scale_lr", "raise_lr", "restore_lr", "regularize")


# -- learning rates through the scheduler -------------------------------------------
def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        return value
    return value * factor


def _schedulers(scheduler: Any) -> Iterable[Any]:
    """The scheduler and, for SequentialLR/ChainedScheduler, the ones it wraps."""
    if scheduler is None:
        return
    yield scheduler
    for inner in getattr(scheduler, "_schedulers", None) or ():
        yield from _schedulers(inner)


def scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply every learning rate the optimizer and its scheduler hold by ``factor``.

    Writing only ``group["lr"]`` would be overwritten at the next ``scheduler.step()``
    (LambdaLR and OneCycleLR recompute from their base values). Scaling the base
    values too (``base_lrs``, ``initial_lr``, OneCycleLR's ``max_lr``/``min_lr``,
    plateau ``min_lrs``, cosine ``eta_min``) makes the schedule continue, scaled.
    """
    for group in optimizer.param_groups:
        for key in GROUP_LR_KEYS:
            if key in group:
                group[key] = _scale(group[key], factor)
    for sched in _schedulers(scheduler):
        attrs = vars(sched)
        for key in SCHEDULER_LR_LISTS:
            if isinstance(attrs.get(key), list):
                attrs[key] = [_scale(v, factor) for v in attrs[key]]
        for key in SCHEDULER_LR_NUMBERS:
            if key in attrs:
                attrs[key] = _scale(attrs[key], factor)


# -- snapshots ----------------------------------------------------------------------
def _to_cpu(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU (snapshots must not alias live tensors or fill the GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class Snapshot:
    """Model, optimizer, scheduler and scaler state at ``step``, held in memory for a rollback."""

    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any]

    @classmethod
    def take(cls, state: FitState) -> Snapshot:
        scaler = state.scaler.state_dict() if state.scaler is not None and state.scaler.is_enabled() else {}
        return cls(step=state.step, model=_to_cpu(state.model.state_dict()),
                   optimizer=_to_cpu(state.optimizer.state_dict()),
                   scheduler=_to_cpu(state.scheduler.state_dict()) if state.scheduler is not None else None,
                   scaler=copy.deepcopy(scaler))

    def restore(self, state: FitState) -> None:
        state.model.load_state_dict(self.model)  # copies into the live parameters: references stay valid
        state.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if state.scheduler is not None and self.scheduler is not None:
            state.scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        if self.scaler and state.scaler is not None:
            state.scaler.load_state_dict(copy.deepcopy(self.scaler))


@dataclass
class BestWeights:
    """The model weights of the best validation loss so far (early stopping keeps these, not the optimizer)."""

    step: int
    epoch: int
    val_loss: float
    val_acc: float | None
    model: dict[str, Any]

    @classmethod
    def take(cls, state: FitState) -> BestWeights:
        acc = state.metrics.get("val/acc")
        return cls(step=state.step, epoch=state.epoch, val_loss=float(state.metrics["val/loss"]),
                   val_acc=float(acc) if acc is not None else None, model=_to_cpu(state.model.state_dict()))

    def restore(self, state: FitState) -> None:
        state.model.load_state_dict(self.model)


def set_dropout(model: torch.nn.Module, p: float) -> list[tuple[float, float]]:
    """Raise every ``nn.Dropout``'s probability to at least ``p``, in place; the (before, after) of each changed."""
    changed = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p < p:
            changed.append((module.p, p))
            module.p = p
    return changed


# -- config changes for restarts -----------------------------------------------------
def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init": "he"}}`` -> ``{"model.init": "he"}`` (the override spelling)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def with_changes(cfg: DictConfig, changes: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with dotted ``changes`` applied (a restart never resumes the previous attempt)."""
    new = copy.deepcopy(cfg)
    with open_dict(new):
        for key, value in changes.items():
            OmegaConf.update(new, key, value, merge=False)
        if OmegaConf.select(new, "trainer.resume", default=None) is not None:
            new.trainer.resume = None
    return new


def diagnostics_enabled(cfg: DictConfig) -> bool:
    """Whether ``callbacks.diagnostics`` builds the live diagnosis (what the AutoTrainer reads)."""
    return OmegaConf.select(cfg, "callbacks.diagnostics", default=None) is not None


def autotrainer_enabled(cfg: DictConfig) -> bool:
    """``autotrainer=default`` fills ``callbacks.autotrainer``; ``autotrainer=off`` sets it to null."""
    return OmegaConf.select(cfg, "callbacks.autotrainer", default=None) is not None


def validate_policy(online: Mapping[str, Any], restarts: Mapping[str, Any], priority: Iterable[str],
                    key: str = "autotrainer.hooks.autotrainer", restore_codes: Iterable[str] = ()) -> None:
    """A typo in the policy table is a config error, found before any work rather than mid-run."""
    for where, codes in (("online", online), ("restarts", restarts), ("priority", priority),
                         ("restore_best.codes", restore_codes)):
        for code in codes:
            if code not in CODES:
                raise UserError(f"{key}.{where}: {code!r} is not a diagnosis code (see diag/codes.py)")
    for code, spec in online.items():
        action = (spec or {}).get("action")
        if action not in ONLINE_ACTIONS:
            raise UserError(f"{key}.online.{code}.action={action!r} is not valid: choose one of "
                            f"{', '.join(ONLINE_ACTIONS)}")
        if action == "regularize" and not any((spec or {}).get(k) for k in ("weight_decay", "dropout")):
            raise UserError(f"{key}.online.{code}: regularize needs weight_decay and/or dropout")
    for code, spec in restarts.items():
        severity = (spec or {}).get("min_severity", "critical")
        if severity not in SEVERITY_RANK:
            raise UserError(f"{key}.restarts.{code}.min_severity={severity!r} is not valid: choose one of "
                            f"{', '.join(SEVERITY_RANK)}")
    both = set(online) & set(restarts)
    if both:
        raise UserError(f"{key}: {', '.join(sorted(both))} is both in online and in restarts: choose one")


def check_config(cfg: DictConfig) -> None:
    """Before any work: the AutoTrainer acts on the live diagnosis, and its policy table must be valid."""
    if autotrainer_enabled(cfg) and not diagnostics_enabled(cfg):
        raise UserError("autotrainer=default reads the live diagnosis but diag has no DiagnosticsHook "
                        "(diag=off): use diag=default or diag=full, or autotrainer=off")
    spec = OmegaConf.select(cfg, "callbacks.autotrainer", default=None)
    if spec is not None:
        validate_policy(_plain(spec.get("online")), _plain(spec.get("restarts")), spec.get("priority") or [],
                        key="callbacks.autotrainer", restore_codes=_plain(spec.get("restore_best")).get("codes") or [])


# -- the policy -------------------------------------------------------------------------
@dataclass
class Session:
    """What carries over between attempts of one run: the action list, restarts used, time spent."""

    started: float = field(default_factory=time.perf_counter)
    attempt_started: float = field(default_factory=time.perf_counter)
    actions: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


class AutoTrainer(Hook):
    """Reads ``state.report["issues"]`` and repairs the run online or asks for a guided restart.

    ``online`` maps a code to ``{action, lr_factor, ...}`` (actions: ``rollback``,
    ``scale_lr``, ``raise_lr``, ``restore_lr``, ``regularize``); ``restarts`` maps a code to
    ``{changes: {model: {...}}, lr_factor}``. ``priority`` decides which code is
    treated first when several are present (root causes before symptoms).
    """

    def __init__(self, online: Mapping[str, Mapping[str, Any]], restarts: Mapping[str, Mapping[str, Any]],
                 priority: list[str], check_every: int = 10, min_severity: str = "warning",
                 restart_min_severity: str = "critical", cooldown_steps: int = 50, max_actions: int = 8,
                 max_per_code: int = 3, snapshot_every: int = 25, keep_snapshots: int = 3,
                 rollback_margin: int = 10, clip_max_norm: float = 1.0, max_restarts: int = 2,
                 time_budget: float = 2.5, plot_stopped_attempts: bool = False,
                 restore_best: Mapping[str, Any] | None = None) -> None:
        self.online = {k: dict(v) for k, v in _plain(online).items()}
        self.restarts = {k: dict(v) for k, v in _plain(restarts).items()}
        self.priority = list(priority)
        restore = _plain(restore_best)
        self.restore_codes = set(restore.get("codes") or [])
        validate_policy(self.online, self.restarts, self.priority, restore_codes=self.restore_codes)
        self.check_every = max(1, int(check_every))
        self.min_severity = SEVERITY_RANK[min_severity]
        self.restart_min_severity = SEVERITY_RANK[restart_min_severity]
        self.cooldown_steps = int(cooldown_steps)
        self.max_actions = int(max_actions)
        self.max_per_code = int(max_per_code)
        self.snapshot_every = max(1, int(snapshot_every))
        self.keep_snapshots = max(1, int(keep_snapshots))
        self.rollback_margin = int(rollback_margin)
        self.clip_max_norm = float(clip_max_norm)
        self.max_restarts = int(max_restarts)
        self.time_budget = float(time_budget)
        self.plot_stopped_attempts = bool(plot_stopped_attempts)
        self.restore_min_rise = float(restore.get("min_rise", 0.05))
        self.restore_keep_acc = bool(restore.get("unless_val_acc_drops", True))
        self.session = Session()
        self.cfg: DictConfig | None = None
        self.diagnostics: DiagnosticsHook | None = None
        self.snapshots: list[Snapshot] = []
        self.best: BestWeights | None = None  # best validation loss of this attempt (early stopping)
        self.keep_best = bool(self.restore_codes) or any(
            (spec or {}).get("action") == "regularize" and spec.get("rollback", True) for spec in self.online.values())
        self.seen_codes: set[str] = set()  # codes diagnosed at min_severity or above during this attempt
        self.dropout: float | None = None  # set by a regularize action (other DDP ranks apply it too)
        self.last_acted: dict[str, int] = {}
        self.restart_request: dict[str, Any] | None = None
        self.lr_peak = 0.0
        self.lr_scale = 1.0  # product of this attempt's online LR factors (a restart keeps it)
        self.clip_turned_on = False
        self._restored: dict[str, Any] | None = None  # a checkpoint's state_dict, applied at fit start
        self._t0 = time.perf_counter()

    # -- wiring ------------------------------------------------------------------------
    def bind(self, hooks: Iterable[Hook], cfg: DictConfig | None = None, session: Session | None = None) -> None:
        """Find the diagnostics hook this policy reads and join the run's session (done by :func:`run_attempts`).

        In a hand-written loop call ``bind(hooks)``: online repairs work; a restart needs ``cfg``.
        """
        self.diagnostics = next((h for h in hooks if isinstance(h, DiagnosticsHook)), None)
        if self.diagnostics is None:
            raise UserError("autotrainer=default needs the live diagnosis: use diag=default or diag=full")
        self.cfg = cfg
        self.session = session or self.session

    @property
    def actions(self) -> list[dict[str, Any]]:
        return self.session.actions

    def _counted(self) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["action"] != "give_up"]

    # -- events --------------------------------------------------------------------------
    def on_fit_start(self, state: FitState) -> None:
        if self.diagnostics is None:
            raise RuntimeError("AutoTrainer reads a DiagnosticsHook: call bind(hooks) before fitting")
        self._t0 = time.perf_counter()
        state.report["actions"] = self.actions
        self.lr_peak = state.current_lr
        self.best = None
        self._resume(state)  # after a checkpoint: its repairs first, then the rollback baseline includes them
        # only the deciding rank ever rolls back (a rollback reaches the others through follow_rank_zero)
        self.snapshots = [Snapshot.take(state)] if distributed.is_rank_zero() else []

    def on_train_batch_end(self, state: FitState) -> None:
        if self.restart_request is not None:
            return
        if state.step % self.check_every == 0:
            self._check(state)
        if state.step % self.snapshot_every == 0 and self.restart_request is None and distributed.is_rank_zero():
            self._maybe_snapshot(state)

    def on_validation_end(self, state: FitState) -> None:
        """Keep the weights of the best validation loss (a CPU copy, only when it improves)."""
        loss = state.metrics.get("val/loss")
        if not self.keep_best or not distributed.is_rank_zero() or loss is None or not math.isfinite(loss):
            return
        if self.best is None or loss < self.best.val_loss:
            self.best = BestWeights.take(state)

    def on_epoch_end(self, state: FitState) -> None:
        if self.restart_request is None:
            self._check(state, epoch_end=True)

    def on_fit_end(self, state: FitState) -> None:
        """Say how each action of this attempt turned out, from the final diagnosis and test accuracy."""
        final = {i["code"] for i in state.report.get("issues", [])}
        acc = state.metrics.get("test/acc")
        tail = f"test_acc {acc:.3f}" if acc is not None and math.isfinite(acc) else "no test accuracy"
        for a in self.actions:
            if a.get("attempt") == self.session.attempt and a["action"] == "restore_best":
                a["outcome"] = f"tested with the epoch-{a['best_epoch']} weights ({tail})"
                continue
            if a.get("attempt") == self.session.attempt and a["action"] in ONLINE_ACTIONS and \
                    a["outcome"] == "applied":
                later = [b for b in self.actions if b is not a and b["code"] == a["code"] and b["step"] > a["step"]
                         and b.get("attempt") == a["attempt"]]
                again = "gave up" if later and later[0]["action"] == "give_up" else "acted again"
                a["outcome"] = (f"recurred: {again} at step {later[0]['step']}" if later else
                                f"{a['code']} still present at the end ({tail})" if a["code"] in final else
                                f"resolved: {a['code']} not present at the end ({tail})")
            if a["action"] == "restart" and a.get("next_attempt") == self.session.attempt:
                a["outcome"] = (f"attempt-{self.session.attempt} ended {_status(state)}"
                                + (f" with {', '.join(sorted(final))}" if final else "") + f", {tail}")
        if self.restart_request is None:
            return
        for a in self.actions:
            if a["action"] == "restart" and a.get("attempt") == self.session.attempt:
                a["outcome"] = f"restarting as attempt-{self.session.attempt + 1}"

    def state_dict(self) -> dict[str, Any]:
        """The actions so far and the repairs that live outside the optimizer's and model's state dicts
        (clipping is the loop's, dropout a module attribute), so a resumed run keeps them."""
        return {"actions": self.actions, "last_acted": dict(self.last_acted), "gave_up": list(self.session.gave_up),
                "lr_scale": self.lr_scale, "lr_peak": self.lr_peak, "clip_turned_on": self.clip_turned_on,
                "dropout": self.dropout, "seen_codes": sorted(self.seen_codes),
                "best": None if self.best is None else dict(vars(self.best))}  # its fields; the weights not copied

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Held until :meth:`on_fit_start`: the session is joined and the loop known only then."""
        self._restored = dict(state)

    def _resume(self, state: FitState) -> None:
        """Carry a checkpoint's actions and repairs into this fit, and say which repairs still hold."""
        saved, self._restored = self._restored, None
        if not saved:
            return
        actions = list(saved.get("actions", []))
        if [_key(a) for a in actions[:len(self.actions)]] == [_key(a) for a in self.actions]:
            # the checkpoint's story continues this launch's (a fresh session, or earlier attempts replayed)
            self.session.actions[:] = actions
            self.session.gave_up[:] = list(saved.get("gave_up", []))
        self.last_acted = dict(saved.get("last_acted", {}))
        self.lr_scale = float(saved.get("lr_scale", 1.0))
        self.lr_peak = max(self.lr_peak, float(saved.get("lr_peak", 0.0)))
        self.seen_codes = set(saved.get("seen_codes", []))
        held = []
        if saved.get("clip_turned_on") and state.loop is not None and getattr(state.loop, "clip_max_norm", 0) is None:
            state.loop.clip_max_norm = self.clip_max_norm
            self.clip_turned_on = True
            held.append(f"gradient clipping (max_norm {self.clip_max_norm:g})")
        if saved.get("dropout") is not None:
            self.dropout = float(saved["dropout"])
            if set_dropout(state.model, self.dropout):
                held.append(f"dropout {self.dropout:g}")
        if saved.get("best") is not None and distributed.is_rank_zero():
            self.best = BestWeights(**saved["best"])
        if held:
            log.warning("autotrainer: resumed with its earlier repairs: %s", ", ".join(held))
        asked = [a for a in self.actions if a["action"] == "restart" and a.get("attempt") == self.session.attempt]
        if asked:  # this attempt had already asked for its restart when it was saved: go on to the next one
            a = asked[-1]
            self.restart_request = {"code": a["code"], "changes": dict(a["changes"])}
            state.stop_training = True
            state.stop_reason = (f"autotrainer: attempt-{self.session.attempt} had asked at step {a['step']} for "
                                 f"a guided restart ({a['code']}); going on to attempt-{self.session.attempt + 1}")

    # -- snapshots -------------------------------------------------------------------------
    def _healthy_now(self, state: FitState) -> bool:
        """A snapshot is worth keeping only with finite loss and gradients and no blow-up diagnosed."""
        if any(i["code"] in self._rollback_codes() for i in state.report.get("issues", [])):
            return False
        if state.step_skipped or state.loss is None or state.grad_norm is None:
            return False
        return bool(torch.isfinite(state.loss).all() & torch.isfinite(state.grad_norm).all())  # one host read

    def _rollback_codes(self) -> set[str]:
        return {c for c, spec in self.online.items() if spec.get("action") == "rollback"}

    def _maybe_snapshot(self, state: FitState) -> None:
        if not self._healthy_now(state):
            return
        self.snapshots.append(Snapshot.take(state))
        # the first (the baseline after fit start or the last action) is always kept: the rollback of last resort
        if len(self.snapshots) > self.keep_snapshots + 1:
            del self.snapshots[1]

    # -- deciding ------------------------------------------------------------------------------
    def _check(self, state: FitState, epoch_end: bool = False) -> None:
        """Decide; under DDP rank 0 decides and every rank follows (a collective: same step on every rank)."""
        self.lr_peak = max(self.lr_peak, state.current_lr)
        if distributed.get_world_size() == 1:
            self._decide(state, epoch_end)
            return
        decision = None
        if distributed.is_rank_zero():
            before = len(self.actions)
            self._decide(state, epoch_end)
            new = self.actions[before:]
            if new:
                decision = {"actions": self.actions, "last_acted": self.last_acted, "gave_up": self.session.gave_up,
                            "lr_scale": self.lr_scale, "lr_peak": self.lr_peak,
                            "clip_turned_on": self.clip_turned_on, "restart_request": self.restart_request,
                            "dropout": self.dropout,
                            "stop": (state.stop_training, state.stop_reason),
                            "fresh_start": any(a["action"] in ONLINE_ACTIONS for a in new)}
        # weights, optimizer, scheduler, scaler and clipping too, when rank 0 acted
        decision = distributed.follow_rank_zero(state, decision)
        if decision is not None and not distributed.is_rank_zero():
            self._adopt(state, decision)

    def _adopt(self, state: FitState, decision: dict[str, Any]) -> None:
        """On a rank other than 0: take on what rank 0 decided, as if this rank had acted itself."""
        self.session.actions[:] = decision["actions"]  # in place: state.report["actions"] is this list
        self.last_acted = dict(decision["last_acted"])
        self.session.gave_up[:] = decision["gave_up"]
        self.lr_scale = float(decision["lr_scale"])
        self.lr_peak = float(decision["lr_peak"])
        self.clip_turned_on = bool(decision["clip_turned_on"])
        self.restart_request = decision["restart_request"]
        if decision.get("dropout") is not None:  # a module attribute: not part of the broadcast training state
            self.dropout = float(decision["dropout"])
            set_dropout(state.model, self.dropout)
        state.stop_training, state.stop_reason = decision["stop"]
        state.lr = state.current_lr
        if decision["fresh_start"] and self.diagnostics is not None:  # as rank 0 did after its online repair
            self.diagnostics.reset(state.step)
            state.report["issues"] = []

    def _decide(self, state: FitState, epoch_end: bool = False) -> None:
        issues = {i["code"]: i for i in state.report.get("issues", [])
                  if SEVERITY_RANK.get(i.get("severity"), 0) >= self.min_severity}
        self.seen_codes.update(issues)
        final = epoch_end and self._last_epoch(state)
        self._treat(state, issues, final)
        if final and self.restart_request is None:
            self._restore_best(state, issues)

    def _treat(self, state: FitState, issues: dict[str, dict[str, Any]], final: bool = False) -> None:
        for code in self.priority:
            issue = issues.get(code)
            if issue is None or code in self.session.gave_up:
                continue
            if final and (self.online.get(code) or {}).get("action") == "regularize":
                continue  # no steps left to regularise: early stopping (restore_best) picks the weights tested
            if self.online.get(code) is None and self.restarts.get(code) is None:
                continue
            after = (self.online.get(code) or {}).get("after")
            if after and not any(a["code"] in after and a.get("attempt") == self.session.attempt
                                 for a in self._counted()):
                continue  # a symptom treated only as the aftermath of another repair
            if state.step - self.last_acted.get(code, -10**9) < self.cooldown_steps:
                continue  # the last action on this code has not had time to show its effect
            if code in self.restarts and SEVERITY_RANK[issue["severity"]] < self._restart_floor(code):
                continue
            reason = self._limit_reached(code)
            if reason:
                self._give_up(state, issue, reason)
                continue
            done = self._restart(state, issue) if code in self.restarts else self._online(state, issue)
            if done:
                return  # one action per check: let it show its effect before the next

    def _restart_floor(self, code: str) -> int:
        """The severity a finding needs to restart the run: ``restarts.<CODE>.min_severity`` or ``restart_min_severity``."""
        severity = self.restarts[code].get("min_severity")
        return self.restart_min_severity if severity is None else SEVERITY_RANK[severity]

    @staticmethod
    def _last_epoch(state: FitState) -> bool:
        """Whether the loop stops after this epoch end (the test evaluation comes next)."""
        loop = state.loop
        if state.stop_training:
            return True
        if loop is None:
            return False
        if getattr(loop, "max_steps", None) and state.step >= loop.max_steps:
            return True
        return state.epoch >= int(getattr(loop, "max_epochs", 0)) - 1

    def _restore_best(self, state: FitState, issues: dict[str, dict[str, Any]]) -> None:
        """Early stopping: a run that overfitted and ends with validation loss well above its best is tested
        with the best weights. Not when those had a lower validation accuracy than the last ones (on a small
        set a rising loss can be overconfidence on examples still classified right)."""
        best, loss = self.best, state.metrics.get("val/loss")
        seen = sorted(self.seen_codes & self.restore_codes)
        if best is None or not seen or loss is None or not math.isfinite(loss):
            return
        if loss <= best.val_loss * (1 + self.restore_min_rise):
            return
        acc = state.metrics.get("val/acc")
        if self.restore_keep_acc and acc is not None and best.val_acc is not None and best.val_acc < acc:
            log.info("autotrainer: keeping the last weights: val loss %.3g is above its best %.3g (epoch %d), "
                     "but val accuracy %.3f is above that epoch's %.3f", loss, best.val_loss, best.epoch + 1,
                     acc, best.val_acc)
            return
        code = seen[0]
        issue = issues.get(code) or {"code": code, "severity": "warning",
                                     "evidence": f"{code} was diagnosed during this run"}
        best.restore(state)
        detail = (f"tested with the best-validation weights of epoch {best.epoch + 1} (step {best.step}): val loss "
                  f"{best.val_loss:.4g} instead of {loss:.4g}")
        if acc is not None and best.val_acc is not None:
            detail += f", val acc {best.val_acc:.3f} instead of {acc:.3f}"
        state.metrics["val/loss"] = best.val_loss  # the report's final val metrics describe the weights tested
        if best.val_acc is not None:
            state.metrics["val/acc"] = best.val_acc
        self._record(state, issue, "restore_best", state.current_lr, state.current_lr,
                     {"weights": f"epoch {best.epoch + 1}"}, detail, outcome="applied",
                     best_epoch=best.epoch + 1, best_step=best.step, best_val_loss=best.val_loss,
                     last_val_loss=float(loss))

    def _limit_reached(self, code: str) -> str | None:
        counted = self._counted()
        if len(counted) >= self.max_actions:
            return f"the limit of {self.max_actions} actions per run is reached"
        spec = self.online.get(code) or {}
        limit = int(spec.get("max_times", self.max_per_code))
        done = sum(a["code"] == code for a in counted)
        if done >= limit:
            return f"{code} was already treated {'once' if done == 1 else f'{done} times'} (limit {limit})"
        return None

    def _give_up(self, state: FitState, issue: dict[str, Any], reason: str) -> None:
        """Once per code: say that nothing more will be tried for it, and why."""
        self.session.gave_up.append(issue["code"])
        self._record(state, issue, "give_up", state.current_lr, state.current_lr, {},
                     f"giving up on {issue['code']}: {reason}", outcome=f"gave up: {reason}")

    # -- online repairs ----------------------------------------------------------------------------
    def _online(self, state: FitState, issue: dict[str, Any]) -> bool:
        code = issue["code"]
        spec = self.online[code]
        kind = spec["action"]
        lr_before = state.current_lr
        changes: dict[str, Any] = {}
        if kind == "rollback":
            snap = (self.snapshots[0] if spec.get("to") == "baseline" else
                    self._rollback_target(int(issue.get("first_step") or state.step)))
            snap.restore(state)
            lr_before = state.current_lr  # the restored state's LR (the schedule is back at the snapshot's step)
            self.snapshots = [s for s in self.snapshots if s.step <= snap.step]
            factor = float(spec.get("lr_factor", 0.1))
            detail = f"rolled back to step {snap.step}"
            if spec.get("clip", True) and state.loop is not None and getattr(state.loop, "clip_max_norm", 0) is None:
                state.loop.clip_max_norm = self.clip_max_norm
                self.clip_turned_on = True
                changes["trainer.clip.max_norm"] = self.clip_max_norm
                detail += f", gradient clipping on (max_norm {self.clip_max_norm:g})"
        elif kind == "scale_lr":
            factor = float(spec["lr_factor"])
            detail = ""
        elif kind == "raise_lr":
            if not self._gradient_reaches_first_layer():
                return False  # no LR moves weights that get no gradient: wait for the mechanism's diagnosis
            factor = self._raise_factor(spec)
            detail = ""
        elif kind == "restore_lr":
            if lr_before <= 0 or self.lr_peak <= lr_before * 1.01:
                return False  # nothing to restore: the LR is already at its last good level
            factor = self.lr_peak / lr_before
            detail = f"restored to the peak {self.lr_peak:.3g} the schedule cut it from"
        elif kind == "regularize":
            factor = 1.0
            detail = self._regularize(state, spec, changes)
            if not detail:
                return False  # already as regularised as the policy would make it
        else:  # unreachable: _validate checked the table
            raise AssertionError(kind)
        if factor != 1.0:
            scale_lr(state.optimizer, state.scheduler, factor)
        self.lr_scale *= factor
        lr_after = state.current_lr
        state.lr = lr_after
        if factor != 1.0:
            changes["lr_factor"] = round(factor, 6)
            detail = ", ".join(p for p in (detail, f"lr {lr_before:.3g} -> {lr_after:.3g} (x{factor:.3g}) "
                                           "through the scheduler") if p)
        # a fresh start for the diagnosis and the snapshots: what came before describes another LR
        self.diagnostics.reset(state.step)
        state.report["issues"] = []
        self.snapshots = [Snapshot.take(state)]
        self.lr_peak = lr_after
        self._record(state, issue, kind, lr_before, lr_after, changes, detail, outcome="applied")
        return True

    def _regularize(self, state: FitState, spec: Mapping[str, Any], changes: dict[str, Any]) -> str:
        """Back to the best-validation weights, then weight decay and dropout up; '' when nothing would change."""
        parts = []
        wd = spec.get("weight_decay")
        if wd:
            factor = float(spec.get("weight_decay_factor", 10.0))
            before = [float(g.get("weight_decay") or 0.0) for g in state.optimizer.param_groups]
            decays = any(b > 0 for b in before)
            # up to weight_decay, or x factor where it is already set; groups left at 0 on purpose while
            # others decay (norms, biases) stay at 0
            after = [max(float(wd), b * factor) if b > 0 or not decays else 0.0 for b in before]
            for group, value in zip(state.optimizer.param_groups, after):
                group["weight_decay"] = value
            if after != before:
                changes["optimizer.weight_decay"] = float(f"{max(after):.6g}")
                parts.append(f"weight decay {max(before):.3g} -> {max(after):.3g} in the optimizer's param groups")
        p = spec.get("dropout")
        if p:
            changed = set_dropout(state.model, float(p))
            if changed:
                self.dropout = float(p)
                changes["model.dropout"] = float(p)
                parts.append(f"dropout {min(b for b, _ in changed):.2g} -> {float(p):.2g} in "
                             f"{len(changed)} layer{'s' if len(changed) > 1 else ''}")
        if not parts:
            return ""
        if spec.get("rollback", True) and self.best is not None and self.best.step < state.step:
            self.best.restore(state)
            changes["weights"] = f"epoch {self.best.epoch + 1}"
            parts.insert(0, f"back to the best-validation weights of epoch {self.best.epoch + 1} "
                            f"(val loss {self.best.val_loss:.4g})")
        return ", ".join(parts)

    def _rollback_target(self, first_step: int) -> Snapshot:
        """The newest snapshot taken safely before the problem began (else the oldest one kept)."""
        before = [s for s in self.snapshots if s.step <= first_step - self.rollback_margin]
        return before[-1] if before else self.snapshots[0]

    def _gradient_reaches_first_layer(self) -> bool:
        """False when the first layer's recent gradient norms are zero (dead or blocked units, not a low LR)."""
        norms = self.diagnostics.series.layer_grad_norm if self.diagnostics else {}
        if not norms:
            return True
        recent = [v for v in next(iter(norms.values()))[-3:] if v is not None and math.isfinite(v)]
        return not recent or max(recent) > 0.0

    def _raise_factor(self, spec: Mapping[str, Any]) -> float:
        """``lr_factor``, or enough to bring the measured update ratio up to ``target_update_ratio``.

        A too-low LR shows as weights that barely move; the step needed is read
        from how far they are from a healthy ‖Δw‖/‖w‖ (about 1e-3), bounded by
        ``max_factor`` so one raise cannot overshoot wildly.
        """
        factor = float(spec.get("lr_factor", 10.0))
        target = spec.get("target_update_ratio")
        ratios = [r for r in (self.diagnostics.series.update_ratio[-3:] if self.diagnostics else [])
                  if r is not None and math.isfinite(r) and r > 0]
        if target and ratios:
            measured = sorted(ratios)[len(ratios) // 2]
            factor = max(factor, min(float(spec.get("max_factor", 100.0)), float(target) / measured))
        return factor

    # -- guided restarts -----------------------------------------------------------------------------
    def _restart(self, state: FitState, issue: dict[str, Any]) -> bool:
        code = issue["code"]
        spec = self.restarts[code]
        wanted = flatten(spec.get("changes") or {})
        cfg = self.cfg
        fix = {key: value for key, value in wanted.items() if cfg is not None
               and OmegaConf.select(cfg, key, default="__missing__") not in ("__missing__", value)}
        reason = self._restart_refused(state, fix, wanted)
        if reason:
            self._give_up(state, issue, reason)
            return False
        # the new attempt keeps what this one learned online: the LR scale and clipping
        changes = dict(fix)
        lr_before = state.current_lr
        lr_factor = float(spec.get("lr_factor") or 1.0)
        base_lr = OmegaConf.select(cfg, "optimizer.lr")
        if isinstance(base_lr, (int, float)) and (lr_factor != 1.0 or self.lr_scale != 1.0):
            changes["optimizer.lr"] = float(f"{base_lr * self.lr_scale * lr_factor:.6g}")
        lr_after = float(changes.get("optimizer.lr", base_lr)) if isinstance(base_lr, (int, float)) else lr_before
        if self.clip_turned_on:
            changes["trainer.clip.max_norm"] = self.clip_max_norm
        self.restart_request = {"code": code, "changes": changes}
        state.stop_training = True
        text = ", ".join(f"{k}={v}" for k, v in changes.items())
        state.stop_reason = f"autotrainer: {code} needs a guided restart with {text}"
        detail = f"restart as attempt-{self.session.attempt + 1} with {text}"
        if not self.plot_stopped_attempts and self.diagnostics is not None and self.diagnostics.summary_png:
            self.diagnostics.summary_png = False  # seconds on a small run; the curves stay in tb/
            detail += "; no summary.png for the stopped attempt"
        self._record(state, issue, "restart", lr_before, lr_after, changes, detail, outcome="pending",
                     next_attempt=self.session.attempt + 1)
        return True

    def _restart_refused(self, state: FitState, changes: dict[str, Any], wanted: dict[str, Any]) -> str | None:
        if self.cfg is None:
            return "no config to restart from (the hook was not started by runner.task.run)"
        if not changes:
            keys = ", ".join(wanted) or "nothing"
            return f"the fix ({keys}) is already in this config or does not apply to this model"
        if self.session.attempt >= self.max_restarts:
            return f"the limit of {self.max_restarts} restarts is reached"
        now = time.perf_counter()
        progress = state.step / max(state.max_steps, 1)
        setup_time = max(0.0, self._t0 - self.session.attempt_started)
        attempt_time = setup_time + (now - self._t0) / max(progress, 1e-3)  # set-up, then the fit at this pace
        spent = now - self.session.started
        if spent + attempt_time > self.time_budget * attempt_time:
            return (f"another attempt (~{attempt_time:.0f}s) would exceed the time budget of "
                    f"{self.time_budget:g}x one attempt ({spent:.0f}s spent)")
        return None

    # -- recording -------------------------------------------------------------------------------------
    def _record(self, state: FitState, issue: dict[str, Any], action: str, lr_before: float, lr_after: float,
                changes: dict[str, Any], detail: str, outcome: str, **extra: Any) -> None:
        if action != "give_up":
            self.last_acted[issue["code"]] = state.step
        entry = {"step": state.step, "epoch": state.epoch, "attempt": self.session.attempt, "code": issue["code"],
                 "severity": issue.get("severity"), "evidence": issue.get("evidence", ""), "action": action,
                 "lr_before": lr_before, "lr_after": lr_after, "changes": changes, "detail": detail,
                 "outcome": outcome, **extra}
        self.actions.append(entry)
        state.events.write("autotrainer", **entry)
        if action != "give_up":
            state.annotations.append((state.step, action))
        line = f"autotrainer: step {state.step} {issue['code']} -> {action}: {detail}"
        log.warning(line)
        if state.writer is not None and state.is_rank_zero:
            state.writer.add_text("autotrainer", line, state.step)
            state.writer.add_scalar("autotrainer/action", len(self._counted()), state.step)


def _key(action: Mapping[str, Any]) -> tuple:
    """What identifies an action across a checkpoint (its outcome is rewritten as the run goes on)."""
    return action.get("attempt"), action.get("step"), action.get("code"), action.get("action")


def _plain(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node or {})


def _status(state: FitState) -> str:
    from diag.report import status_of

    return status_of(state.report.get("issues", []))


# -- the attempt loop ------------------------------------------------------------------------------------
RunAttempt = Callable[..., float]


def run_attempts(cfg: DictConfig, run_dir: Path, run_attempt: RunAttempt) -> float:
    """Run the task, and again as ``attempt-N/`` for each guided restart the AutoTrainer asks for.

    ``run_attempt(cfg, run_dir, prepare=...)`` is one full run (``runner.task``);
    ``prepare(parts)`` is called once everything is built so the policy can find
    the diagnostics and join this session. The top-level ``report.json`` ends up
    with the final attempt's metrics and the whole action list.
    """
    check_config(cfg)
    run_dir = Path(run_dir)
    session = Session()
    current: dict[str, Any] = {}

    def prepare(parts: dict[str, Any]) -> None:
        hooks = list(parts["hooks"])
        policy = next((h for h in hooks if isinstance(h, AutoTrainer)), None)
        if policy is not None:
            policy.bind(hooks, attempt_cfg, session)
        current.update(policy=policy, state=parts["state"])

    attempt_cfg, attempt_dir = cfg, run_dir
    made_by: dict[str, Any] = {}  # the config changes that made the current attempt
    while True:
        t0 = session.attempt_started = time.perf_counter()
        objective = run_attempt(attempt_cfg, attempt_dir, prepare=prepare)
        policy: AutoTrainer | None = current.get("policy")
        state: FitState = current["state"]
        if session.attempt == 0 and state.run_dir is not None:
            run_dir = attempt_dir = Path(state.run_dir)  # trainer.resume=auto may have continued an earlier run
        request = policy.restart_request if policy is not None else None
        session.attempts.append({
            "attempt": session.attempt, "dir": str(attempt_dir.relative_to(run_dir)) if attempt_dir != run_dir else ".",
            "changes": dict(made_by), "stopped_for": request["code"] if request else None, "status": _status(state),
            "codes": [i["code"] for i in state.report.get("issues", [])], "steps": state.step,
            "test_acc": state.metrics.get("test/acc"), "wall_time": round(time.perf_counter() - t0, 2)})
        if request is None:
            break
        session.attempt += 1
        made_by = request["changes"]  # rank 0's request: under DDP every rank starts the same attempt
        attempt_cfg = with_changes(attempt_cfg, made_by)
        attempt_dir = run_dir / f"attempt-{session.attempt}"
        own = attempt_dir / "checkpoints" / "last.pt"
        if cfg.trainer.get("resume") == "auto" and own.is_file():  # relaunched after a kill during this attempt
            with open_dict(attempt_cfg):
                attempt_cfg.trainer.resume = str(own)
        if not distributed.is_rank_zero():
            continue
        _write_hydra_dir(attempt_dir, attempt_cfg, request["changes"])
        log.warning("autotrainer: attempt-%d in %s with %s", session.attempt, attempt_dir,
                    ", ".join(f"{k}={v}" for k, v in request["changes"].items()))
    if session.attempt and distributed.is_rank_zero():
        _write_top_report(run_dir, attempt_dir, session)
    return objective


def _write_hydra_dir(attempt_dir: Path, cfg: DictConfig, changes: Mapping[str, Any]) -> None:
    """Make ``attempt-N/`` a full run directory: its config and the overrides that made it differ."""
    hydra_dir = attempt_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"{k}={v}" for k, v in changes.items()]), hydra_dir / "overrides.yaml")


def _write_top_report(run_dir: Path, final_dir: Path, session: Session) -> None:
    """The run directory's report: the final attempt's diagnosis and metrics, every action, every attempt."""
    import json

    report = json.loads((final_dir / "report.json").read_text(encoding="utf-8"))
    report["autotrainer"] = {"actions": session.actions, "attempts": session.attempts,
                             "final_attempt": session.attempts[-1]["dir"]}
    write_report(run_dir, report)
    events = EventLog(run_dir / "events.jsonl")
    events.write("autotrainer", action="attempts_done", final_attempt=session.attempts[-1]["dir"],
                 attempts=session.attempts)
    events.close()
    acc = report.get("metrics", {}).get("test_acc")
    log.warning("autotrainer: %d attempts, final %s (test accuracy %s, status %s); every action in %s",
                len(session.attempts), session.attempts[-1]["dir"], f"{acc:.4f}" if acc is not None else "n/a",
                report.get("status"), run_dir / "report.json")
