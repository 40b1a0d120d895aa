"""Recommendations name knobs symbolically; each reader's table renders them in its own words."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from diag import CODES, FitState
from diag.advice import RENDERERS, Advice, render
from diag.codes import recommendations
from diag.live import DiagnosticsHook

RUNNER_WORDS = (
    "optimizer.",
    "optimizer=",
    "trainer.",
    "model.init",
    "model.activation",
    "model.hidden",
    "model.dropout",
    "model.batchnorm",
    "model.bias_init",
    "scheduler=",
    "data.",
    "mode=",
    "checkpoints/",
)


def test_every_recommendation_renders_in_every_table():
    for code in CODES:
        for name in RENDERERS:
            for text in recommendations(code, name):
                assert text and "{" not in text and " ()" not in text, (code, name, text)


def test_plain_words_name_no_runner_override():
    for code in CODES:
        for text in recommendations(code):
            assert not any(w in text for w in RUNNER_WORDS), (code, text)
    assert CODES["LOSS_EXPLOSION"]["recommendations"][0] == "Reduce the learning rate by 10-100x"


def test_the_runner_table_keeps_the_runner_s_overrides():
    assert recommendations("LOSS_EXPLOSION", "runner")[:2] == [
        "Reduce the learning rate by 10-100x (optimizer.lr)",
        "Add gradient clipping (trainer.clip.max_norm=1.0)",
    ]
    assert recommendations("SLOW_CONVERGENCE", "runner")[0] == (
        "Increase the learning rate by 10-100x (optimizer.lr), or run mode=lr_find"
    )
    assert recommendations("OVERFITTING", "runner")[0] == (
        "Add weight decay (optimizer=adamw optimizer.weight_decay=0.05) or dropout (model.dropout=0.2)"
    )


def test_lightning_names_trainer_and_optimizer_arguments():
    recs = recommendations("LOSS_EXPLOSION", "lightning")
    assert "lr= of the optimizer" in recs[0]
    assert "Trainer(gradient_clip_val=1.0)" in recs[1]


def test_a_table_of_your_own_and_a_missing_knob():
    advice = Advice("Add gradient clipping{clip_norm}", {"clip_norm": "0.5"})
    assert render(advice, {"clip_norm": "--clip {value}"}) == "Add gradient clipping (--clip 0.5)"
    assert render(advice, {}) == "Add gradient clipping"
    assert advice.knobs == ["clip_norm"]
    with pytest.raises(ValueError, match="unknown advice renderer"):
        render(advice, "keras")


def _explode(advice: str, caplog) -> list[str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    hook = DiagnosticsHook(summary_png=False, advice=advice, diagnose_every=20)
    state = FitState(model=model, optimizer=opt, num_classes=3, max_steps=60)
    hook.on_fit_start(state)
    with caplog.at_level(logging.INFO, logger="diag"):
        for step in range(1, 61):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
            state.step, state.loss, state.grad_norm = step, loss.detach(), norm
            hook.on_train_batch_end(state)
        hook.on_fit_end(state)
    assert any(i.code == "LOSS_EXPLOSION" for i in hook.issues)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("diag: ")]


def test_the_hook_speaks_plain_words_by_default_and_the_runner_s_when_asked(caplog):
    plain = _explode("plain", caplog)
    assert plain and all("Try: " in line and "optimizer.lr" not in line for line in plain)
    caplog.clear()
    runner = _explode("runner", caplog)
    assert any("(optimizer.lr)" in line for line in runner)


def test_the_runner_s_diag_configs_select_its_words():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[3] / "runner" / "conf" / "diag"
    for name in ("default.yaml", "full.yaml"):
        assert yaml.safe_load((conf / name).read_text())["advice"] == "runner"
