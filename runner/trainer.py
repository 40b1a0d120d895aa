"""The training loop: AMP-correct clipping, skipped-step accounting, validation, hooks.

:func:`runner.train.build` → :meth:`Trainer.fit` → :meth:`Trainer.evaluate` on the test
split → hooks' ``on_fit_end``. The loop knows nothing of what hooks compute; it hands them
a :class:`diag.hooks.FitState`, and hooks change its settings only through its setters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diag.gradients import global_grad_norm, grads_of, host_grad_norm
from diag.hooks import FitState, Hook
from diag.training_state import TrainingState, apply, capture
from runner import distributed
from runner.checkpoint_schema import FORMAT as CHECKPOINT_FORMAT
from runner.errors import UserError
from runner.schedulers import horizon_change

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_FULL_PRECISION = contextlib.nullcontext()
# Train loss/accuracy are buffered per step and summed once this many samples are waiting (see
# Trainer._fold_pending): its ~10 small ops cost the same whatever their size, so folding rarely keeps
# their share of a step small. Bounded by samples, not steps, so the logits held stay small
# (4096 x classes floats) whatever the batch size.
ACC_FOLD_SAMPLES = 4096
# Under DDP the ranks agree every this many steps (and at each epoch's end) whether any of them got
# SIGINT/SIGTERM, so all stop after the same step instead of one waiting in an all-reduce for the other.
SIGNAL_SYNC_EVERY = 8


def _loss(value: float) -> str:
    """A loss as people read it: ``0.2717``, but ``1.565e+23`` rather than 24 digits, and ``nan``."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _duration(seconds: float) -> str:
    """Epoch time as a person reads it: ``45ms`` for tiny epochs (``0.0s`` would look like a broken clock), ``12.3s``."""
    return f"{seconds * 1e3:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


