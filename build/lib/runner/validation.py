"""Checks the composed config before any work, so a typo costs a second, not a run.

Each failure is a :class:`UserError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.errors import UserError

PRECISIONS = ("32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MODES = ("train", "lr_find")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(key: str, value: Any, allowed: str) -> UserError:
    return UserError(f"{key}={value!r} is not valid: {allowed} (e.g. `python -m runner {key}=...`)")


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str, optional: bool = False) -> None:
    value = _get(cfg, key)
    if value is None and optional:
        return
    if not ok(value):
        raise _fail(key, value, allowed)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`UserError` for the first invalid value found; return silently otherwise."""
    _check(cfg, "mode", lambda v: v in MODES, f"choose one of {', '.join(MODES)}")
    _check(cfg, "seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    lr = _get(cfg, "optimizer.lr")
    if not (lr == "auto" or (_is_number(lr) and lr > 0)):
        raise _fail("optimizer.lr", lr, "a positive number such as 1e-3, or 'auto' to run the LR finder first")
    for key in ("optimizer.weight_decay", "optimizer.momentum"):
        _check(cfg, key, lambda v: _is_number(v) and v >= 0, "a number >= 0", optional=True)
    t = "trainer."
    _check(cfg, t + "max_epochs", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           "a whole number of epochs >= 1 (0 only builds and tests)")
    _check(cfg, t + "max_steps", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
           "a positive whole number of steps, or null", optional=True)
    _check(cfg, t + "precision", lambda v: str(v) in PRECISIONS, f"choose one of {', '.join(PRECISIONS)}")
    _check(cfg, t + "device", lambda v: v in DEVICES, f"choose one of {', '.join(DEVICES)}")
    _check(cfg, t + "clip.max_norm", lambda v: _is_number(v) and v > 0, "a positive number, or null for no clipping",
           optional=True)
    _check(cfg, t + "clip.value", lambda v: _is_number(v) and v > 0, "a positive number, or null for no clipping",
           optional=True)
    _check(cfg, t + "log_every_n_steps", lambda v: isinstance(v, int) and v > 0, "a positive whole number")
    _check(cfg, "data.batch_size", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
           "a positive whole number")
    _check(cfg, "data.eval_batch_size", lambda v: isinstance(v, int) and v > 0, "a positive whole number",
           optional=True)
    _check(cfg, "data.val_fraction", lambda v: _is_number(v) and 0 < v < 1, "a fraction strictly between 0 and 1")
    _check(cfg, "data.label_noise", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction between 0 and 1",
           optional=True)
    _check(cfg, "data.subset", lambda v: isinstance(v, int) and v > 0, "a positive number of examples, or null",
           optional=True)
    interval = _get(cfg, "scheduler.interval")
    if interval not in (None, "step", "epoch"):
        raise _fail("scheduler.interval", interval, "step or epoch")
