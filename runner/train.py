"""The train task, top to bottom: build → fit → test → report (torchtune's recipe shape).

:func:`run` is what the entry point calls for one attempt (the AutoTrainer's attempt loop calls it
once per attempt); tests call it too, with a composed config and a run directory in ``tmp_path``.
:func:`build` turns the config into a :class:`Run`: every object of the fit, built at the call site
with its runtime arguments (an optimizer gets the model's parameters, the AutoTrainer its session).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diag.advice import runner_table
from diag.confusion_plot import plot_confusion
from diag.hooks import EventLog, FitState, Hook, HookList
from runner import distributed
from runner.checkpoint import load_checkpoint
from runner.checkpoint_schema import check_fits, check_recipe, recipe_of
from runner.devices import check_precision, resolve_device, seed_everything, set_threads
from runner.errors import Interrupted, UserError
from runner.hparams import log_hparams
from runner.interrupts import interrupted, stop_on_signals
from runner.report import finished_report, objective_of, print_summary, report_run
from runner.resume import continue_previous_run, find_resume_checkpoint
from runner.run_dir import claim, refuse_a_run_there
from runner.schedulers import build_scheduler
from runner.tensorboard_run import log_run_media, open_writer
from runner.trainer import Trainer
from runner.validation import validate

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything one fit needs, built from the config by :func:`build`."""

    cfg: DictConfig
    run_dir: Path
    data: Any  # a runner.data.datamodule.ImageDataModule
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Trainer
    hooks: HookList
    state: FitState
    train_loader: Any
    val_loader: Any
    device: torch.device
    rank: int = 0
    world_size: int = 1
    lr_finder: dict[str, Any] | None = None  # the range test's summary when optimizer.lr=auto
    finished: dict[str, Any] | None = None  # the report of a finished run this resume found


@dataclass
class TrainResult:
    """What a finished attempt hands back: the sweep objective, where it ran, and its final state."""

    objective: float
    run_dir: Path
    state: FitState


