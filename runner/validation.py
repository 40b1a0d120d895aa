"""Checks the composed config before any work, so a typo costs a second, not a run.

Every check of a config value lives here and all of them run: the :class:`UserError` raised lists
every bad value at once, one line each naming the key, the bad value and what is allowed.
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


def validate(cfg: DictConfig) -> None:
    """Raise one :class:`UserError` listing every invalid value (a line each); return silently otherwise."""
    errors = config_errors(cfg)
    if errors:
        raise UserError("\n".join(errors))


def config_errors(cfg: DictConfig) -> list[str]:
    """One message per invalid value of the composed config, in the order of the config tree."""
    errors: list[str] = []

    def _check(
        cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str, optional: bool = False
    ) -> None:
        value = _get(cfg, key)
        if value is None and optional:
            return
        if not ok(value):
            errors.append(str(_fail(key, value, allowed)))

    _check(cfg, "mode", lambda v: v in MODES, f"choose one of {', '.join(MODES)}")
    _check(cfg, "seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    lr = _get(cfg, "optimizer.lr")
    if not (lr == "auto" or (_is_number(lr) and lr > 0)):
        errors.append(
            str(
                _fail(
                    "optimizer.lr",
                    lr,
                    "a positive number such as 1e-3, or 'auto' to run the LR finder first",
                )
            )
        )
    for key in ("optimizer.weight_decay", "optimizer.momentum"):
        _check(cfg, key, lambda v: _is_number(v) and v >= 0, "a number >= 0", optional=True)
    t = "trainer."
    _check(
        cfg,
        t + "max_epochs",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a whole number of epochs >= 1 (0 only builds and tests)",
    )
    _check(
        cfg,
        t + "max_steps",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "a positive whole number of steps, or null",
        optional=True,
    )
    _check(
        cfg,
        t + "precision",
        lambda v: str(v) in PRECISIONS,
        f"choose one of {', '.join(PRECISIONS)}",
    )
    _check(cfg, t + "device", lambda v: v in DEVICES, f"choose one of {', '.join(DEVICES)}")
    _check(
        cfg,
        t + "clip.max_norm",
        lambda v: _is_number(v) and v > 0,
        "a positive number, or null for no clipping",
        optional=True,
    )
    _check(
        cfg,
        t + "clip.value",
        lambda v: _is_number(v) and v > 0,
        "a positive number, or null for no clipping",
        optional=True,
    )
    _check(
        cfg,
        t + "log_every_n_steps",
        lambda v: isinstance(v, int) and v > 0,
        "a positive whole number",
    )
    _check(
        cfg,
        "data.batch_size",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "a positive whole number",
    )
    _check(
        cfg,
        "data.eval_batch_size",
        lambda v: isinstance(v, int) and v > 0,
        "a positive whole number",
        optional=True,
    )
    _check(
        cfg,
        "data.val_fraction",
        lambda v: _is_number(v) and 0 < v < 1,
        "a fraction strictly between 0 and 1",
    )
    _check(
        cfg,
        "data.label_noise",
        lambda v: _is_number(v) and 0 <= v <= 1,
        "a fraction between 0 and 1",
        optional=True,
    )
    _check(
        cfg,
        "data.subset",
        lambda v: isinstance(v, int) and v > 0,
        "a positive number of examples, or null",
        optional=True,
    )
    _check(
        cfg, "scheduler.interval", lambda v: v in ("step", "epoch"), "step or epoch", optional=True
    )
    _check(
        cfg,
        "data.augmentation",
        lambda v: v in ("none", "standard"),
        "choose none or standard",
        optional=True,
    )
    _check(
        cfg,
        "data.loader",
        lambda v: v in ("tensor", "dataloader"),
        "choose tensor (fast, on-device) or dataloader (torch DataLoader with workers)",
        optional=True,
    )
    from runner.lr_find import lr_find_errors  # the LR finder's block: checked even when training

    errors += lr_find_errors(cfg)
    from runner.autotrainer.settings import check_config

    try:
        check_config(cfg)
    except UserError as exc:
        errors.append(str(exc))
    return errors
