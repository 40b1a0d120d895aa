"""Every conf/experiment/*.yaml composes, builds, states its target accuracy, and runs a few real steps."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import CONF, compose_cfg
from helpers.datasets import write_cifar10, write_cifar100, write_mnist
from hydra.utils import instantiate

from runner.app import run
from runner.validation import validate

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
EXPECTED = {
    "mnist_cnn": ("MNISTDataModule", "CNN"),
    "fashion_mnist_cnn": ("FashionMNISTDataModule", "CNN"),
    "cifar10_resnet18": ("CIFAR10DataModule", "resnet18"),
    "cifar100_resnet18": ("CIFAR100DataModule", "resnet18"),
}
WRITE = {
    "mnist": lambda r: write_mnist(r, "MNIST"),
    "fashion": lambda r: write_mnist(r, "FashionMNIST"),
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
}


def test_the_four_recipes_exist():
    assert set(EXPECTED) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert re.search(r"reach .*\d+(\.\d+)?% test accuracy", text), (
        "state the accuracy the recipe is meant to reach"
    )
    cfg = compose_cfg([f"experiment={name}"])
    validate(cfg)
    if name in EXPECTED:
        data_cls, model_target = EXPECTED[name]
        assert cfg.data._target_.endswith(data_cls) and cfg.model._target_.endswith(model_target)
    assert (
        cfg.data.augmentation == "standard"
        and cfg.scheduler.lr_scheduler._target_
        and cfg.trainer.max_epochs > 1
    )
    model = instantiate(cfg.model)
    x = torch.randn(2, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    assert model(x).shape == (2, cfg.data.num_classes)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_for_a_few_steps_on_tiny_data(tmp_path, name):
    root = tmp_path / "data"
    WRITE[name.split("_")[0]](root)
    overrides = [
        f"experiment={name}",
        f"data.root={root}",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        "trainer.max_steps=2",
        "diag=off",
    ]
    if "resnet18" in name:
        # the recipe's network, narrower, so CPU steps take seconds
        overrides.append("model.width=8")
    cfg = compose_cfg(overrides, tmp_path)
    run(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["metrics"]["steps"] == 2 and report["metrics"]["test_acc"] is not None
