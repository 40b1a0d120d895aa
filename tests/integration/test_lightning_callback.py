"""DiagnosticsCallback in a real Lightning Trainer (CPU, a tiny MLP on the digits): one line in
``callbacks=[...]`` names a far-too-high LR in Lightning's words and stays silent on a healthy run."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning")
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402

from diag.integrations.lightning import DiagnosticsCallback  # noqa: E402


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
    tmp_path: Path, module: pl.LightningModule, epochs: int = 6
) -> tuple[pl.Trainer, DiagnosticsCallback]:
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    callback = DiagnosticsCallback()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path)),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
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


def _diag_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "diag"]


def test_a_far_too_high_lr_is_named_in_lightning_words(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diag")
    trainer, callback = fit(tmp_path, DigitsMLP(lr=20.0, optimizer="sgd"))
    codes = {i.code for i in callback.issues}
    assert codes & {"LOSS_EXPLOSION", "NONFINITE_GRADIENTS"}, codes
    lines = [line for line in _diag_lines(caplog) if line.startswith("diag: ")]
    assert any("LOSS_EXPLOSION" in line or "NONFINITE" in line for line in lines)
    assert any("lr= of the optimizer" in line for line in lines)

    log_dir = Path(trainer.log_dir)
    report = json.loads((log_dir / "report.json").read_text())
    assert report["status"] == "critical"
    recs = [r for i in report["issues"] for r in i["recommendations"]]
    assert any("Trainer(gradient_clip_val=1.0)" in r for r in recs)
    assert not any("optimizer.lr" in r or "trainer.clip" in r for r in recs)
    assert (log_dir / "report.md").is_file() and (log_dir / "summary.png").is_file()

    from tbparse import SummaryReader

    tags = set(SummaryReader(str(log_dir)).tensors.get("tag", [])) | set(
        SummaryReader(str(log_dir)).text.get("tag", [])
    )
    assert "diagnosis" in tags or "diagnosis/final" in tags, tags


def test_a_healthy_run_stays_silent(tmp_path, caplog):
    """Adam at 3e-3 fits the digits in 6 epochs (at 1e-3 the loss is still 0.77 and falling by a quarter
    an epoch when the run ends: the diagnosis rightly says it stopped before it converged)."""
    caplog.set_level(logging.INFO, logger="diag")
    trainer, callback = fit(tmp_path, DigitsMLP(lr=3e-3))
    assert callback.issues == [] or all(i.severity == "info" for i in callback.issues)
    assert not [line for line in _diag_lines(caplog) if line.startswith("diag: ")]
    assert json.loads((Path(trainer.log_dir) / "report.json").read_text())["status"] == "healthy"
    series = callback.hook.series
    assert series.step and series.step[-1] == trainer.global_step
    assert len(series.epoch_val_loss) == 6 and all(v == v for v in series.epoch_val_loss)


def test_a_nan_validation_loss_gets_a_word(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diag")
    fit(tmp_path, DigitsMLP(lr=1e-3, nan_val=True), epochs=2)
    assert any("val_loss is nan" in line for line in _diag_lines(caplog))


def test_analyze_names_dead_units_from_a_plain_lightning_runs_checkpoint(tmp_path, capsys):
    """No callback, Lightning's defaults (its ModelCheckpoint on): the analyzer finds the dead ReLU units
    in the optimizer state of the checkpoint beside the loss-only logs."""
    from diag.analyze import main

    module = DigitsMLP(lr=1e-3)
    with torch.no_grad():
        for m in module.net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(-5.0)
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(
            module,
            DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=512),
        )
    assert list((Path(trainer.log_dir) / "checkpoints").glob("*.ckpt"))
    assert main([str(tmp_path / "lightning_logs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    serious = [i["code"] for i in report["issues"] if i["severity"] != "info"]
    assert "DEAD_NEURONS" in serious, report["issues"]
