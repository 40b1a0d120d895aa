"""Simulated runs for the rule tests: a healthy series the tests then bend into a fault."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from diag.series import RunSeries

LN10 = math.log(10)


def converging_run(n: int = 40, seed: int = 0, **fields: Any) -> RunSeries:
    """A converging 10-class run sampled every 10 steps, 4 samples per epoch (AdamW-like settings);
    ``fields`` replace or add ``RunSeries`` fields."""
    rng = np.random.default_rng(seed)
    steps = list(range(10, 10 * n + 1, 10))
    epochs = n // 4
    tr = LN10 * np.exp(-np.arange(epochs) * 4 / 8) + 0.05
    base: dict[str, Any] = dict(
        num_classes=10,
        step=steps,
        loss=list(LN10 * np.exp(-np.arange(n) / 8) + 0.05 + rng.normal(0, 0.01, n)),
        grad_norm=list(1.0 + rng.normal(0, 0.1, n)),
        lr=[1e-3] * n,
        update_ratio=[1e-3] * 8,
        weight_norm=[10.0] * 8,
        layer_step=steps[::5][:8],
        layer_grad_norm={"fc1": [0.5] * 8, "fc2": [0.8] * 8, "fc3": [1.0] * 8},
        epoch_step=steps[3::4][:epochs],
        epoch_train_loss=list(tr),
        epoch_val_loss=list(tr * 1.1 + 0.02),
        epoch_train_acc=list(np.linspace(0.5, 0.99, epochs)),
        epoch_val_acc=list(np.linspace(0.5, 0.97, epochs)),
        epoch_lr=[1e-3] * epochs,
        planned_steps=10 * n,
        momentum=0.9,
        weight_decay=0.01,
        decoupled_weight_decay=True,
        input_mean=0.0,
        input_std=1.0,
    )
    return RunSeries(**{**base, **fields})
