"""A run's recommendations, live and from ``diag analyze``, name overrides its model has: a small CNN
was told to set ``model.hidden=[512,512]``, which the CNN refuses."""

from __future__ import annotations

import json

from helpers import run_cli

from diag.advice import Advice, render, runner_table
from diag.readers import read_run_dir


def test_a_small_cnn_is_told_to_grow_its_channels_and_never_model_hidden(tmp_path):
    run = tmp_path / "run"
    res = run_cli(
        ["model=cnn", "model.channels=[4,8]", "trainer.max_epochs=3"], tmp_path, run_dir=run
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    recs = [r for i in report["issues"] for r in i["recommendations"]]
    assert any("model.channels=[8,16] or model=resnet18" in r for r in recs), recs
    assert "model.hidden" not in res.stdout + res.stderr + json.dumps(report)
    analyzed = run_cli(["analyze", str(run), "--json"], tmp_path, module="diag", extra=False)
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    assert "model.hidden" not in analyzed.stdout
    # the analyzer renders through the table of the model it read from .hydra/config.yaml
    read = read_run_dir(run)
    assert read.model_config["channels"] == [4, 8]
    assert render(Advice("Use a bigger model{capacity}"), runner_table(read.model_config)) == (
        "Use a bigger model (model.channels=[8,16] or model=resnet18)"
    )
