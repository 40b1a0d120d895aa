"""The runner's recommendations name only the overrides the run's model has."""

from __future__ import annotations

from diag.advice import RUNNER, Advice, render, runner_table

MLP = {
    "hidden": [256, 256],
    "dropout": 0.1,
    "activation": "relu",
    "init": "default",
    "bias_init": None,
    "batchnorm": False,
}
CNN = {
    "channels": [4, 8],
    "dropout": 0.0,
    "activation": "relu",
    "init": "default",
    "bias_init": None,
    "batchnorm": True,
}
RESNET = {"width": 8, "zero_init_residual": False}
BIGGER = Advice("Use a bigger model{capacity}")
DROPOUT = Advice("Add dropout{dropout}", {"dropout": "0.2"})


def test_the_mlp_reads_the_table_as_it_was():
    assert runner_table(MLP) == RUNNER


def test_a_cnn_grows_its_channels_and_a_resnet_its_width():
    assert render(BIGGER, runner_table(CNN)) == (
        "Use a bigger model (model.channels=[8,16] or model=resnet18)"
    )
    assert render(BIGGER, runner_table(RESNET)) == "Use a bigger model (model.width=16)"
    assert render(DROPOUT, runner_table(CNN)) == "Add dropout (model.dropout=0.2)"


def test_a_key_the_model_lacks_is_left_out():
    table = runner_table(RESNET)
    assert render(DROPOUT, table) == "Add dropout"  # resnet18 has no model.dropout
    assert not any("model.hidden" in e or "model.activation" in e for e in table.values())
    assert table["learning_rate"] == RUNNER["learning_rate"]  # what is not the model's stays
    assert "capacity" not in runner_table({"depth": 3})  # nothing to grow: no override named