def run(cfg: DictConfig, run_dir: Path, session: Any = None) -> TrainResult:
    """Train, test and report one configuration; the objective is the best validation loss.

    ``session`` is the AutoTrainer's attempt session (:class:`runner.autotrainer.Session`), handed to its
    hook when the config has one.
    """
    # rank 0 picks the directory to continue (trainer.resume=auto); under torchrun every rank follows it
    chosen = None
    if distributed.is_rank_zero():
        chosen = str(
            continue_previous_run(cfg.trainer.get("resume"), Path(run_dir), Path(cfg.paths.log_dir))
        )
    run_dir = Path(distributed.broadcast_object(chosen) or run_dir)
    if distributed.launch_rank() == 0:
        claim(run_dir)  # the directory trainer.resume=auto continues is owned like this launch's
    # the CLI refused it before Hydra wrote (a sweep's folder at its start): this is for a caller in Python
    if cfg.trainer.get("resume") in (None, "", False) and sweep_dir() is None:
        refuse_a_run_there(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    r = build(cfg, run_dir, session)
    state, trainer = r.state, r.trainer
    if r.finished is not None:  # nothing to train: every file of the run stays as it is
        log.info(
            "run %s already finished (step %s, report.json completed): nothing to do, nothing "
            "changed; choose another hydra.run.dir for a new run",
            run_dir,
            state.step,
        )
        objective = objective_of(r.finished, cfg.get("objective_penalty"))
        return TrainResult(objective=objective, run_dir=run_dir, state=state)
    if state.is_rank_zero:  # only rank 0 writes TensorBoard (and every other file of the run)
        # a restart continues its attempts' step axis
        offset = int(getattr(session, "step_offset", 0))
        state.writer = open_writer(run_dir, state.step, offset)
        changes = getattr(session, "attempt_changes", None)
        if changes:
            said = ", ".join(f"{k}={v}" for k, v in changes.items())
            state.writer.add_text("x_autotrainer/attempts", f"attempt-{session.attempt}: {said}", 0)
    # the fit and its finishing: a signal after the last epoch finishes the run (one test pass, the
    # whole report) instead of breaking the test pass, figures or report off with a traceback
    with stop_on_signals(trainer):
        try:
            log.info("run directory: %s", run_dir)
            state.events.write(
                "fit_start",
                step=state.step,
                epoch=state.epoch,
                max_epochs=trainer.max_epochs,
                resumed=state.step > 0,
                world_size=r.world_size,
            )
            # What exists now (imported modules, the model, data and config) lives through the fit: out of the
            # collector's sight, a full collection walks only what training makes, not torch's ~400k import-time
            # objects (0.1-0.2 s each time, several times in a short run). Undone in `finally`, so a sweep's
            # next job can collect this one's cycles.
            gc.freeze()
            trainer.fit(state, r.train_loader, r.val_loader, r.hooks)
            if trainer.interrupted and not fit_done(state):
                raise interrupted(state, trainer, r.hooks, run_dir)
            if (
                trainer.interrupted
            ):  # the signal came after the last epoch: finishing costs one test pass
                log.info(
                    "%s after the last epoch: testing and writing the report", trainer.interrupted
                )
            if r.world_size > 1:
                distributed.check_weights_in_sync(state.model)
                distributed.check_lr_in_sync(r.optimizer)
            # a trial stop_on ended is not tested: its test accuracy and confusion matrix would only say
            # again that it cannot learn (rank 0's verdict, so every rank skips the collective together)
            stopper = r.hooks.named.get("stop_on")
            stopped_sick = distributed.broadcast_object(
                getattr(stopper, "stopped", None) is not None
            )
            # an attempt the AutoTrainer stopped for a guided restart is not the run's result (rank 0's
            # request, so every rank agrees): not drawn, and not tested when it stopped before any step
            abandoned = Abandoned(
                *distributed.broadcast_object(
                    tuple(abandoned_attempt(session, r.hooks, state.step))
                )
            )
            # a trial of the sweep a finished trial already beat is tested but not drawn (rank 0 draws)
            beaten = None
            if not stopped_sick and stopper is not None and state.is_rank_zero:
                beaten = stopper.beaten(run_dir, trainer.best_val_loss)
            if stopped_sick:
                log.info("stopped by stop_on: no test pass, no confusion matrix")
            elif abandoned.untested:
                log.info("stopped for a guided restart before any step: no test pass")
            else:
                test = trainer.evaluate(
                    state.model,
                    r.data.loader("test", device=r.device, rank=r.rank, world_size=r.world_size),
                    confusion=True,
                )
                state.metrics["test/loss"], state.metrics["test/acc"] = test["loss"], test["acc"]
                if (
                    state.is_rank_zero
                    and "confusion" in test
                    and beaten is None
                    and not abandoned.unplotted
                ):
                    plot_confusion(
                        test["confusion"], r.data.class_names(), run_dir / "confusion_matrix.png"
                    )
            not_drawn = None
            if beaten is not None:
                not_drawn = (
                    f"no summary.png, confusion_matrix.png or input grid: trial #{beaten['trial']} of "
                    f"the sweep finished with a lower best val loss ({beaten['best_val_loss']:.4g} < "
                    f"{trainer.best_val_loss:.4g}), so this trial cannot be the sweep's best "
                    "(callbacks.stop_on.plot_beaten=true draws them)"
                )
                log.info("not drawn: %s", not_drawn)
                state.events.write("not_drawn", step=state.step, beaten_by=beaten, reason=not_drawn)
            elif abandoned.unplotted or abandoned.untested:
                not_drawn = "; ".join(
                    why
                    for why, skipped in (
                        (
                            "no confusion_matrix.png, summary.png or input grid: an attempt stopped for "
                            "a guided restart (callbacks.autotrainer.plot_stopped_attempts=true draws them)",
                            abandoned.unplotted,
                        ),
                        (
                            "no test pass: stopped for a guided restart before its first step",
                            abandoned.untested,
                        ),
                    )
                    if skipped
                )
                state.events.write("not_drawn", step=state.step, reason=not_drawn)
            r.hooks.on_fit_end(state)
            report = report_run(
                state, run_dir, trainer.best_val_loss, lr_finder=r.lr_finder, not_drawn=not_drawn
            )
            state.events.write(
                "fit_end",
                step=state.step,
                status=report["status"],
                test_acc=report["metrics"].get("test_acc"),
            )
            if state.writer is not None:
                log_hparams(state.writer, cfg, report["metrics"])
                drawn = not (stopped_sick or beaten or abandoned.unplotted)
                batch = next(iter(r.train_loader), None) if drawn else None
                log_run_media(state.writer, run_dir, cfg, report, batch, state.step)
        finally:
            gc.unfreeze()
            # a fit that raised never reached on_fit_end: what the hooks hold for their files (the JSONL
            # lines since their last flush) still goes to disk, as the events' do
            with contextlib.suppress(
                OSError
            ):  # a full disk here would hide the error that got us here
                r.hooks.flush()
            if state.writer is not None:
                state.writer.close()
            state.events.close()
    # an AutoTrainer that stopped this attempt for a guided restart: its numbers are not the run's result
    print_summary(report, run_dir, getattr(session, "restart_request", None))
    if trainer.interrupted and getattr(session, "restart_request", None) is not None:
        # the signal came as this attempt ended for a guided restart: stop before the next attempt
        from runner.interrupts import exit_code
        from runner.resume import launch_resume_command

        raise Interrupted(
            f"interrupted by {trainer.interrupted} as attempt {session.attempt} ended for a guided "
            f"restart; resume with: {launch_resume_command(run_dir)}",
            exit_code(trainer.interrupted),
        )
    best = trainer.best_val_loss
    penalty = float(cfg.get("objective_penalty", 1e3))
    # stop_on ended it: a failed trial
    objective = best if math.isfinite(best) and not stopped_sick else penalty
    return TrainResult(objective=objective, run_dir=run_dir, state=state)


class Abandoned(NamedTuple):
    """What an attempt the AutoTrainer stopped for a guided restart skips (both False otherwise)."""

    # stopped before its first step: a test pass would only measure the initial weights
    untested: bool
    # no confusion matrix or input grid (callbacks.autotrainer.plot_stopped_attempts)
    unplotted: bool


def abandoned_attempt(session: Any, hooks: HookList, step: int) -> Abandoned:
    """What this attempt skips when the AutoTrainer stopped it for a guided restart.

    Its numbers are not the run's result (the final attempt's are), so the seconds its figures, input
    grid and (for an untrained model) test pass cost on a small run are not spent; its report,
    ``events.jsonl`` and diagnostics JSONL stay.
    """
    if getattr(session, "restart_request", None) is None:
        return Abandoned(False, False)
    settings = getattr(hooks.named.get("autotrainer"), "settings", None)
    return Abandoned(step == 0, not getattr(settings, "plot_stopped_attempts", False))


def fit_done(state: FitState) -> bool:
    """The fit ran to its end: the last epoch (or the one a hook stopped at) has its history row."""
    ended = state.stop_training or bool(state.max_steps and state.step >= state.max_steps)
    return ended and len(state.history) > state.epoch


def build(cfg: DictConfig, run_dir: Path, session: Any = None) -> Run:
    """Validate the config and build every object of the fit; raises :class:`UserError` before any training."""
    validate(cfg)
    set_threads(cfg.trainer.get("threads"))
    seed_everything(int(cfg.seed), bool(cfg.trainer.deterministic))
    device = resolve_device(cfg.trainer.device)
    ddp = distributed.start(str(cfg.trainer.get("strategy", "auto")))
    if ddp:
        device = distributed.device_for_rank(device)
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    check_precision(str(cfg.trainer.precision), device)
    data = instantiate(cfg.data)
    data.setup()
    resume_path = find_resume_checkpoint(cfg.trainer.get("resume"), run_dir)
    payload = load_checkpoint(resume_path) if resume_path else None
    model = build_model(cfg, device)
    auto_lr = cfg.optimizer.lr == "auto"
    optimizer = instantiate(cfg.optimizer, lr=1e-3 if auto_lr else cfg.optimizer.lr)(
        params=model.parameters()
    )
    generator = torch.Generator().manual_seed(int(cfg.seed))
    train_loader = data.loader(
        "train", device=device, generator=generator, rank=rank, world_size=world_size
    )
    val_loader = data.loader("val", device=device, rank=rank, world_size=world_size)
    if ddp:
        distributed.check_same_steps(len(train_loader))
        log.info(distributed.describe(data.batch_size, len(train_loader)))
    trainer = build_trainer(cfg, device, progress=rank == 0)
    trainer.recipe = recipe_of(cfg)
    state = FitState(
        model=model,
        optimizer=optimizer,
        run_dir=run_dir,
        num_classes=data.num_classes,
        events=EventLog(run_dir / "events.jsonl" if rank == 0 else None),
        generator=generator,
        is_rank_zero=rank == 0,
    )
    r = Run(
        cfg=cfg,
        run_dir=run_dir,
        data=data,
        model=model,
        optimizer=optimizer,
        trainer=trainer,
        hooks=HookList(),
        state=state,
        train_loader=train_loader,
        val_loader=val_loader,
        device=device,
        rank=rank,
        world_size=world_size,
    )
    if auto_lr and payload is None:
        from runner.lr_find import auto_lr as find_lr  # the finder: only when asked for

        r.lr_finder = find_lr(r)  # the LR found, set on the optimizer before the schedule reads it
    schedule = cfg.get("scheduler")
    if auto_lr:  # the schedule reads optimizer.lr (OneCycle's max_lr): give it the LR found
        found = OmegaConf.merge(cfg, {"optimizer": {"lr": optimizer.param_groups[0]["lr"]}})
        schedule = found.scheduler if isinstance(found, DictConfig) else schedule
    state.scheduler = build_scheduler(schedule, optimizer, len(train_loader), trainer.max_epochs)
    r.hooks = build_hooks(cfg, session)
    if payload is not None:
        assert resume_path is not None
        # every field checked against what this config built before any of it is applied
        check_fits(
            payload,
            resume_path,
            model=model,
            optimizer=optimizer,
            scheduler=state.scheduler,
            generator=generator,
            steps_per_epoch=len(train_loader),
            max_epochs=trainer.max_epochs,
        )
        check_recipe(payload, resume_path, cfg)  # a changed LR or schedule would not take effect
        try:
            trainer.restore(state, payload, r.hooks)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise UserError(
                f"checkpoint {resume_path} does not fit this config "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}): "
                "resume with the config it was trained with"
            ) from None
        # an AutoTrainer attempt is never skipped: its hook re-asks for the guided restart it stopped for
        r.finished = finished_report(run_dir, payload, trainer) if session is None else None
        log.info("resumed from %s at epoch %d (step %d)", resume_path, state.epoch + 1, state.step)
    if (
        ddp
    ):  # after restore: every rank loaded the checkpoint; wrapping also broadcasts rank 0's weights
        trainer.ddp_model = distributed.wrap(model, device)
    return r


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    """``cfg.model`` on ``device``, channels-last and compiled when the trainer asks for it."""
    model = instantiate(cfg.model).to(device)
    if cfg.trainer.get("channels_last") and any(
        isinstance(m, torch.nn.Conv2d) for m in model.modules()
    ):
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile"):
        from runner.models.compile import maybe_compile

        model = maybe_compile(model, True, device)
    return model


