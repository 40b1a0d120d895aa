"""A tiny Lightning module on the digits and a fit with :class:`DiagnosticsCallback`, for the Lightning
tests: imported by them when they run, not at collection (importing Lightning takes ~4 s of every
pytest worker)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diag.integrations.lightning import DiagnosticsCallback


class DigitsMLP(pl.LightningModule):
    def __init__(self, lr: float, optimizer: str = "adam", nan_val: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr, self.optimizer_name, self.nan_val = lr, optimizer, nan_val

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("val_loss", loss * float("nan") if self.nan_val else loss)
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def fit(
    tmp_path: Path, module: pl.LightningModule, epochs: int = 6, diagnostics: bool = True
) -> tuple[pl.Trainer, DiagnosticsCallback | None]:
    """``module`` fit on 1400 digits, validated on the rest: with the callback (checkpointing off), or
    with Lightning's defaults alone (its ModelCheckpoint on)."""
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    callback = DiagnosticsCallback() if diagnostics else None
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path)),
        callbacks=[callback] if callback else [],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=not diagnostics,
        log_every_n_steps=10,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(
            module,
            DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=512),
        )
    return trainer, callback
