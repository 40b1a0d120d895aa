"""Checks the composed config before any work, so a typo costs a second, not a run.

Every check of a config value lives here and all of them run: the :class:`UserError` raised lists
every bad value at once, one line each naming the key, the bad value and what is allowed. Values
are checked by type and range; the optimizer and the LR schedule are then built on a dummy
parameter, so torch's own constructors judge their hyperparameters before any data loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diag.lr_rules import canonical_method
from runner.errors import UserError

PRECISIONS = ("32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MODES = ("train", "lr_find")
# what the loop puts in state.metrics before an epoch-end scheduler steps
MONITORABLE = ("val/loss", "val/acc", "train/loss", "train/acc")
SEED_LIMIT = 2**63  # torch.manual_seed takes a signed 64-bit integer
MAX_THREADS = (
    1024  # far beyond any CPU's cores: a typo (1000000) ran out of memory building the data
)

Check = Callable[[Any], bool]


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_ints(v: Any) -> bool:
    """A non-empty list of positive whole numbers (a YAML list arrives as a ListConfig)."""
    return (
        (isinstance(v, list) or OmegaConf.is_list(v))
        and len(v) > 0
        and all(_is_int(x) and x > 0 for x in v)
    )


def _fail(key: str, value: Any, allowed: str) -> UserError:
    """The one line for a bad value; an ``allowed`` that names its own command keeps it as the example."""
    example = "" if "python -m" in allowed else f" (e.g. `python -m runner {key}=...`)"
    return UserError(f"{key}={value!r} is not valid: {allowed}{example}")


# (key, test, what is allowed, may be null); a key the config does not have is not checked
RULES: tuple[tuple[str, Check, str, bool], ...] = (
    (
        "mode",
        lambda v: v in MODES,
        f"choose one of {', '.join(MODES)} (e.g. `python -m runner mode={MODES[-1]}`); to look at the "
        "data: `python -m runner.check_data`",
        False,
    ),
    (
        "seed",
        lambda v: _is_int(v) and 0 <= v < SEED_LIMIT,
        "a whole number from 0 to 2**63-1",
        False,
    ),
    ("objective_penalty", _is_number, "a number (what a diverged run returns to a sweeper)", False),
    ("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0", True),
    ("optimizer.momentum", lambda v: _is_number(v) and v >= 0, "a number >= 0", True),
    (
        "trainer.max_epochs",
        lambda v: _is_int(v) and v >= 0,
        "a whole number of epochs >= 1 (0 only builds and tests)",
        False,
    ),
    (
        "trainer.max_steps",
        lambda v: _is_int(v) and v > 0,
        "a positive whole number of steps, or null",
        True,
    ),
    (
        "trainer.precision",
        lambda v: str(v) in PRECISIONS,
        f"choose one of {', '.join(PRECISIONS)}",
        False,
    ),
    ("trainer.device", lambda v: v in DEVICES, f"choose one of {', '.join(DEVICES)}", False),
    (
        "trainer.clip.max_norm",
        lambda v: _is_number(v) and v > 0,
        "a positive number, or null for no clipping",
        True,
    ),
    (
        "trainer.clip.value",
        lambda v: _is_number(v) and v > 0,
        "a positive number, or null for no clipping",
        True,
    ),
    ("trainer.log_every_n_steps", lambda v: _is_int(v) and v > 0, "a positive whole number", False),
    (
        "trainer.threads",
        lambda v: _is_int(v) and 0 < v <= MAX_THREADS,
        f"a whole number of CPU threads from 1 to {MAX_THREADS}, or null for torch's default (one per core)",
        True,
    ),
    (
        "trainer.max_consecutive_skips",
        lambda v: _is_int(v) and v >= 0,
        "a whole number >= 0 (0: never stop for skipped steps)",
        True,
    ),
    ("data.batch_size", lambda v: _is_int(v) and v > 0, "a positive whole number", False),
    ("data.num_classes", lambda v: _is_int(v) and v >= 2, "a whole number of classes >= 2", False),
    ("data.in_channels", lambda v: _is_int(v) and v >= 1, "a positive whole number", False),
    (
        "data.image_size",
        lambda v: _is_int(v) and v >= 1,
        "a positive whole number of pixels",
        False,
    ),
    *(
        (
            f"data.{key}",
            lambda v: _is_int(v) and 0 <= v < SEED_LIMIT,
            "a whole number from 0 to 2**63-1",
            False,
        )
        for key in ("split_seed", "noise_seed")
    ),
    ("data.eval_batch_size", lambda v: _is_int(v) and v > 0, "a positive whole number", True),
    (
        "data.val_fraction",
        lambda v: _is_number(v) and 0 < v < 1,
        "a fraction strictly between 0 and 1",
        False,
    ),
    (
        "data.test_fraction",
        lambda v: _is_number(v) and 0 < v < 1,
        "a fraction strictly between 0 and 1",
        True,
    ),
    (
        "data.label_noise",
        lambda v: _is_number(v) and 0 <= v <= 1,
        "a fraction between 0 and 1",
        True,
    ),
    ("data.subset", lambda v: _is_int(v) and v > 0, "a positive number of examples, or null", True),
    ("data.num_workers", lambda v: _is_int(v) and v >= 0, "a whole number >= 0", True),
    ("data.augmentation", lambda v: v in ("none", "standard"), "choose none or standard", True),
    (
        "data.loader",
        lambda v: v in ("tensor", "dataloader"),
        "choose tensor (fast, on-device) or dataloader (torch DataLoader with workers)",
        True,
    ),
    (
        "model.hidden",
        _positive_ints,
        "a list of positive layer widths, e.g. [256,256]",
        True,
    ),
    (
        "model.channels",
        _positive_ints,
        "a list of positive channel counts, e.g. [32,64]",
        True,
    ),
    (
        "model.bias_init",
        _is_number,
        "a number every bias starts at, or null (PyTorch's default)",
        True,
    ),
    (
        "model.init_std",
        lambda v: _is_number(v) and v >= 0,
        "a number >= 0 (the std of model.init=normal)",
        False,
    ),
    (
        "model.init_scale",
        lambda v: _is_number(v) and v >= 0,
        "a number >= 0 (multiplies the initial weights)",
        False,
    ),
    (
        "data.mean",
        lambda v: (isinstance(v, list) or OmegaConf.is_list(v)) and all(_is_number(x) for x in v),
        "a list with one number per channel ([0.5]), or null to measure it on the training split",
        True,
    ),
    (
        "data.std",
        lambda v: (
            (isinstance(v, list) or OmegaConf.is_list(v))
            and all(_is_number(x) and x > 0 for x in v)
        ),
        "a list with one positive number per channel ([0.25]), or null to measure it",
        True,
    ),
    ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a probability in [0, 1)", True),
    ("scheduler.interval", lambda v: v in ("step", "epoch"), "step or epoch", True),
    (
        "scheduler.lr_scheduler.warmup_steps",
        lambda v: _is_number(v) and v >= 0,
        "a number of steps >= 0, or a fraction of the run below 1",
        True,
    ),
    (
        "callbacks.tensorboard.flush_secs",
        lambda v: _is_number(v) and v >= 0,
        "seconds >= 0 (0 flushes the event files every epoch)",
        True,
    ),
    (
        "callbacks.epoch_jsonl.flush_secs",
        lambda v: _is_number(v) and v >= 0,
        "seconds >= 0 (0 flushes the JSONL logs every epoch)",
        True,
    ),
    *(
        (
            f"callbacks.diagnostics.{key}",
            lambda v: _is_int(v) and v > 0,
            f"a positive whole number of steps ({what}); diag=off turns the live diagnosis off",
            True,
        )
        for key, what in (
            ("scalar_every", "the loss and gradient norm are read every this many, 10 is typical"),
            ("layer_every", "the layers are sampled every this many, 25 is typical"),
            (
                "diagnose_every",
                "the rules run this many steps after the last diagnosis, 50 is typical",
            ),
            (
                "dead_window",
                "layer samples a unit must stay silent for to count dead, 4 is typical",
            ),
        )
    ),
    (
        "callbacks.diagnostics.diagnose_gap",
        lambda v: _is_number(v) and 0 <= v < 1,
        "a share of the steps so far in [0, 1) (0.02: on a long run the rules run at most once per 2% of it)",
        True,
    ),
    (
        "callbacks.diagnostics.histogram_every",
        lambda v: _is_int(v) and v >= 0,
        "a whole number of steps >= 0 (0: no histograms)",
        True,
    ),
    (
        "callbacks.checkpoint.every_n_steps",
        lambda v: _is_int(v) and v > 0,
        "a positive whole number of steps, or null",
        True,
    ),
    (
        "callbacks.stop_on.behind",
        lambda v: _is_number(v) and 0 <= v < 1,
        "a share of val accuracy in [0, 1) (0.02: a trial that cannot end within 2 points of the "
        "sweep's best finished trial stops)",
        False,
    ),
    *(
        (
            f"callbacks.stop_on.{key}",
            lambda v: _is_number(v) and 0 <= v <= 1,
            "a share of the run, 0 to 1",
            False,
        )
        for key in ("grace", "early_grace")
    ),
    (
        "callbacks.checkpoint.monitor",
        lambda v: v in MONITORABLE,
        f"choose one of {', '.join(MONITORABLE)} (best.pt keeps its lowest loss or highest accuracy)",
        False,
    ),
    (
        "callbacks.stop_on.clear_blowup",
        lambda v: _is_number(v) and v > 1,
        "a number > 1 (times the chance loss: a training loss blown up that far stops the run)",
        False,
    ),
    (
        "callbacks.stop_on.need",
        lambda v: _is_number(v) and v > 0,
        "a positive number (of the chance loss a stuck run must be able to get below)",
        False,
    ),
    (
        "callbacks.stop_on.projection_window",
        lambda v: _is_int(v) and v >= 1,
        "a whole number of validations >= 1",
        False,
    ),
    (
        "callbacks.stop_on.projection_pace",
        lambda v: _is_number(v) and v > 0,
        "a positive number",
        False,
    ),
    (
        "callbacks.stop_on.behind_pace",
        lambda v: _is_number(v) and v >= 1,
        "a number >= 1 (how many times its own pace a trial is granted for the rest of its budget)",
        False,
    ),
)
# switches: YAML would read "maybe" as a string, and a string is not a yes or a no
BOOLEANS = (
    "trainer.deterministic",
    "trainer.progress",
    "trainer.nonfinite_guard",
    "trainer.channels_last",
    "trainer.compile",
    "data.normalize",
    "data.download",
    "data.cache",
    "callbacks.stop_on.behind_sweep",
    "model.batchnorm",  # "no" is a non-empty string: it turned batch norm on
    "model.zero_init_residual",
    "optimizer.nesterov",
    "optimizer.fused",
)


def validate(cfg: DictConfig, build: bool = True) -> None:
    """Raise one :class:`UserError` listing every invalid value (a line each); return silently otherwise.

    ``build=False`` leaves out what only torch can check (:func:`build_errors`): the entry point checks
    the values first, before torch is imported, so a mistyped value is said at once.
    """
    errors = config_errors(cfg, build)
    if errors:
        raise UserError("\n".join(errors))


def config_errors(cfg: DictConfig, build: bool = True) -> list[str]:
    """One message per invalid value of the composed config, in the order of the config tree."""
    try:
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation, before any value is read
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "the config"
        reason = str(exc).strip().splitlines()[0]
        return [f"{key}: {reason}: fix or remove that interpolation"]
    errors: list[str] = []
    for key, ok, allowed, optional in RULES:
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            continue
        value = _get(cfg, key)
        if not (value is None and optional) and not ok(value):
            errors.append(str(_fail(key, value, allowed)))
    for key in BOOLEANS:
        value = OmegaConf.select(cfg, key, default=False)
        if not isinstance(value, bool):
            errors.append(str(_fail(key, value, "true or false")))
    lr = _get(cfg, "optimizer.lr")
    if not (lr == "auto" or (_is_number(lr) and lr > 0)):
        allowed = "a positive number such as 1e-3, or 'auto' to run the LR finder first"
        errors.append(str(_fail("optimizer.lr", lr, allowed)))
    stop_on = _get(cfg, "stop_on")
    if stop_on is not None and stop_on not in ("warning", "critical"):
        errors.append(str(_fail("stop_on", stop_on, "warning, critical, or null (never stop)")))
    monitor = _get(cfg, "scheduler.monitor")
    if monitor is not None and monitor not in MONITORABLE:
        errors.append(str(_fail("scheduler.monitor", monitor, f"one of {', '.join(MONITORABLE)}")))
    errors += lr_find_errors(cfg)  # the LR finder's block: checked even when training
    from runner.autotrainer.settings import check_config

    try:
        check_config(cfg)
    except UserError as exc:
        errors.append(str(exc))
    if build and not errors:  # the constructors only see values that passed the checks above
        errors += build_errors(cfg)
    return errors


def lr_find_errors(cfg: DictConfig) -> list[str]:
    """Every bad value of the ``lr_find`` block, one message each (checked before any work)."""
    node = OmegaConf.to_container(cfg.lr_find, resolve=True) if cfg.get("lr_find") else {}
    assert isinstance(node, dict)
    errors = []
    for key in ("min_lr", "max_lr", "smooth", "diverge_factor"):
        if not _is_number(node.get(key)):
            errors.append(
                f"lr_find.{key}={node.get(key)!r} is not valid: a number "
                f"(e.g. `python -m runner lr_find.{key}=...`)"
            )
    if not errors:
        if not 0 < node["min_lr"] < node["max_lr"]:
            errors.append(
                f"lr_find.min_lr={node['min_lr']:g} and lr_find.max_lr={node['max_lr']:g}: "
                "need 0 < min_lr < max_lr"
            )
        if not 0 <= node["smooth"] < 1:
            errors.append(
                f"lr_find.smooth={node['smooth']:g} is not valid: an EMA coefficient in [0, 1), e.g. 0.98"
            )
        if node["diverge_factor"] <= 1:
            errors.append(
                f"lr_find.diverge_factor={node['diverge_factor']:g} is not valid: a number > 1, e.g. 4"
            )
    steps = node.get("num_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 10:
        errors.append(
            f"lr_find.num_steps={steps!r} is not valid: a whole number >= 10 (100 is typical)"
        )
    count = node.get("candidates")
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        errors.append(
            f"lr_find.candidates={count!r} is not valid: a whole number >= 2 (5 is typical; "
            "lr_find.verify_steps=0 turns the check off)"
        )
    verify_steps = node.get("verify_steps")
    if isinstance(verify_steps, bool) or not isinstance(verify_steps, int) or verify_steps < 0:
        errors.append(
            f"lr_find.verify_steps={verify_steps!r} is not valid: a whole number >= 0 "
            "(steps per trial of the check, 100 is typical; 0 turns it off)"
        )
    method = str(node.get("method"))
    try:
        canonical_method(method)
    except ValueError:
        errors.append(
            f"lr_find.method={method!r} is not valid: choose one of auto (descent for SGD, "
            "minimum/5 otherwise), descent, valley, steepest, minimum/10, minimum/5, minimum/2, minimum/1"
        )
    return errors


def build_errors(cfg: DictConfig) -> list[str]:
    """Build the optimizer and LR schedule on a dummy parameter and step them a few times: what torch
    refuses (Adam's betas, Nesterov without momentum, a zero step size), named with the group to fix."""
    import torch
    from hydra.utils import instantiate

    from runner.schedulers import build_scheduler

    param = torch.nn.Parameter(torch.zeros(2))
    lr = 1e-3 if cfg.optimizer.lr == "auto" else cfg.optimizer.lr
    # an LR schedule reads optimizer.lr (OneCycle's max_lr): give it the number the run will use
    resolved = OmegaConf.merge(cfg, {"optimizer": {"lr": lr}})
    assert isinstance(resolved, DictConfig)
    try:
        optimizer = instantiate(cfg.optimizer, lr=lr)(params=[param])
    except (ValueError, TypeError, RuntimeError) as exc:
        return [f"optimizer: {_reason(exc)}: fix the optimizer.* values"]
    errors = []
    try:
        scheduler = build_scheduler(
            resolved.get("scheduler"), optimizer, 10, max(1, int(cfg.trainer.max_epochs))
        )
        for _ in range(3 if int(cfg.trainer.max_epochs) > 0 else 0):  # 0 epochs never steps it
            optimizer.step()
            if scheduler is not None:
                scheduler.step(1.0) if _get(cfg, "scheduler.monitor") else scheduler.step()
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:
        errors.append(f"scheduler: {_reason(exc)}: fix the scheduler.lr_scheduler.* values")
    return errors


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
