"""A CNN too narrow to fit gets its channels widened by the AutoTrainer's capacity restart.

The capacity restart (UNDERFITTING, NO_LEARNING) knew only the MLP's ``model.hidden``: a ``[4, 8]`` CNN
on the digits was found UNDERFITTING at step 10 and left alone, ending at 0.57 test accuracy.
"""

from __future__ import annotations

import json

import pytest
from helpers import compose_cfg
from omegaconf import OmegaConf

from runner.autotrainer.restarts import capacity_fix, channels_fix, cnn_params
from runner.autotrainer.settings import Capacity

CAP = Capacity(
    min_width=128, min_depth=2, max_params=250_000, width=256, min_channels=16, channels=32
)


def _cnn(channels: str, *more: str):
    return compose_cfg(["model=cnn", f"model.channels={channels}", *more])


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ("[4,8]", {"model.channels": [32, 64]}),
        ("[4,8,16]", {"model.channels": [32, 64, 128]}),
        ("[8,128]", {"model.channels": [32, 128]}),  # a wide block is kept as it is
        ("[32,64]", {}),  # the default CNN is not small
        ("[16,16]", {}),  # narrow but at min_channels: capacity is not the cause
    ],
)
def test_a_narrow_cnn_is_widened_block_by_block_and_a_wide_one_left_alone(channels, expected):
    assert capacity_fix(_cnn(channels), CAP) == expected


def test_the_widening_halves_until_the_model_fits_the_parameter_budget():
    cfg = _cnn("[4,8]")
    assert cnn_params(1, [32, 64], 10) == 320 + 18_496 + 650
    small = Capacity(min_width=128, min_depth=2, max_params=6_000, min_channels=16, channels=32)
    # [32, 64] is 19,466 weights and [16, 32] 5,418: the base halves once
    assert channels_fix(cfg, small) == {"model.channels": [16, 32]}
    tiny = Capacity(min_width=128, min_depth=2, max_params=100, min_channels=16, channels=32)
    assert channels_fix(cfg, tiny) == {}  # nothing wider fits: no restart, not a narrower model


def test_without_cnn_settings_or_a_cnn_nothing_changes():
    mlp_only = Capacity(min_width=128, min_depth=2, max_params=250_000, width=256)
    assert capacity_fix(_cnn("[4,8]"), mlp_only) == {}
    assert capacity_fix(compose_cfg(["model=resnet18"]), CAP) == {}
    # the MLP path is unchanged
    assert capacity_fix(compose_cfg(["model.hidden=[16]"]), CAP) == {"model.hidden": [256, 256]}


@pytest.mark.slow
def test_a_four_channel_cnn_restarts_with_the_default_channels_and_learns(cli, tmp_path):
    run = tmp_path / "run"
    res = cli(
        "model=cnn",
        "model.channels=[4,8]",
        "autotrainer=default",
        "trainer.max_epochs=4",
        f"hydra.run.dir={run}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step 10 UNDERFITTING -> restart: restart as attempt-1 with model.channels=[32, 64]" in (
        res.stdout + res.stderr
    )
    report = json.loads((run / "report.json").read_text())
    (action,) = report["autotrainer"]["actions"]
    assert action["code"] == "UNDERFITTING" and action["changes"] == {"model.channels": [32, 64]}
    final = report["autotrainer"]["attempts"][-1]
    assert final["dir"] == "attempt-1" and final["changes"] == {"model.channels": [32, 64]}
    assert final["test_acc"] > 0.85, final
    config = OmegaConf.load(run / "attempt-1" / ".hydra" / "config.yaml")
    assert list(config.model.channels) == [32, 64]
