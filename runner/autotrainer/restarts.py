"""Guided restarts: the config change a finding asks for, and when a restart is refused."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from runner.autotrainer.settings import Capacity, RestartRule, Settings

MISSING = "__missing__"


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


def mlp_params(inputs: int, hidden: list[int], classes: int) -> int:
    """Weights and biases of an MLP ``inputs -> hidden... -> classes`` (batch norm left out: 2 per unit)."""
    widths = [inputs, *hidden, classes]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def cnn_params(in_channels: int, channels: list[int], classes: int) -> int:
    """Weights and biases of the runner's CNN: a 3x3 convolution per block, then a linear classifier."""
    widths = [in_channels, *channels]
    convs = sum((9 * a + 1) * b for a, b in zip(widths, widths[1:]))
    return convs + (widths[-1] + 1) * classes


def capacity_fix(cfg: DictConfig | None, cap: Capacity) -> dict[str, Any]:
    """``model.hidden`` widened to ``width`` (or ``min_width``) and deepened to ``min_depth`` when it is
    below either (narrower than ``min_width``, shallower than ``min_depth``), within ``max_params`` (a
    narrower fix if the full one is over it); a CNN's ``model.channels`` likewise (:func:`channels_fix`);
    ``{}`` when the model is not small (capacity is not the cause) or has neither (a ResNet)."""
    if cfg is None:
        return {}
    hidden = OmegaConf.select(cfg, "model.hidden", default=None)
    if hidden is None:
        return channels_fix(cfg, cap)
    widths = [int(h) for h in hidden]
    if widths and min(widths) >= cap.min_width and len(widths) >= cap.min_depth:
        return {}
    inputs = int(cfg.data.in_channels) * int(cfg.data.image_size) ** 2
    classes = int(cfg.data.num_classes)
    width = cap.width or cap.min_width
    while width >= 1:
        new = [max(w, width) for w in widths] + [width] * max(0, cap.min_depth - len(widths))
        if mlp_params(inputs, new, classes) <= cap.max_params:
            return {} if new == widths else {"model.hidden": new}
        width //= 2
    return {}


def channels_fix(cfg: DictConfig, cap: Capacity) -> dict[str, Any]:
    """A CNN with a block narrower than ``min_channels``, widened so block i has at least
    ``channels * 2**i`` (the runner's CNN doubles them block by block: [32, 64] by default), halving that
    base until the model fits ``max_params``; ``{}`` for a CNN that is not small, or without the settings.
    Depth is left alone: each block halves the image."""
    channels = OmegaConf.select(cfg, "model.channels", default=None)
    if channels is None or cap.min_channels is None:
        return {}
    widths = [int(c) for c in channels]
    if not widths or min(widths) >= cap.min_channels:
        return {}
    in_channels, classes = int(cfg.data.in_channels), int(cfg.data.num_classes)
    base = cap.channels or cap.min_channels
    while base >= 1:
        new = [max(w, base * 2**i) for i, w in enumerate(widths)]
        if cnn_params(in_channels, new, classes) <= cap.max_params:
            return {} if new == widths else {"model.channels": new}
        base //= 2
    return {}


def config_fix(cfg: DictConfig | None, rule: RestartRule) -> tuple[dict[str, Any], dict[str, Any]]:
    """The changes the rule wants, and those of them this config does not already have (the fix); the
    rule's ``otherwise`` when the config already has all of ``changes``."""
    wanted = flatten(rule.changes)
    if rule.capacity is not None:
        wanted.update(capacity_fix(cfg, rule.capacity))
    fix = _missing(cfg, wanted)
    if not fix and rule.otherwise:
        wanted = flatten(rule.otherwise)
        fix = _missing(cfg, wanted)
    return wanted, fix


def _missing(cfg: DictConfig | None, wanted: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``wanted`` whose value this config has otherwise (keys it lacks are left out)."""
    return {
        key: value
        for key, value in wanted.items()
        if cfg is not None and OmegaConf.select(cfg, key, default=MISSING) not in (MISSING, value)
    }


def carried_over(
    cfg: DictConfig | None,
    fix: dict[str, Any],
    rule: RestartRule,
    lr_scale: float,
    clip: float | None,
    causes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fix plus what this attempt learned: its LR scale (times the rule's factor), clipping, and the
    repairs of the causes it found (``causes``: config keys, e.g. a weight decay it lowered online), so
    the new attempt does not start again with the setting that caused them."""
    changes = {
        k: v
        for k, v in (causes or {}).items()
        if cfg is not None and OmegaConf.select(cfg, k, default=MISSING) not in (MISSING, v)
    }
    changes.update(fix)
    lr_factor = rule.lr_factor or 1.0
    base_lr = OmegaConf.select(cfg, "optimizer.lr") if cfg is not None else None
    if isinstance(base_lr, (int, float)) and (lr_factor != 1.0 or lr_scale != 1.0):
        changes["optimizer.lr"] = float(f"{base_lr * lr_scale * lr_factor:.6g}")
    if clip is not None:
        changes["trainer.clip.max_norm"] = clip
    return changes


def refusal(
    settings: Settings,
    cfg: DictConfig | None,
    fix: dict[str, Any],
    wanted: dict[str, Any],
    *,
    attempt: int,
    progress: float,
    session_started: float,
    attempt_started: float,
    fit_started: float,
) -> str | None:
    """Why no restart is made (None: it is): no config, nothing to change, restarts or time used up.

    ``progress`` is the share of the fit done; with the set-up time it estimates one attempt's cost.
    """
    if cfg is None:
        return "no config to restart from (the hook was not built by runner.train.run)"
    if not fix:
        keys = ", ".join(wanted) or "nothing"
        return f"the fix ({keys}) is already in this config or does not apply to this model"
    if attempt >= settings.max_restarts:
        return f"the limit of {settings.max_restarts} restarts is reached"
    now = time.perf_counter()
    setup_time = max(0.0, fit_started - attempt_started)
    # set-up, then the fit at this pace
    attempt_time = setup_time + (now - fit_started) / max(progress, 1e-3)
    spent = now - session_started
    if spent + attempt_time > settings.time_budget * attempt_time:
        return (
            f"another attempt (~{attempt_time:.0f}s) would exceed the time budget of "
            f"{settings.time_budget:g}x one attempt ({spent:.0f}s spent)"
        )
    return None
