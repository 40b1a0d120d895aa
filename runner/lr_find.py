"""The LR range test inside the runner: ``mode=lr_find`` and ``optimizer.lr=auto``.

Both build the configured data, model and optimizer exactly as a training run
would (:func:`runner.task.setup`), run :class:`diag.lr_finder.LearningRateFinder`
on the training loader with the run's precision and clipping, and leave the
model and optimizer as they were. What they write into the run directory:
``lr_find.png``, ``lr_find.json`` and ``lr_find/*`` TensorBoard scalars in ``tb/``.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict

from diag.lr_finder import ALIASES, METHODS, LearningRateFinder
from runner.errors import UserError

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"min_lr": 1e-7, "max_lr": 10.0, "num_steps": 100, "method": "minimum/10",
                            "smooth": 0.98, "diverge_factor": 4.0}


def _num(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"lr_find.{key}={value!r} is not valid: a number (e.g. `python -m runner lr_find.{key}=...`)")
    return float(value)


def build_finder(cfg: DictConfig) -> LearningRateFinder:
    """The finder from the ``lr_find`` config block, with every bad value named as a :class:`UserError`."""
    node = {**DEFAULTS, **(OmegaConf.to_container(cfg.lr_find, resolve=True) if cfg.get("lr_find") else {})}
    min_lr, max_lr = _num("min_lr", node["min_lr"]), _num("max_lr", node["max_lr"])
    if not 0 < min_lr < max_lr:
        raise UserError(f"lr_find.min_lr={min_lr:g} and lr_find.max_lr={max_lr:g}: need 0 < min_lr < max_lr")
    steps = node["num_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 10:
        raise UserError(f"lr_find.num_steps={steps!r} is not valid: a whole number >= 10 (100 is typical)")
    method = str(node["method"])
    if ALIASES.get(method, method) not in METHODS:
        raise UserError(f"lr_find.method={method!r} is not valid: choose one of valley, steepest, minimum/10")
    smooth = _num("smooth", node["smooth"])
    if not 0 <= smooth < 1:
        raise UserError(f"lr_find.smooth={smooth:g} is not valid: an EMA coefficient in [0, 1), e.g. 0.98")
    factor = _num("diverge_factor", node["diverge_factor"])
    if factor <= 1:
        raise UserError(f"lr_find.diverge_factor={factor:g} is not valid: a number > 1, e.g. 4")
    return LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_steps=steps, method=method, smooth=smooth,
                              diverge_factor=factor)


def find(cfg: DictConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader: Any,
         device: torch.device, run_dir: Path) -> tuple[LearningRateFinder, dict[str, Any]]:
    """Run the range test with the run's precision and clipping, then write png, json and TensorBoard scalars."""
    from runner.trainer import AUTOCAST_DTYPES

    finder = build_finder(cfg)
    precision = str(cfg.trainer.precision)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
    clip = OmegaConf.select(cfg, "trainer.clip.max_norm", default=None)
    result = finder.range_test_torch(
        model, optimizer, train_loader,
        loss_fn=lambda logits, y: F.cross_entropy(logits.float(), y),
        scaler=scaler, autocast_dtype=AUTOCAST_DTYPES[precision], clip_max_norm=clip,
    )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finder.plot(run_dir / "lr_find.png", result)
    (run_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _write_scalars(run_dir / "tb", result)
    log.info("LR finder: %d steps (%s); suggestions %s", result["num_steps_run"], result["stop_reason"],
             ", ".join(f"{k} {v:.3g}" for k, v in result["suggestions"].items()))
    return finder, result


def _write_scalars(tb_dir: Path, result: dict[str, Any]) -> None:
    """``lr_find/loss``, ``lr_find/smoothed_loss`` and ``lr_find/lr`` against the finder's step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tb_dir))
    try:
        for step, (lr, raw, smooth) in enumerate(zip(result["lrs"], result["losses"], result["smoothed_losses"])):
            writer.add_scalar("lr_find/loss", raw, step)
            writer.add_scalar("lr_find/smoothed_loss", smooth, step)
            writer.add_scalar("lr_find/lr", lr, step)
        writer.add_scalar("lr_find/suggested_lr", result["suggested_lr"], 0)
    finally:
        writer.close()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What ``report.json`` keeps of a range test (the curves stay in ``lr_find.json``)."""
    return {k: result[k] for k in ("suggested_lr", "method", "suggestions", "stop_reason", "num_steps_run",
                                   "min_lr", "max_lr")}


def auto_lr(cfg: DictConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader: Any,
            device: torch.device, run_dir: Path) -> dict[str, Any]:
    """``optimizer.lr=auto``: find the LR (model and optimizer restored) and return it for the caller to apply."""
    _, result = find(cfg, model, optimizer, train_loader, device, run_dir)
    log.info("optimizer.lr=auto: training with lr=%.3g (%s)", result["suggested_lr"], result["method"])
    return {**summary(result), "plot": "lr_find.png", "data": "lr_find.json"}


def task_overrides() -> list[str]:
    """The command-line overrides of this run, when Hydra is running it (empty otherwise)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def train_command(overrides: list[str], lr: float) -> str:
    """``python -m runner <same overrides minus mode and optimizer.lr> optimizer.lr=<lr>``, shell-quoted."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("mode", "optimizer.lr")]
    return " ".join(["python -m runner", *(shlex.quote(o) for o in keep), f"optimizer.lr={lr:.3g}"])


def run(cfg: DictConfig, run_dir: Path) -> float:
    """``python -m runner mode=lr_find``: range test on the configured setup; prints and returns the suggestion."""
    from runner.task import setup

    build_finder(cfg)  # a bad lr_find block fails before any data is loaded
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.optimizer.lr == "auto":  # the finder sets the LR itself; don't run it twice
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.optimizer.lr = DEFAULTS["min_lr"]
    parts = setup(cfg, run_dir)
    state = parts["state"]
    try:
        _, result = find(cfg, state.model, state.optimizer, parts["train_loader"], parts["device"], run_dir)
    finally:
        state.events.close()
    lr = result["suggested_lr"]
    print(f"suggested learning rate: {lr:.3g} (method: {result['method']}; "
          + ", ".join(f"{k} {v:.3g}" for k, v in result["suggestions"].items()) + ")")
    print(f"range test: {result['num_steps_run']} steps from {result['min_lr']:.1e}, {result['stop_reason']}")
    print(f"plot: {run_dir / 'lr_find.png'}")
    print(f"train with it: {train_command(task_overrides(), lr)}")
    return float(lr)
