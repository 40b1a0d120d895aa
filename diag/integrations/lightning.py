"""``DiagnosticsCallback``: the runner's live diagnosis in a PyTorch Lightning ``Trainer``.

``Trainer(callbacks=[DiagnosticsCallback()])`` is all it takes. Per optimizer step the callback
measures the global gradient norm on the device (in ``on_before_optimizer_step``, where Lightning has
already unscaled AMP gradients) and hands the loss the ``training_step`` returned to
:class:`diag.live.DiagnosticsHook`, which reads both every ``scalar_every`` steps. Validation numbers
come from ``trainer.callback_metrics`` (``val_loss``/``val_acc`` or ``val/loss``/``val/acc``).
Findings are console lines on the ``diag`` logger, text (and, every ``layer_every`` steps, per-layer
scalars) in the Trainer's TensorBoard logger, and ``report.json``/``report.md``/``summary.png`` plus
``events.jsonl`` in the Trainer's log directory. Recommendations name Trainer and optimizer arguments.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

try:  # the standalone package first: it is what the `lightning` extra installs
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
except ImportError:  # pragma: no cover - the unified `lightning` package
    import lightning.pytorch as pl  # type: ignore[no-redef, unused-ignore]
    from lightning.pytorch.loggers import TensorBoardLogger  # type: ignore[no-redef, unused-ignore]

from diag.gradients import grads_of
from diag.hooks import EventLog, FitState
from diag.live import DiagnosticsHook

log = logging.getLogger("diag")

VAL_LOSS_KEYS = ("val_loss", "val/loss", "val_loss_epoch")
VAL_ACC_KEYS = ("val_acc", "val/acc", "val_accuracy", "val_acc_epoch")
TRAIN_LOSS_KEYS = ("train_loss_epoch", "train_loss", "train/loss")
TRAIN_ACC_KEYS = ("train_acc_epoch", "train_acc", "train/acc")


def _first(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in metrics:
            value = metrics[key]
            return float(value.item() if isinstance(value, torch.Tensor) else value)
    return None


def _guess_classes(module: torch.nn.Module) -> int | None:
    """The class count a LightningModule says it has (``num_classes``), else its last Linear's outputs."""
    for source in (module, getattr(module, "hparams", {})):
        value = (
            source.get("num_classes")
            if isinstance(source, Mapping)
            else getattr(source, "num_classes", None)
        )
        if isinstance(value, int) and value >= 2:
            return value
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if last and last[-1].out_features >= 2:
        return int(last[-1].out_features)
    return None


class DiagnosticsCallback(pl.Callback):
    """Live diagnosis of a Lightning fit: console lines, TensorBoard text, a report in the log directory."""

    def __init__(
        self,
        num_classes: int | None = None,
        advice: str | Mapping[str, str] = "lightning",
        console: bool = True,
        report: bool = True,
        **hook_options: Any,
    ) -> None:
        """``num_classes`` for the chance-level checks (default: the module's ``num_classes`` or its last
        Linear layer's outputs); ``advice`` whose words the recommendations use; ``report`` writes
        ``report.json``/``report.md``/``summary.png``; ``hook_options`` go to :class:`DiagnosticsHook`
        (``scalar_every``, ``layer_every``, ``diagnose_every``...)."""
        super().__init__()
        hook_options.setdefault("summary_png", report)
        self.hook = DiagnosticsHook(
            advice=advice, console=console, write_report=report, **hook_options
        )
        self.num_classes = num_classes
        self.console = console
        self.state: FitState | None = None
        self._grad_norm: torch.Tensor | None = None
        self._said_no_val = False

    @property
    def issues(self) -> list[Any]:
        """The current findings (:class:`diag.Issue`)."""
        return self.hook.issues

    # -- set-up ------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.console and not logging.getLogger("diag").hasHandlers():
            handler = (
                logging.StreamHandler()
            )  # a plain script: the findings still reach the console
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        run_dir = Path(trainer.log_dir) if trainer.log_dir else Path(trainer.default_root_dir)
        logger = trainer.logger
        writer = logger.experiment if isinstance(logger, TensorBoardLogger) else None
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        rank_zero = trainer.is_global_zero
        self.state = FitState(
            model=pl_module,
            optimizer=optimizer,
            run_dir=run_dir,
            writer=writer if rank_zero else None,
            events=EventLog(run_dir / "events.jsonl" if rank_zero else None),
            num_classes=self.num_classes or _guess_classes(pl_module),
            is_rank_zero=rank_zero,
            step=trainer.global_step,
            max_steps=max(trainer.max_steps, 0),
        )
        self.hook.on_fit_start(self.state)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The planned steps once the loaders are known (asking earlier would load them a second time)."""
        state = self.state
        if state is None or state.max_steps or not trainer.max_epochs or trainer.max_epochs < 0:
            return
        batches = trainer.num_training_batches
        if isinstance(batches, (int, float)) and math.isfinite(batches) and batches > 0:
            per_epoch = math.ceil(batches / max(1, trainer.accumulate_grad_batches))
            state.max_steps = per_epoch * trainer.max_epochs
            self.hook.series.planned_steps = state.max_steps

    # -- every step ------------------------------------------------------------------
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        grads = grads_of(pl_module.parameters())
        if grads:  # on the device: one fused norm per tensor list, no host read
            self._grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        state = self.state
        if state is None or trainer.global_step <= state.step:
            return  # accumulating gradients (no optimizer step yet), or a skipped training_step
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        grad_norm = self._grad_norm
        if grad_norm is None:  # e.g. manual optimization without optimizer.step() through Lightning
            grad_norm = torch.full((), math.nan)
        state.step, state.epoch, state.batch_idx = (
            trainer.global_step,
            trainer.current_epoch,
            batch_idx,
        )
        state.loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        state.grad_norm = grad_norm
        self._grad_norm = None
        self.hook.on_train_batch_end(state)

    # -- epochs ------------------------------------------------------------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.state
        if state is None or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        values = {
            "val/loss": _first(m, VAL_LOSS_KEYS),
            "val/acc": _first(m, VAL_ACC_KEYS),
            "train/loss": _first(m, TRAIN_LOSS_KEYS),
            "train/acc": _first(m, TRAIN_ACC_KEYS),
        }
        if values["val/loss"] is None and values["val/acc"] is None:
            if not self._said_no_val and self.console:
                self._said_no_val = True
                log.info(
                    "diag: no val_loss or val_acc among the logged metrics: log them in validation_step "
                    "(self.log('val_loss', loss)) for the overfitting and chance-level checks"
                )
            return
        loss = values["val/loss"]
        if loss is not None and not math.isfinite(loss) and self.console:
            log.warning(
                "diag: val_loss is %s at epoch %d (step %d): the model's outputs or the loss are "
                "non-finite on the validation data",
                loss,
                trainer.current_epoch,
                trainer.global_step,
            )
        state.metrics.update({k: v for k, v in values.items() if v is not None})
        state.epoch = trainer.current_epoch
        self.hook.on_validation_end(state)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            self.state.epoch = trainer.current_epoch
            self.hook.on_epoch_end(self.state)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.state
        if state is None:
            return
        state.step = max(state.step, trainer.global_step)
        self.hook.on_fit_end(state)
        state.events.close()

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.hook.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.hook.load_state_dict(state_dict)
