"""The LR range test inside the runner: ``mode=lr_find`` and ``optimizer.lr=auto``.

Both work on the :class:`runner.train.Run` a training run builds (:func:`runner.train.build`):
:class:`diag.lr_finder.LearningRateFinder` sets each LR and the trainer's own
``training_step`` takes the step (the run's precision, AMP scaling and clipping), and the
model, optimizer, scaler and RNGs are put back as they were. What they write into the run
directory: ``lr_find.png``, ``lr_find.json`` and ``lr_find/*`` TensorBoard scalars in ``tb/``.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from diag.hooks import FitState
from diag.lr_finder import ALIASES, METHODS, LearningRateFinder, cycle_batches
from diag.training_state import apply, capture
from runner import distributed
from runner.errors import UserError

if TYPE_CHECKING:
    from runner.train import Run

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


def range_test(r: Run, finder: LearningRateFinder) -> dict[str, Any]:
    """Run ``finder`` with the trainer's own step on the training loader; everything is restored after.

    The schedule is left out (the finder sets each step's LR) and so are the hooks.
    """
    state, trainer = r.state, r.trainer
    saved = capture(state.model, state.optimizer, scaler=trainer.scaler, rng=True, generator=state.generator)
    probe = FitState(model=state.model, optimizer=state.optimizer)
    trainer.attach(state.model)
    batches = cycle_batches(r.train_loader)
    was_training = state.model.training
    state.model.train()

    def step(lr: float) -> float:
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        trainer.training_step(probe, x, y)
        return float(probe.loss)  # one host read per step: the stop rule needs it

    try:
        return finder.range_test(step)
    finally:
        apply(saved, state.model, state.optimizer, scaler=trainer.scaler, generator=state.generator)
        for p in state.model.parameters():
            p.grad = None
        state.model.train(was_training)
        trainer.reset_skips()


def find(r: Run) -> dict[str, Any]:
    """Run the range test, then write png, json and TensorBoard scalars into the run directory."""
    finder = build_finder(r.cfg)
    result = range_test(r, finder)
    r.run_dir.mkdir(parents=True, exist_ok=True)
    finder.plot(r.run_dir / "lr_find.png", result)
    (r.run_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _write_scalars(r.run_dir / "tb", result)
    log.info("LR finder: %d steps (%s); suggestions %s", result["num_steps_run"], result["stop_reason"],
             ", ".join(f"{k} {v:.3g}" for k, v in result["suggestions"].items()))
    return result


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


def auto_lr(r: Run) -> dict[str, Any]:
    """``optimizer.lr=auto``: rank 0 finds the LR and every rank sets it on its optimizer, data order in step."""
    result = None
    if r.rank == 0:
        found = find(r)
        log.info("optimizer.lr=auto: training with lr=%.3g (%s)", found["suggested_lr"], found["method"])
        result = {**summary(found), "plot": "lr_find.png", "data": "lr_find.json"}
    generator = r.state.generator
    result, data_rng = distributed.broadcast_object((result, generator.get_state() if generator else None))
    if generator is not None and data_rng is not None:
        generator.set_state(data_rng)
    for group in r.state.optimizer.param_groups:
        group["lr"] = result["suggested_lr"]
    return result


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
    from runner.train import build

    build_finder(cfg)  # a bad lr_find block fails before any data is loaded
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.optimizer.lr == "auto":  # the finder sets the LR itself; don't run it twice
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.optimizer.lr = DEFAULTS["min_lr"]
    r = build(cfg, run_dir)
    try:
        result = find(r)
    finally:
        r.state.events.close()
    lr = result["suggested_lr"]
    print(f"suggested learning rate: {lr:.3g} (method: {result['method']}; "
          + ", ".join(f"{k} {v:.3g}" for k, v in result["suggestions"].items()) + ")")
    print(f"range test: {result['num_steps_run']} steps from {result['min_lr']:.1e}, {result['stop_reason']}")
    print(f"plot: {run_dir / 'lr_find.png'}")
    print(f"train with it: {train_command(task_overrides(), lr)}")
    return float(lr)