class Trainer:
    """Runs epochs of optimizer steps with the configured precision, clipping and schedule."""

    def __init__(
        self,
        max_epochs: int,
        max_steps: int | None = None,
        device: torch.device | str = "cpu",
        precision: str = "32",
        clip_max_norm: float | None = None,
        clip_value: float | None = None,
        log_every_n_steps: int = 10,
        progress: bool = True,
        nonfinite_guard: bool = True,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
        max_consecutive_skips: int = 100,
    ) -> None:
        self.max_epochs = int(max_epochs)
        self.max_steps = int(max_steps) if max_steps else None
        self.device = torch.device(device)
        self.precision = str(precision)
        self.autocast_dtype = AUTOCAST_DTYPES[self.precision]
        self.clip_max_norm = clip_max_norm
        self.clip_value = clip_value
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.progress = progress and sys.stderr.isatty()
        self.nonfinite_guard = nonfinite_guard
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.best_val_loss = math.inf
        self.start_epoch = 0
        self.resume_batch = 0  # batches of start_epoch already done (a mid-epoch checkpoint)
        self.interrupted: str | None = None  # set by a signal handler: finish the step, then stop
        # the config a resume must keep (checkpoint_schema.recipe_of), saved in every checkpoint
        self.recipe: dict[str, Any] | None = None
        self.max_consecutive_skips = max_consecutive_skips
        self._consecutive_skips = 0
        self._epoch_rng: torch.Tensor | None = None  # data RNG at the start of the current epoch
        self._acc: list = []  # this epoch's on-device [loss_sum, correct, seen]
        self._sums_since: int | None = (
            None  # a rollback this epoch restarted _acc (forget_epoch_sums)
        )
        # the epoch's sums a rollback dropped (used if no step follows it in the epoch)
        self._undone: list | None = None
        self._notes: list[str] = []  # what the epoch's line adds about rollbacks
        self._in_epoch_steps = (
            False  # inside an epoch's training steps (its sums still being added to)
        )
        self._pending: list = []  # (loss, logits, labels) of steps not yet added to _acc (see _fold_pending)
        # The DistributedDataParallel wrapper of the model under DDP (training forwards go through it
        # so backward averages gradients across ranks); hooks, evaluation and checkpoints use the bare model.
        self.ddp_model: torch.nn.Module | None = None
        self.hooks: Hook | None = (
            None  # the hooks of the current fit (their states go into checkpoints)
        )
        self._alone = False  # inside alone(): steps and evaluations of this process, no collective
        self._plain_zero_grad: torch.optim.Optimizer | None = None  # see attach

    def reset_skips(self) -> None:
        """Forget the run of consecutive skipped steps (after steps that were not training, e.g. a range test)."""
        self._consecutive_skips = 0

    def set_clip(self, max_norm: float | None) -> None:
        """Clip the global gradient norm to ``max_norm`` from the next step on (None: no clipping)."""
        self.clip_max_norm = max_norm

    # -- one step ------------------------------------------------------------
    def attach(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Note what every step needs of the model, its optimizer and the process group, once rather than per step."""
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._world_size = self._ranks()
        # Optimizer.zero_grad(set_to_none=True) only sets each .grad to None, inside a dynamo guard and a
        # profiler range: 17 us against 2 us a step here, about 1% of the digits MLP's step. An optimizer
        # whose class overrides zero_grad keeps its own
        own = optimizer is None or type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad
        self._plain_zero_grad = None if own else optimizer

    def _ranks(self) -> int:
        """The processes a step or an evaluation is shared with: 1 inside :meth:`alone`."""
        return 1 if self._alone else distributed.get_world_size()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Steps and evaluations of this process only, with no collective: for work one rank does while
        the others wait (under torchrun, rank 0's LR range test and its check). Without it, the loss
        all-reduce of a step would wait forever for ranks that are not stepping."""
        alone_before = self._alone
        self._alone = True
        self._world_size = 1
        try:
            yield
        finally:
            self._alone = alone_before
            self._world_size = self._ranks()

    def _autocast(self):
        if self.autocast_dtype is None:
            return _FULL_PRECISION  # not a disabled torch.autocast built and entered every step
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def training_step(self, state: FitState, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward, unscale, clip, step; returns the logits. Sets loss/grad_norm/step_skipped."""
        model, opt, scaler = state.model, state.optimizer, self.scaler
        assert opt is not None, "FitState.optimizer is set by the task before fitting"
        forward = model if self.ddp_model is None else self.ddp_model
        with self._autocast():
            logits = forward(x)
            loss = F.cross_entropy(logits if logits.dtype == torch.float32 else logits.float(), y)
        if self._plain_zero_grad is opt:
            # what zero_grad(set_to_none=True) does, minus its wrappers (see attach)
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = None
        else:
            opt.zero_grad(set_to_none=True)
        amp_scaling = scaler.is_enabled()
        if amp_scaling:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # real units before clipping or measuring
        else:
            loss.backward()
        params = self._params
        host_norm = None  # the norm as a host float, when the gradients are summed on the host
        if self.clip_max_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, foreach=True)
        else:
            host_norm = host_grad_norm(grads_of(params))
            grad_norm = (
                global_grad_norm(params) if host_norm is None else torch.scalar_tensor(host_norm)
            )
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_value, foreach=True)
        if amp_scaling:
            scale_before = scaler.get_scale()
            scaler.step(opt)  # skips the update itself when gradients hold inf/NaN
            scaler.update()
            skipped = scaler.get_scale() < scale_before
        elif self.nonfinite_guard and not math.isfinite(
            grad_norm.item() if host_norm is None else host_norm
        ):  # one read, not isfinite + bool
            skipped = True  # a NaN/Inf batch never changes the weights
        else:
            opt.step()
            skipped = False
        if not skipped and state.scheduler is not None and self.scheduler_interval == "step":
            state.scheduler.step()
        # hooks log and diagnose the global loss (an all-reduce under DDP; the loss itself otherwise)
        state.loss = (
            distributed.mean_over_ranks(loss.detach()) if self._world_size > 1 else loss.detach()
        )
        state.grad_norm = (
            grad_norm  # computed under no_grad (clip_grad_norm_ / global_grad_norm): no detach
        )
        state.step_skipped = skipped
        self._consecutive_skips = self._consecutive_skips + 1 if skipped else 0
        if self.max_consecutive_skips and self._consecutive_skips >= self.max_consecutive_skips:
            state.stop_training = True
            state.stop_reason = (
                f"{self._consecutive_skips} consecutive steps had non-finite gradients; the weights "
                "are those of the last good step: lower optimizer.lr or set trainer.clip.max_norm"
            )
        if skipped:
            state.skipped_steps += 1
            state.events.write(
                "skipped_step",
                step=state.step + 1,  # the step's number as hooks, the console and reports see it
                epoch=state.epoch,
                reason="non-finite gradients",
                scale=scaler.get_scale() if scaler.is_enabled() else None,
            )
        return logits

    # -- loops ---------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader, confusion: bool = False) -> dict[str, Any]:
        """Mean loss and accuracy over a whole split (one host sync at the end); with ``confusion``, also
        the confusion matrix (``"confusion"``: rows true class, columns predicted, counts)."""
        ranks = self._ranks()
        if ranks > 1:  # under DDP: every rank evaluates rank 0's model, BatchNorm stats too
            distributed.broadcast_buffers(model)
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        matrix: torch.Tensor | None = None
        for x, y in loader:
            with self._autocast():
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            count += len(y)
            if confusion:  # one bincount of (true, predicted) pairs per batch, on the device
                k = logits.shape[1]
                pairs = torch.bincount(y * k + pred, minlength=k * k)
                matrix = pairs if matrix is None else matrix + pairs
        model.train(was_training)
        # under DDP each rank saw its own strided shard: sums over ranks cover the split exactly once
        loss_total, correct_total, total = self._sums(loss_sum, correct, count, ranks)
        out: dict[str, Any] = {"loss": math.nan, "acc": math.nan}
        if total:
            out = {"loss": loss_total / total, "acc": correct_total / total, "examples": int(total)}
        if matrix is not None:
            k = math.isqrt(matrix.numel())
            summed = (
                distributed.mean_over_ranks(matrix.double()) * ranks
                if ranks > 1
                else matrix.double()
            )
            out["confusion"] = summed.round().long().view(k, k).tolist()
        return out

    def fit(self, state: FitState, train_loader, val_loader, hooks: Hook) -> FitState:
        """Train until ``max_epochs``/``max_steps`` or a hook sets ``state.stop_training``."""
        model = state.model
        self.attach(model, state.optimizer)
        self.hooks = hooks
        state.scaler = self.scaler
        state.loop = self
        state.steps_per_epoch = len(train_loader)
        total = self.max_epochs * state.steps_per_epoch
        state.max_steps = min(total, self.max_steps) if self.max_steps else total
        hooks.on_fit_start(state)
        if (
            state.stop_training
        ):  # a hook stopped the fit before its first step (e.g. a restart already asked for)
            if state.stop_reason and state.is_rank_zero:
                log.warning("stopping: %s", state.stop_reason)
            return state
        model.train()
        epoch_bar = tqdm(
            range(self.start_epoch, self.max_epochs),
            desc="epochs",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
            initial=self.start_epoch,
            total=self.max_epochs,
        )
        for epoch in epoch_bar:
            state.epoch = epoch
            t0 = time.perf_counter()
            skip = self.resume_batch if epoch == self.start_epoch else 0
            if state.generator is not None:
                # replaying it rebuilds this epoch's order
                self._epoch_rng = state.generator.get_state()
            if skip and self._acc:
                loss_sum, correct, seen = self._acc
            else:
                loss_sum = torch.zeros((), device=self.device)
                correct = torch.zeros((), device=self.device, dtype=torch.long)
                seen = 0
            self._acc = acc = [
                loss_sum,
                correct,
                seen,
            ]  # the epoch's running sums (a checkpoint keeps them)
            pending = self._pending
            fold_at = seen + ACC_FOLD_SAMPLES
            batches = (
                tqdm(
                    train_loader,
                    desc=f"epoch {epoch + 1}/{self.max_epochs}",
                    leave=False,
                    disable=not self.progress,
                    dynamic_ncols=True,
                )
                if self.progress
                else train_loader
            )
            self._in_epoch_steps = True
            for batch_idx, (x, y) in enumerate(batches):
                if batch_idx < skip:
                    continue  # done before the checkpoint this run resumed from
                state.batch_idx = batch_idx
                state.batch_size = n = y.shape[0]
                logits = self.training_step(state, x, y)
                state.step += 1
                state.lr = state.current_lr
                # train loss/accuracy: buffered, and summed in one go every ACC_FOLD_SAMPLES samples (why:
                # see there). Detached: buffered logits would otherwise keep each step's autograd graph
                # alive until the fold
                pending.append((state.loss, logits.detach(), y))
                acc[2] += n  # on the list: a rollback (forget_epoch_sums) restarts the count
                if acc[2] >= fold_at:
                    self._fold_pending()
                    fold_at = acc[2] + ACC_FOLD_SAMPLES
                hooks.on_train_batch_end(state)
                if (
                    self.progress
                    and state.step % self.log_every_n_steps == 0
                    and state.loss is not None
                ):
                    batches.set_postfix(loss=f"{float(state.loss):.4f}", refresh=False)
                signalled = self._stop_signal(sync=state.step % SIGNAL_SYNC_EVERY == 0)
                if (
                    signalled
                    or state.stop_training
                    or (self.max_steps and state.step >= self.max_steps)
                ):
                    break
            self._in_epoch_steps = False
            self._fold_pending()
            if self._stop_signal(sync=True):
                break  # a signal: no validation, the caller checkpoints mid-epoch and reports
            if not acc[2] and self._undone is not None:
                # rolled back at the epoch's last step: its line shows the steps it undid, and says so
                loss_sum, correct, acc[2] = self._undone
                self._notes[-1] = (
                    f"(train: the steps the rollback to step {self._sums_since} undid)"
                )
            self._undone = None
            loss_total, correct_total, seen_total = self._sums(
                loss_sum, correct, acc[2], self._world_size
            )
            state.metrics["train/loss"] = loss_total / max(seen_total, 1)
            state.metrics["train/acc"] = correct_total / max(seen_total, 1)
            state.metrics["train/epoch_time"] = time.perf_counter() - t0
            val = self.evaluate(model, val_loader)
            state.metrics["val/loss"], state.metrics["val/acc"] = val["loss"], val["acc"]
            state.val_examples = int(val.get("examples", 0))
            if val["loss"] < self.best_val_loss:
                self.best_val_loss = val["loss"]
            state.metrics["val/best_loss"] = self.best_val_loss
            hooks.on_validation_end(state)
            # the epoch's LR in its history, line and logs: an epoch-interval scheduler sets the next one
            trained_lr = state.current_lr
            self._step_epoch_scheduler(state)
            state.history.append(
                {
                    "epoch": epoch,
                    "step": state.step,
                    "lr": trained_lr,
                    **{k: v for k, v in state.metrics.items() if not k.startswith("test/")},
                }
            )
            hooks.on_epoch_end(state)
            self._log_epoch(state, epoch, trained_lr)
            if self._world_size > 1:  # rank 0's stop decision holds for every rank
                state.stop_training, state.stop_reason = distributed.broadcast_object(
                    (state.stop_training, state.stop_reason)
                )
            if state.stop_training or (self.max_steps and state.step >= self.max_steps):
                if state.stop_reason and state.is_rank_zero:  # every rank stops; one says why
                    log.warning("stopping: %s", state.stop_reason)
                break
        epoch_bar.close()
        if self._world_size > 1:  # the caller stops (or tests and reports) on every rank alike
            self.interrupted = self._agree_on_signal()
        return state

    def _sums(
        self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int, ranks: int
    ) -> list[float]:
        """Loss sum, correct count and sample count over ``ranks`` processes: one host read, like a hand loop's."""
        if ranks > 1:
            return distributed.sum_over_ranks(loss_sum, correct, count, device=self.device)
        return [loss_sum.item(), float(correct.item()), float(count)]

    def _stop_signal(self, sync: bool) -> str | None:
        """The signal to stop on: this process's; under DDP, at sync points only, the one any rank got."""
        if self._world_size == 1:
            return self.interrupted
        return self._agree_on_signal() if sync else None

    def _agree_on_signal(self) -> str | None:
        """Under DDP (a collective: every rank calls it at the same step): the signal any rank got, now every rank's."""
        got = distributed.max_over_ranks(
            signal.Signals[self.interrupted].value if self.interrupted else 0, device=self.device
        )
        if not got:
            return None  # a signal arriving during the collective is still set here: the next one shares it
        self.interrupted = signal.Signals(got).name
        return self.interrupted

    def forget_epoch_sums(self, step: int) -> None:
        """Drop this epoch's training loss/accuracy so far: a rollback to ``step`` undid those steps, so the
        epoch's line and metrics report the steps after it (and say so) instead of a blown-up mean."""
        if not self._in_epoch_steps:
            # at an epoch's end its sums are already taken; its line says the weights went back after them
            self._notes.append(f"(then rolled back to step {step})")
            return
        self._fold_pending()
        if self._acc:
            # kept in case no step follows in this epoch (a rollback at its last step)
            self._undone = [self._acc[0].clone(), self._acc[1].clone(), self._acc[2]]
            self._acc[0].zero_()
            self._acc[1].zero_()
            self._acc[2] = 0
        self._sums_since = step
        self._notes = [f"(train: the steps after the rollback to step {step})"]

    def _fold_pending(self) -> None:
        """Add the buffered steps' loss x batch size and correct predictions to ``_acc`` (in place).

        Every tensor buffered is detached, so no autograd graph is built here without ``no_grad``.
        """
        pending = tuple(self._pending)
        self._pending.clear()  # in place: the loop holds this list
        if not pending or not self._acc:
            return
        loss_sum, correct = self._acc[0], self._acc[1]
        losses, logits, labels = zip(*pending)
        sizes = {len(y) for y in labels}
        if len(sizes) == 1:
            loss_sum.add_(torch.stack(losses).sum(), alpha=sizes.pop())
        else:
            for loss, y in zip(losses, labels):
                loss_sum.add_(loss, alpha=len(y))
        correct += (torch.cat(logits).argmax(1) == torch.cat(labels)).sum()

    def _step_epoch_scheduler(self, state: FitState) -> None:
        sched = state.scheduler
        if sched is None or self.scheduler_interval != "epoch":
            return
        if self.scheduler_monitor:
            value = state.metrics.get(self.scheduler_monitor)
            if value is not None and math.isfinite(value):
                sched.step(value)
        else:
            sched.step()

    def _log_epoch(self, state: FitState, epoch: int, lr: float) -> None:
        m = state.metrics
        line = (
            f"epoch {epoch + 1:>3}/{self.max_epochs}  train_loss {_loss(m['train/loss'])}  "
            f"train_acc {m['train/acc']:.3f}  val_loss {_loss(m['val/loss'])}  val_acc {m['val/acc']:.3f}  "
            f"lr {lr:.2e}  {_duration(m['train/epoch_time'])}"
        )
        # this epoch's skipped steps: the running total is kept on the epoch's history entry
        before = state.history[-2].get("skipped_total", 0) if len(state.history) > 1 else 0
        if state.history:
            state.history[-1]["skipped_total"] = state.skipped_steps
        if state.skipped_steps > before:
            line += f"  skipped {state.skipped_steps - before}"
        for note in self._notes:
            line += f"  {note}"
        self._notes.clear()
        if self.progress:
            tqdm.write(line)
            logging.getLogger("runner.epoch").debug(line)
        else:
            log.info(line)

    def checkpoint_payload(self, state: FitState, mid_epoch: bool = False) -> dict[str, Any]:
        """Everything needed to continue exactly here (``weights_only``-loadable).

        ``mid_epoch`` checkpoints also keep the data RNG of the epoch's start, the
        number of batches done and the epoch's running sums, so a resume replays
        the same order and skips what was done.
        """
        self._fold_pending()  # buffered steps belong in the sums a resumed epoch continues from
        acc = self._acc if mid_epoch and self._acc else None
        # references, not copies: torch.save serialises them at once
        training = capture(
            state.model,
            state.optimizer,
            state.scheduler,
            self.scaler,
            rng=True,
            generator=state.generator,
            copy_to_cpu=False,
        )
        return {
            "format": CHECKPOINT_FORMAT,
            "optimizer_class": type(state.optimizer).__name__,
            "scheduler_class": type(state.scheduler).__name__
            if state.scheduler is not None
            else None,
            **training.as_dict(),
            "mid_epoch": mid_epoch,
            "batch_in_epoch": state.batch_idx + 1 if mid_epoch else 0,
            "epoch_rng": self._epoch_rng if mid_epoch else None,
            "epoch_acc": [acc[0].detach().cpu(), acc[1].detach().cpu(), int(acc[2])]
            if acc
            else None,
            "epoch": state.epoch,
            "step": state.step,
            "skipped_steps": state.skipped_steps,
            "best_val_loss": self.best_val_loss,
            "history": state.history,
            "hooks": self.hooks.state_dict() if self.hooks is not None else {},
            "recipe": self.recipe,
        }

    def restore(self, state: FitState, payload: dict[str, Any], hooks: Hook) -> None:
        """Load a :meth:`checkpoint_payload` into the built objects; training resumes at the next epoch."""
        saved = TrainingState(
            model=payload["model"],
            optimizer=payload["optimizer"],
            scheduler=payload.get("scheduler"),
            scaler=payload.get("scaler") or None,
            rng=payload.get("rng") or {},
        )
        apply(
            saved, state.model, state.optimizer
        )  # a checkpoint of another model or optimizer fails here
        changed = horizon_change(state.scheduler, payload.get("scheduler"))
        if changed:
            raise UserError(
                f"trainer.resume: the checkpoint's LR schedule was built for another run length, "
                f"{changed}: resume with the trainer.max_epochs/max_steps it was started with (a "
                "schedule under way cannot be stretched: OneCycle stops, a cosine climbs back)"
            )
        apply(saved, None, None, state.scheduler, self.scaler, generator=state.generator)
        state.epoch = int(payload["epoch"])
        state.step = int(payload["step"])
        state.skipped_steps = int(payload.get("skipped_steps", 0))
        state.history = list(payload.get("history", []))
        self.best_val_loss = float(payload.get("best_val_loss", math.inf))
        self.start_epoch = state.epoch + 1
        if state.history and not payload.get("mid_epoch"):
            # the last epoch's numbers: a run killed after its last checkpoint still reports them
            state.metrics.update({k: v for k, v in state.history[-1].items() if "/" in k})
        if payload.get("mid_epoch"):
            self.start_epoch = state.epoch
            self.resume_batch = int(payload["batch_in_epoch"])
            if state.generator is not None and payload.get("epoch_rng") is not None:
                state.generator.set_state(payload["epoch_rng"])
            if payload.get("epoch_acc"):
                loss_sum, correct, seen = payload["epoch_acc"]
                self._acc = [loss_sum.to(self.device), correct.to(self.device), int(seen)]
        hooks.load_state_dict(payload.get("hooks", {}))