def build_trainer(cfg: DictConfig, device: torch.device, progress: bool = True) -> Trainer:
    """The loop with the ``trainer`` group's settings and the scheduler's stepping settings."""
    t = cfg.trainer
    sched = cfg.get("scheduler") or {}
    return Trainer(
        max_epochs=int(t.max_epochs),
        max_steps=t.get("max_steps"),
        device=device,
        precision=str(t.precision),
        clip_max_norm=t.clip.get("max_norm"),
        clip_value=t.clip.get("value"),
        log_every_n_steps=int(t.log_every_n_steps),
        progress=bool(t.progress) and progress,
        nonfinite_guard=bool(t.get("nonfinite_guard", True)),
        max_consecutive_skips=int(t.get("max_consecutive_skips") or 0),
        scheduler_interval=str(sched.get("interval") or "epoch"),
        scheduler_monitor=sched.get("monitor"),
    )


def sweep_dir() -> str | None:
    """The multirun's ``hydra.sweep.dir`` when this run is a job of one (stop_on compares the sweep's
    trials), else None: a single run's neighbours in ``runs/`` are no sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return str(hydra_cfg.sweep.dir)


def build_hooks(cfg: DictConfig, session: Any = None) -> HookList:
    """Instantiate ``cfg.callbacks`` in order, each under its config name; null entries are off.

    The AutoTrainer is completed at the call site: it joins the attempt ``session`` and reads the
    diagnostics hook built before it.
    """
    named: dict[str, Hook] = {}
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is None:
            continue
        runtime: dict[str, Any] = {}
        if name == "diagnostics" and spec.get("advice") == "runner":
            # recommendations name only overrides this model has (no model.hidden for a CNN)
            model = OmegaConf.to_container(cfg.model, resolve=True)
            assert isinstance(model, dict)  # cfg.model is a config group's mapping
            runtime = {"advice": runner_table({str(k): v for k, v in model.items()})}
        elif name == "autotrainer":
            runtime = {"session": session, "cfg": cfg, "diagnostics": named.get("diagnostics")}
        elif name == "stop_on":  # the AutoTrainer, when there is one, gets its chance first
            runtime = {
                "autotrainer": named.get("autotrainer"),
                "diagnostics": named.get("diagnostics"),
                "sweep_dir": sweep_dir(),
            }
        hook = instantiate(spec, **runtime)
        if not isinstance(hook, Hook):
            raise UserError(
                f"callbacks.{name} builds {type(hook).__name__}, which is not a diag.hooks.Hook"
            )
        named[str(name)] = hook
    return HookList(named)
