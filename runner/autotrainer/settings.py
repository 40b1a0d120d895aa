"""The policy's settings, typed, from ``runner/conf/autotrainer/default.yaml`` (``callbacks.autotrainer``).

The YAML is the only source of defaults: a key it lacks is a config error here, not a value
made up in code. A typo in the policy table is found before any work rather than mid-run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diag.codes import CODES, SEVERITY_RANK
from runner.errors import UserError

KEY = "callbacks.autotrainer"


@dataclass(frozen=True)
class OnlineRule:
    """``online.<CODE>``: the repair and its parameters; None where the table leaves a key out."""

    action: str
    max_times: int | None  # None: the policy's max_per_code
    after: tuple[str, ...]  # only as the aftermath of a repair of one of these codes; empty: always
    lr_factor: float | None
    clip: bool | None  # rollback: turn gradient clipping on if it was off
    to: str | None  # rollback: "baseline" puts back the weights the fit started from
    target_update_ratio: float | None  # raise_lr: raise enough to reach this |dw|/|w| per step
    max_factor: float | None  # raise_lr: the bound of a raise computed from the update ratio
    weight_decay: float | None
    weight_decay_factor: float | None
    dropout: float | None
    rollback: (
        bool | None
    )  # regularize: back to the best-validation weights first; lower_momentum: to a snapshot
    momentum: float | None  # lower_momentum: SGD momentum and Adam's beta1 down to this
    reset_state: (
        bool | None
    )  # lower_regularization/lower_momentum: clear the optimizer's moments and buffers
    # restore_lr: the rest of the schedule, so it does not cut the restored LR as early again
    min_gamma: (
        float | None
    )  # StepLR/MultiStepLR cut at most this hard (ExponentialLR: over the rest of the run)
    max_cuts: int | None  # StepLR: at most this many more cuts over the rest of the run
    min_patience: int | None  # ReduceLROnPlateau: wait at least this many epochs
    min_factor: float | None  # ReduceLROnPlateau: cut at most this hard
    # act on a warning only when validation accuracy fell at least this far below this attempt's best
    # (a critical finding always): a mild OVERFITTING warning on a run still improving is left alone
    min_val_acc_drop: float | None = None
    # act only once this attempt's best validation accuracy got this share of the way from chance to 1
    min_learned: float | None = None
    # a change on a warning only when the evidence held for this many validations in a row
    # (:func:`overfit_evidence.sustained`): the validation loss above its best by more than min_loss_rise,
    # the accuracy fallen beyond noise_z standard errors of the validation set, training accuracy at
    # least min_acc_gap above validation's
    sustained: int | None = None
    min_loss_rise: float | None = None
    noise_z: float | None = None
    min_acc_gap: float | None = None
    # rollback of an explosion seen only in the validation loss (:mod:`explosion_evidence`): held while the
    # training loss learns (its recent median under max_train_share of ln(k), not climbed back more than
    # max_train_rise of the way from its lowest to ln(k)), for at most hold_steps steps of the blow-up
    max_train_share: float | None = None
    max_train_rise: float | None = None
    hold_steps: int | None = None


@dataclass(frozen=True)
class RestartRule:
    """``restarts.<CODE>``: the config change a guided restart makes."""

    changes: dict[str, Any]  # nested, as in the YAML ({model: {init: he}})
    lr_factor: float | None  # None: the LR is left as this attempt ended it
    min_severity: str | None  # None: the policy's restart_min_severity
    capacity: Capacity | None = None  # widen/deepen model.hidden (only when the model is below it)
    # the changes made instead when the config already has ``changes`` (a bad init at scale 1: the
    # scheme, not the scale, is then the cause)
    otherwise: dict[str, Any] | None = None


CAPACITY_REQUIRED = ("min_width", "min_depth", "max_params")  # width is optional (min_width)


@dataclass(frozen=True)
class Capacity:
    """``restarts.<CODE>.capacity``: a model narrower or shallower than this is too small; the budget bounds the fix."""

    min_width: int
    min_depth: int
    max_params: int
    # the width a too-small model is widened to (None: min_width); within max_params
    width: int | None = None
    # the CNN's: a block of fewer channels than min_channels is small; widened so that block i has at
    # least channels * 2**i (None: min_channels), within max_params; None: CNN widths are left alone
    min_channels: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class SettingCauses:
    """``setting_causes``: settings of the run that explain a stalled or stuck run (see :mod:`setting_causes`)."""

    codes: frozenset[
        str
    ]  # the symptoms they explain: looked for before the table's repair of these
    min_clip: float  # gradient clipping below this max norm: turned off in place
    min_batch: int  # a batch below this, or one so large that an epoch is
    min_steps_per_epoch: int  # fewer steps than this: a restart at a batch of at most ``batch``
    batch: int
    # the restart's batch keeps at least this share of the run's steps (:mod:`restart_batch`)
    keep_steps: float
    max_depth_without_norm: (
        int  # an MLP deeper than this without batch norm: a restart with ``deep_changes``
    )
    deep_changes: dict[str, Any]
    deep_depth: int  # and cut to this many hidden layers of its widest width,
    deep_width: int  # widened to this (within capacity.max_params)
    min_bias_init: float  # model.bias_init below this: a restart with the model's default biases
    capacity: Capacity  # a hidden layer narrower than the classes: widened and deepened within this
    # dropout above this drops almost all signal: lowered in place to ``dropout``
    max_dropout: float
    dropout: float
    # weight decay above this pulls the weights to zero: lowered in place to ``weight_decay``
    max_weight_decay: float
    weight_decay: float
    # look for them at fit start too, before any symptom (they are read from the config)
    at_setup: bool


@dataclass(frozen=True)
class LrEvidence:
    """``lr_evidence``: a restart after an LR-caused fault carries an LR cut sized by the evidence.

    The weights' per-step update ratio ``|dw|/|w|`` grows with the LR (linearly for SGD's first step);
    when this attempt's peak was above ``max_update_ratio`` (healthy recipes stay under 0.21) and the
    restart is for one of ``codes`` or follows an LR repair, the new LR is cut by at least
    ``target_update_ratio / peak``."""

    codes: frozenset[str]
    max_update_ratio: float
    target_update_ratio: float
    # restarts that repair the scale of the weights or inputs: their big steps were the scale's, not the LR's
    scale_codes: frozenset[str]
    min_severity: str  # a restart for one of codes with the evidence: already at this severity
    # the peak that is evidence at a critical finding: the run is failing already, the evidence only says
    # the LR is the cause (a one-cycle CNN at 100x its LR, at chance, peaked at 0.28; healthy runs reach 0.26)
    critical_update_ratio: float
    # a restart the evidence allows at a warning only before this share of the run's steps
    warning_until: float


@dataclass(frozen=True)
class Healthy:
    """When an attempt counts as ``healthy``: it reaches what its run should reach (see :mod:`judgement`)."""

    below_best: (
        float  # final val accuracy at most this far below the best any attempt of the run reached
    )
    above_chance: float  # and at least this share of the way from chance (1/classes) to 1


@dataclass(frozen=True)
class RestoreBest:
    """Early stopping: which codes make a run that ends worse than its best be tested with the best weights."""

    codes: frozenset[str]
    min_rise: float
    unless_val_acc_drops: bool
    # only when the diagnosis at the end (the whole run seen) still names the code, or the policy acted on
    # it in this attempt: a loss that came back below its best was a swing, not overfitting
    named_at_end: bool
    # also a run this policy repaired (an action in the attempt, or its restart), whatever the code
    after_repair: bool


@dataclass(frozen=True)
class Settings:
    check_every: int
    min_severity: str
    restart_min_severity: str
    cooldown_steps: int
    max_actions: int
    max_per_code: int
    snapshot_every: int
    keep_snapshots: int
    rollback_margin: int
    clip_max_norm: float
    max_restarts: int
    time_budget: float
    plot_stopped_attempts: bool
    measure_steps: int
    # a raise_lr after this share of the run's steps is made as a guided restart at the raised LR (a
    # rollback to the fit start always is): in place it leaves the repaired LR too few steps
    late_lr_restart: float
    healthy: Healthy
    setting_causes: SettingCauses
    lr_evidence: LrEvidence
    restore_best: RestoreBest
    priority: tuple[str, ...]
    online: dict[str, OnlineRule]
    restarts: dict[str, RestartRule]

    @property
    def min_rank(self) -> int:
        return SEVERITY_RANK[self.min_severity]

    def restart_floor(self, code: str) -> int:
        """The severity a finding needs to restart the run: ``restarts.<CODE>.min_severity`` or ``restart_min_severity``
        (also for a code with no restart rule of its own, which only the LR evidence may restart)."""
        rule = self.restarts.get(code)
        severity = rule.min_severity if rule is not None else None
        return SEVERITY_RANK[self.restart_min_severity if severity is None else severity]

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig, key: str = KEY) -> Settings:
        """Typed settings from the YAML node (keys starting with ``_`` are Hydra's); UserError on a bad table."""
        spec = {k: v for k, v in _plain(node).items() if not str(k).startswith("_")}
        _check_keys(spec, [f.name for f in fields(cls)], key)
        restore = _plain(spec["restore_best"])
        _check_keys(restore, [f.name for f in fields(RestoreBest)], f"{key}.restore_best")
        healthy = _plain(spec["healthy"])
        _check_keys(healthy, [f.name for f in fields(Healthy)], f"{key}.healthy")
        causes = _plain(spec["setting_causes"])
        _check_keys(causes, [f.name for f in fields(SettingCauses)], f"{key}.setting_causes")
        _check_keys(
            _plain(causes["capacity"]),
            [f.name for f in fields(Capacity)],
            f"{key}.setting_causes.capacity",
            required=CAPACITY_REQUIRED,
        )
        evidence = _plain(spec["lr_evidence"])
        _check_keys(evidence, [f.name for f in fields(LrEvidence)], f"{key}.lr_evidence")
        online, restarts = _plain(spec["online"]), _plain(spec["restarts"])
        for where, codes in (
            ("setting_causes.codes", causes["codes"]),
            ("lr_evidence.codes", evidence["codes"]),
            ("lr_evidence.scale_codes", evidence["scale_codes"]),
        ):
            for code in codes or []:
                if code not in CODES:
                    raise UserError(
                        f"{key}.{where}: {code!r} is not a diagnosis code (see diag/codes.py)"
                    )
        validate_policy(
            online, restarts, spec["priority"] or [], key=key, restore_codes=restore["codes"] or []
        )
        for name in ("min_severity", "restart_min_severity"):
            _check_severity(spec[name], f"{key}.{name}")
        _check_scalars(spec, key)
        _check_severity(evidence["min_severity"], f"{key}.lr_evidence.min_severity")
        return cls(
            check_every=max(1, int(spec["check_every"])),
            min_severity=str(spec["min_severity"]),
            restart_min_severity=str(spec["restart_min_severity"]),
            cooldown_steps=int(spec["cooldown_steps"]),
            max_actions=int(spec["max_actions"]),
            max_per_code=int(spec["max_per_code"]),
            snapshot_every=max(1, int(spec["snapshot_every"])),
            keep_snapshots=max(1, int(spec["keep_snapshots"])),
            rollback_margin=int(spec["rollback_margin"]),
            clip_max_norm=float(spec["clip_max_norm"]),
            max_restarts=int(spec["max_restarts"]),
            time_budget=float(spec["time_budget"]),
            plot_stopped_attempts=bool(spec["plot_stopped_attempts"]),
            measure_steps=max(1, int(spec["measure_steps"])),
            late_lr_restart=float(spec["late_lr_restart"]),
            healthy=Healthy(
                below_best=float(healthy["below_best"]),
                above_chance=float(healthy["above_chance"]),
            ),
            setting_causes=SettingCauses(
                codes=frozenset(causes["codes"] or []),
                min_clip=float(causes["min_clip"]),
                min_batch=int(causes["min_batch"]),
                min_steps_per_epoch=int(causes["min_steps_per_epoch"]),
                batch=int(causes["batch"]),
                keep_steps=float(causes["keep_steps"]),
                max_depth_without_norm=int(causes["max_depth_without_norm"]),
                deep_changes=dict(causes["deep_changes"] or {}),
                deep_depth=int(causes["deep_depth"]),
                deep_width=int(causes["deep_width"]),
                min_bias_init=float(causes["min_bias_init"]),
                capacity=_given_capacity(causes["capacity"]),
                max_dropout=float(causes["max_dropout"]),
                dropout=float(causes["dropout"]),
                max_weight_decay=float(causes["max_weight_decay"]),
                weight_decay=float(causes["weight_decay"]),
                at_setup=bool(causes["at_setup"]),
            ),
            lr_evidence=LrEvidence(
                codes=frozenset(evidence["codes"] or []),
                max_update_ratio=float(evidence["max_update_ratio"]),
                target_update_ratio=float(evidence["target_update_ratio"]),
                scale_codes=frozenset(evidence["scale_codes"] or []),
                min_severity=str(evidence["min_severity"]),
                critical_update_ratio=float(evidence["critical_update_ratio"]),
                warning_until=float(evidence["warning_until"]),
            ),
            restore_best=RestoreBest(
                codes=frozenset(restore["codes"] or []),
                min_rise=float(restore["min_rise"]),
                unless_val_acc_drops=bool(restore["unless_val_acc_drops"]),
                named_at_end=bool(restore["named_at_end"]),
                after_repair=bool(restore["after_repair"]),
            ),
            priority=tuple(spec["priority"] or []),
            online={code: _online_rule(rule or {}) for code, rule in online.items()},
            restarts={
                code: RestartRule(
                    changes=dict((rule or {}).get("changes") or {}),
                    lr_factor=_number((rule or {}).get("lr_factor")),
                    min_severity=(rule or {}).get("min_severity"),
                    capacity=_capacity((rule or {}).get("capacity")),
                    otherwise=dict((rule or {}).get("otherwise") or {}) or None,
                )
                for code, rule in restarts.items()
            },
        )


def validate_policy(
    online: Mapping[str, Any],
    restarts: Mapping[str, Any],
    priority: Iterable[str],
    key: str = KEY,
    restore_codes: Iterable[str] = (),
) -> None:
    """A typo in the policy table is a config error, found before any work rather than mid-run."""
    from runner.autotrainer.actions import ACTIONS, ONLINE_ACTIONS

    for where, codes in (
        ("online", online),
        ("restarts", restarts),
        ("priority", priority),
        ("restore_best.codes", restore_codes),
    ):
        for code in codes:
            if code not in CODES:
                raise UserError(
                    f"{key}.{where}: {code!r} is not a diagnosis code (see diag/codes.py)"
                )
    for code, spec in online.items():
        spec = spec or {}
        action = spec.get("action")
        if action not in ONLINE_ACTIONS:
            raise UserError(
                f"{key}.online.{code}.action={action!r} is not valid: choose one of "
                f"{', '.join(ONLINE_ACTIONS)}"
            )
        _check_keys(
            spec, [f.name for f in fields(OnlineRule)], f"{key}.online.{code}", required=("action",)
        )
        if action == "regularize" and not any(spec.get(k) for k in ("weight_decay", "dropout")):
            raise UserError(f"{key}.online.{code}: regularize needs weight_decay and/or dropout")
        missing = [k for k in ACTIONS[action].needs(spec) if spec.get(k) is None]
        if missing:
            raise UserError(f"{key}.online.{code}: {action} needs {' and '.join(missing)}")
    for code, spec in restarts.items():
        spec = spec or {}
        _check_keys(
            spec, [f.name for f in fields(RestartRule)], f"{key}.restarts.{code}", required=()
        )
        if spec.get("min_severity") is not None:
            _check_severity(spec["min_severity"], f"{key}.restarts.{code}.min_severity")
        if spec.get("capacity") is not None:
            _check_keys(
                _plain(spec["capacity"]),
                [f.name for f in fields(Capacity)],
                f"{key}.restarts.{code}.capacity",
                required=CAPACITY_REQUIRED,
            )
        if not spec.get("changes") and not spec.get("capacity"):
            raise UserError(f"{key}.restarts.{code}: a restart needs changes and/or capacity")
    both = set(online) & set(restarts)
    if both:
        raise UserError(
            f"{key}: {', '.join(sorted(both))} is both in online and in restarts: choose one"
        )


def diagnostics_enabled(cfg: DictConfig) -> bool:
    """Whether ``callbacks.diagnostics`` builds the live diagnosis (what the AutoTrainer reads)."""
    return OmegaConf.select(cfg, "callbacks.diagnostics", default=None) is not None


def autotrainer_enabled(cfg: DictConfig) -> bool:
    """``autotrainer=default`` fills ``callbacks.autotrainer``; ``autotrainer=off`` sets it to null."""
    return OmegaConf.select(cfg, KEY, default=None) is not None


def check_config(cfg: DictConfig) -> None:
    """Before any work: the AutoTrainer acts on the live diagnosis, and its policy table must be valid."""
    if autotrainer_enabled(cfg) and not diagnostics_enabled(cfg):
        raise UserError(
            "autotrainer=default reads the live diagnosis but diag has no DiagnosticsHook "
            "(diag=off): use diag=default or diag=full, or autotrainer=off"
        )
    spec = OmegaConf.select(cfg, KEY, default=None)
    if spec is not None:
        Settings.from_config(spec)


def _whole(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# the policy's scalar settings: what each must be (a clip norm of -1 was used as given and the broken run
# it left was reported healthy; "abc" for a budget was a traceback)
SCALARS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    *(
        (name, _whole(1), "a whole number >= 1")
        for name in ("check_every", "snapshot_every", "keep_snapshots", "measure_steps")
    ),
    *(
        (name, _whole(0), "a whole number >= 0")
        for name in (
            "cooldown_steps",
            "max_actions",
            "max_per_code",
            "rollback_margin",
            "max_restarts",
        )
    ),
    ("clip_max_norm", _positive, "a positive number (the max_norm clipping is turned on with)"),
    ("time_budget", _positive, "a positive number (times one full attempt, all attempts together)"),
    ("late_lr_restart", lambda v: _positive(v) or v == 0, "a share of the run, a number >= 0"),
)


def _check_scalars(spec: Mapping[str, Any], key: str) -> None:
    """One UserError naming the first scalar setting that is not what it must be."""
    for name, ok, allowed in SCALARS:
        value = spec[name]
        if not ok(value):
            raise UserError(f"{key}.{name}={value!r} is not valid: {allowed}")


def _online_rule(spec: Mapping[str, Any]) -> OnlineRule:
    after = spec.get("after")
    max_times = spec.get("max_times")
    return OnlineRule(
        action=str(spec["action"]),
        max_times=None if max_times is None else int(max_times),
        after=tuple(after or ()),
        lr_factor=_number(spec.get("lr_factor")),
        clip=None if spec.get("clip") is None else bool(spec["clip"]),
        to=spec.get("to"),
        target_update_ratio=_number(spec.get("target_update_ratio")),
        max_factor=_number(spec.get("max_factor")),
        weight_decay=_number(spec.get("weight_decay")),
        weight_decay_factor=_number(spec.get("weight_decay_factor")),
        dropout=_number(spec.get("dropout")),
        rollback=None if spec.get("rollback") is None else bool(spec["rollback"]),
        momentum=_number(spec.get("momentum")),
        reset_state=None if spec.get("reset_state") is None else bool(spec["reset_state"]),
        min_gamma=_number(spec.get("min_gamma")),
        max_cuts=None if spec.get("max_cuts") is None else int(spec["max_cuts"]),
        min_patience=None if spec.get("min_patience") is None else int(spec["min_patience"]),
        min_factor=_number(spec.get("min_factor")),
        min_val_acc_drop=_number(spec.get("min_val_acc_drop")),
        min_learned=_number(spec.get("min_learned")),
        sustained=None if spec.get("sustained") is None else int(spec["sustained"]),
        min_loss_rise=_number(spec.get("min_loss_rise")),
        noise_z=_number(spec.get("noise_z")),
        min_acc_gap=_number(spec.get("min_acc_gap")),
        max_train_share=_number(spec.get("max_train_share")),
        max_train_rise=_number(spec.get("max_train_rise")),
        hold_steps=None if spec.get("hold_steps") is None else int(spec["hold_steps"]),
    )


def _capacity(spec: Any) -> Capacity | None:
    if spec is None:
        return None
    spec = _plain(spec)
    return Capacity(
        min_width=int(spec["min_width"]),
        min_depth=int(spec["min_depth"]),
        max_params=int(spec["max_params"]),
        width=int(spec["width"]) if spec.get("width") is not None else None,
        min_channels=int(spec["min_channels"]) if spec.get("min_channels") is not None else None,
        channels=int(spec["channels"]) if spec.get("channels") is not None else None,
    )


def _given_capacity(spec: Any) -> Capacity:
    capacity = _capacity(spec)
    assert capacity is not None  # _check_keys made sure it is there
    return capacity


def _check_keys(
    spec: Mapping[str, Any], known: list[str], key: str, required: Iterable[str] | None = None
) -> None:
    """Unknown keys are typos; missing ones have no default outside the YAML (``required``: all of ``known``)."""
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise UserError(
            f"{key}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"choose from {', '.join(known)}"
        )
    missing = [k for k in (known if required is None else required) if k not in spec]
    if missing:
        raise UserError(
            f"{key}: {', '.join(missing)} missing (runner/conf/autotrainer/default.yaml sets "
            f"{'it' if len(missing) == 1 else 'them'})"
        )


def _check_severity(severity: Any, key: str) -> None:
    if severity not in SEVERITY_RANK:
        raise UserError(
            f"{key}={severity!r} is not valid: choose one of {', '.join(SEVERITY_RANK)}"
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        container = OmegaConf.to_container(node, resolve=True)
        assert isinstance(container, dict)
        return {str(k): v for k, v in container.items()}
    return dict(node or {})
