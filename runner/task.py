"""One run, start to finish: setup → fit → test → report (torchtune's recipe shape).

:func:`run` is what the Hydra entry point calls; tests call it too, with a
composed config and a run directory in ``tmp_path``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diag.hooks import EventLog, FitState, Hook, HookList
from diag.report import build_report, write_report
from runner import distributed
from runner.checkpoint import CheckpointHook, load_checkpoint
from runner.devices import check_precision, resolve_device, seed_everything
from runner.errors import Interrupted, UserError
from runner.hparams import log_hparams
from runner.interrupts import exit_code, stop_on_signals
from runner.resume import find_resume_checkpoint, previous_unfinished_run, resume_command
from runner.schedulers import build_scheduler
from runner.trainer import Trainer
from runner.validation import validate

log = logging.getLogger(__name__)


def build_hooks(cfg: DictConfig) -> list[Hook]:
    """Instantiate ``trainer.hooks``, ``diag.hooks`` then ``autotrainer.hooks`` (it reads the diagnosis).

    Each is a dict of ``_target_`` nodes; null entries are off.
    """
    hooks: list[Hook] = []
    for group in ("trainer.hooks", "diag.hooks", "autotrainer.hooks"):
        node = OmegaConf.select(cfg, group, default=None)
        for name, spec in (node or {}).items():
            if spec is None:
                continue
            hook = instantiate(spec)
            if not isinstance(hook, Hook):
                raise UserError(f"{group}.{name} builds {type(hook).__name__}, which is not a diag.hooks.Hook")
            hooks.append(hook)
    return hooks


def setup(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Validate and build everything a fit needs; raises :class:`UserError` before any training."""
    validate(cfg)
    seed_everything(int(cfg.seed), bool(cfg.trainer.deterministic))
    device = resolve_device(cfg.trainer.device)
    ddp = distributed.start(str(cfg.trainer.get("strategy", "auto")))
    if ddp:
        device = distributed.device_for_rank(device)
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    precision = str(cfg.trainer.precision)
    check_precision(precision, device)
    data = instantiate(cfg.data)
    data.setup()
    resume_path = find_resume_checkpoint(cfg.trainer.get("resume"), run_dir)
    payload = load_checkpoint(resume_path) if resume_path else None
    model = instantiate(cfg.model).to(device)
    if cfg.trainer.get("channels_last") and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile"):
        from runner.models.compile import maybe_compile

        model = maybe_compile(model, True, device)
    auto_lr = cfg.optimizer.lr == "auto"
    optimizer = instantiate(cfg.optimizer, lr=1e-3 if auto_lr else cfg.optimizer.lr)(params=model.parameters())
    generator = torch.Generator().manual_seed(int(cfg.seed))
    train_loader = data.loader("train", device=device, generator=generator, rank=rank, world_size=world_size)
    val_loader = data.loader("val", device=device, rank=rank, world_size=world_size)
    if ddp:
        distributed.check_same_steps(len(train_loader))
        log.info(distributed.describe(data.batch_size, len(train_loader)))
    lr_finder_result = None
    if auto_lr and payload is None:
        from runner.lr_find import auto_lr as find_lr

        # rank 0 finds the LR (and writes its plot); every rank trains with it, data order in step
        if rank == 0:
            lr_finder_result = find_lr(cfg, model, optimizer, train_loader, device, run_dir)
        lr_finder_result, data_rng = distributed.broadcast_object((lr_finder_result, generator.get_state()))
        generator.set_state(data_rng)
        for group in optimizer.param_groups:
            group["lr"] = lr_finder_result["suggested_lr"]
    max_epochs = int(cfg.trainer.max_epochs)
    scheduler, interval, monitor = build_scheduler(cfg.get("scheduler"), optimizer, len(train_loader), max_epochs)
    clip = cfg.trainer.clip
    trainer = Trainer(
        max_epochs=max_epochs,
        max_steps=cfg.trainer.get("max_steps"),
        device=device,
        precision=precision,
        clip_max_norm=clip.get("max_norm"),
        clip_value=clip.get("value"),
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        progress=bool(cfg.trainer.progress) and rank == 0,
        nonfinite_guard=bool(cfg.trainer.get("nonfinite_guard", True)),
        max_consecutive_skips=int(cfg.trainer.get("max_consecutive_skips") or 0),
        scheduler_interval=interval,
        scheduler_monitor=monitor,
    )
    hooks = HookList(build_hooks(cfg))
    for h in hooks:
        if isinstance(h, CheckpointHook):
            h.hooks = hooks
    state = FitState(model=model, optimizer=optimizer, scheduler=scheduler, run_dir=run_dir,
                     events=EventLog(run_dir / "events.jsonl" if rank == 0 else None), num_classes=data.num_classes,
                     generator=generator, is_rank_zero=rank == 0)
    if payload is not None:
        try:
            trainer.restore(state, payload, hooks)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"checkpoint {resume_path} does not fit this config "
                            f"({str(exc).splitlines()[0][:160]}): resume with the model and optimizer it was "
                            "trained with") from None
        log.info("resumed from %s at epoch %d (step %d)", resume_path, state.epoch + 1, state.step)
    if ddp:  # after restore: every rank loaded the checkpoint; wrapping also broadcasts rank 0's weights
        trainer.ddp_model = distributed.wrap(model, device)
    return {"lr_finder": lr_finder_result, "data": data, "model": model, "trainer": trainer, "hooks": hooks, "state": state,
            "train_loader": train_loader, "val_loader": val_loader, "device": device,
            "rank": rank, "world_size": world_size}


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Train, test and report; with ``autotrainer=default`` guided restarts run as ``attempt-N/`` inside ``run_dir``."""
    from runner.autotrainer import autotrainer_enabled, run_attempts

    if autotrainer_enabled(cfg):  # under DDP rank 0 decides and every rank follows (distributed.follow_rank_zero)
        return run_attempts(cfg, Path(run_dir), run_attempt)
    return run_attempt(cfg, run_dir)


def run_attempt(cfg: DictConfig, run_dir: Path, prepare: Callable[[dict[str, Any]], None] | None = None) -> float:
    """Train, test and report one configuration; return the best validation loss (the sweep objective).

    ``prepare(parts)`` runs once everything is built, before training (the AutoTrainer joins its session there).
    """
    # rank 0 picks the directory to continue; under torchrun every rank follows it
    chosen = str(continue_previous_run(cfg, Path(run_dir))) if distributed.is_rank_zero() else None
    run_dir = Path(distributed.broadcast_object(chosen))
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = setup(cfg, run_dir)
    if prepare is not None:
        prepare(parts)
    state: FitState = parts["state"]
    trainer: Trainer = parts["trainer"]
    hooks: HookList = parts["hooks"]
    from torch.utils.tensorboard import SummaryWriter

    if state.is_rank_zero:  # only rank 0 writes TensorBoard (and every other file of the run)
        state.writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.step + 1 if state.step else None)
    try:
        log.info("run directory: %s", run_dir)
        state.events.write("fit_start", step=state.step, epoch=state.epoch, max_epochs=trainer.max_epochs,
                           resumed=state.step > 0, world_size=parts["world_size"])
        with stop_on_signals(trainer):
            trainer.fit(state, parts["train_loader"], parts["val_loader"], hooks)
        if trainer.interrupted:
            raise interrupted(cfg, state, trainer, hooks, run_dir)
        if parts["world_size"] > 1:
            distributed.check_weights_in_sync(state.model)
            distributed.check_lr_in_sync(state.optimizer)
        test = trainer.evaluate(state.model, parts["data"].loader("test", device=parts["device"], rank=parts["rank"],
                                                                  world_size=parts["world_size"]))
        state.metrics["test/loss"], state.metrics["test/acc"] = test["loss"], test["acc"]
        hooks.on_fit_end(state)
        report = build_report(
            issues=state.report.get("issues", []),
            metrics=final_metrics(state, trainer),
            actions=state.report.get("actions", []),
            diagnosed="issues" in state.report,
            completed=True,
            **({"lr_finder": parts["lr_finder"]} if parts["lr_finder"] else {}),
        )
        if state.is_rank_zero:
            write_report(run_dir, report)
        state.events.write("fit_end", step=state.step, status=report["status"],
                           test_acc=report["metrics"].get("test_acc"))
        if state.writer is not None:
            log_hparams(state.writer, cfg, report["metrics"])
    finally:
        if state.writer is not None:
            state.writer.close()
        state.events.close()
    # an AutoTrainer that stopped this attempt for a guided restart: its numbers are not the run's result
    restart = next((r for r in (getattr(h, "restart_request", None) for h in hooks) if r), None)
    print_summary(report, run_dir, restart)
    best = trainer.best_val_loss
    return best if math.isfinite(best) else float(cfg.get("objective_penalty", 1e3))


def continue_previous_run(cfg: DictConfig, run_dir: Path) -> Path:
    """With ``trainer.resume=auto``, the same command continues an earlier unfinished run in its own directory.

    This launch's fresh Hydra directory then only keeps its config and log.
    """
    if cfg.trainer.get("resume") != "auto" or (run_dir / "checkpoints" / "last.pt").is_file():
        return run_dir
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return run_dir
    previous = previous_unfinished_run(run_dir, Path(cfg.paths.log_dir), list(HydraConfig.get().overrides.task))
    if previous is None:
        return run_dir
    log.info("trainer.resume=auto: continuing %s (this launch's %s keeps only its Hydra config and log)",
             previous, run_dir)
    return previous


def interrupted(cfg: DictConfig, state: FitState, trainer: Trainer, hooks: HookList, run_dir: Path) -> Interrupted:
    """Save a mid-epoch checkpoint and the report so far; build the exit that says how to resume."""
    name = trainer.interrupted or "SIGINT"
    saved = None
    for h in hooks:
        if isinstance(h, CheckpointHook):
            saved = h.save_now(state, mid_epoch=True)
    report = build_report(issues=state.report.get("issues", []), metrics=final_metrics(state, trainer),
                          actions=state.report.get("actions", []), diagnosed="issues" in state.report,
                          completed=False, interrupted=name)
    if state.is_rank_zero:
        write_report(run_dir, report)
    state.events.write("interrupted", step=state.step, epoch=state.epoch, signal=name,
                       checkpoint=str(saved) if saved else None)
    from hydra.core.hydra_config import HydraConfig

    given = HydraConfig.get().overrides if HydraConfig.initialized() else None
    again = resume_command(list(given.hydra) if given else [], list(given.task) if given else [], run_dir)
    where = f"checkpoint saved to {saved}" if saved else "no checkpoint hook configured: nothing saved"
    return Interrupted(f"interrupted by {name} at step {state.step} (epoch {state.epoch + 1}); {where}\n"
                       f"resume with: {again}", exit_code(name))


def final_metrics(state: FitState, trainer: Trainer) -> dict[str, Any]:
    """The headline numbers that go into ``report.json``."""
    m = state.metrics
    return {
        "final_train_loss": m.get("train/loss"),
        "final_val_loss": m.get("val/loss"),
        "best_val_loss": trainer.best_val_loss,
        "final_val_acc": m.get("val/acc"),
        "test_loss": m.get("test/loss"),
        "test_acc": m.get("test/acc"),
        "epochs": len(state.history),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
    }


def print_summary(report: dict[str, Any], run_dir: Path, restart: dict[str, Any] | None = None) -> None:
    """The last lines a user sees: accuracy, status, where things are, how to look at them.

    An attempt the AutoTrainer stopped for a guided restart gets one line instead: the run goes on, and
    the block that reads like a final result comes once, from the attempt that ends it.
    """
    m = report["metrics"]
    acc = m.get("test_acc")
    accuracy = f"test accuracy {acc:.4f}" if acc is not None else "test accuracy n/a"
    diagnosis = report["status"] + (": " + ", ".join(i["code"] for i in report["issues"]) if report["issues"] else "")
    if restart:
        log.info("attempt stopped for a guided restart (%s): %s, diagnosis %s; its files are in %s",
                 restart["code"], accuracy, diagnosis, run_dir)
        return
    lines = [
        "",
        accuracy,
        f"best val loss {m['best_val_loss']:.4f}" if m.get("best_val_loss") is not None else "best val loss n/a",
        f"diagnosis     {diagnosis}",
        f"run directory {run_dir}",
        f"tensorboard   tensorboard --logdir {run_dir / 'tb'}",
        f"analyze       python -m diag analyze {run_dir}",
    ]
    log.info("\n".join(lines))
