"""DiagnosticsCallback in a real Lightning Trainer (CPU, a tiny MLP on the digits): one line in
``callbacks=[...]`` names a far-too-high LR in Lightning's words and stays silent on a healthy run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def lit():
    """Lightning and the digits module (:mod:`helpers.lightning_digits`), imported when these tests run:
    at collection, Lightning's import took ~4 s of every worker."""
    pytest.importorskip("pytorch_lightning")
    from helpers import lightning_digits

    return lightning_digits


def _diag_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "diag"]


def test_a_far_too_high_lr_is_named_in_lightning_words(lit, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diag")
    trainer, callback = lit.fit(tmp_path, lit.DigitsMLP(lr=20.0, optimizer="sgd"))
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


def test_a_healthy_run_stays_silent(lit, tmp_path, caplog):
    """Adam at 3e-3 fits the digits in 6 epochs (at 1e-3 the loss is still 0.77 and falling by a quarter
    an epoch when the run ends: the diagnosis rightly says it stopped before it converged)."""
    caplog.set_level(logging.INFO, logger="diag")
    trainer, callback = lit.fit(tmp_path, lit.DigitsMLP(lr=3e-3))
    assert callback.issues == [] or all(i.severity == "info" for i in callback.issues)
    assert not [line for line in _diag_lines(caplog) if line.startswith("diag: ")]
    assert json.loads((Path(trainer.log_dir) / "report.json").read_text())["status"] == "healthy"
    series = callback.hook.series
    assert series.step and series.step[-1] == trainer.global_step
    assert len(series.epoch_val_loss) == 6 and all(v == v for v in series.epoch_val_loss)


def test_a_nan_validation_loss_gets_a_word(lit, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diag")
    lit.fit(tmp_path, lit.DigitsMLP(lr=1e-3, nan_val=True), epochs=2)
    assert any("val_loss is nan" in line for line in _diag_lines(caplog))


def test_analyze_names_dead_units_from_a_plain_lightning_runs_checkpoint(lit, tmp_path, capsys):
    """No callback, Lightning's defaults (its ModelCheckpoint on): the analyzer finds the dead ReLU units
    in the optimizer state of the checkpoint beside the loss-only logs."""
    from diag.analyze import main

    module = lit.DigitsMLP(lr=1e-3)
    with torch.no_grad():
        for m in module.net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(-5.0)
    trainer, _ = lit.fit(tmp_path, module, epochs=3, diagnostics=False)
    assert list((Path(trainer.log_dir) / "checkpoints").glob("*.ckpt"))
    assert main([str(tmp_path / "lightning_logs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    serious = [i["code"] for i in report["issues"] if i["severity"] != "info"]
    assert "DEAD_NEURONS" in serious, report["issues"]
