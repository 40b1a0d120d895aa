"""The public fault suite: short digits runs with one known fault each, plus healthy runs.

Shared by ``bench/faults.py`` (does the diagnosis find each fault?) and
``bench/autotrainer.py`` (does the AutoTrainer repair it?). Each case is a list
of ordinary command-line overrides, so any case can be rerun by hand with
``python -m runner <overrides>``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runner.conf_dir import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name: (expected code, overrides)
FAULTS: dict[str, tuple[str, list[str]]] = {
    "lr_far_too_high": ("LOSS_EXPLOSION", ["optimizer=sgd", "optimizer.lr=20"]),
    "lr_too_high": (
        "LOSS_OSCILLATION",
        ["optimizer=adam", "optimizer.lr=0.03", "data.batch_size=16"],
    ),
    "lr_far_too_low": (
        "SLOW_CONVERGENCE",
        ["optimizer=sgd", "optimizer.lr=1e-5", "optimizer.momentum=0", "optimizer.nesterov=false"],
    ),
    "deep_sigmoid": (
        "VANISHING_GRADIENTS",
        [
            "model.activation=sigmoid",
            "model.hidden=[64,64,64,64,64,64,64,64]",
            "optimizer=sgd",
            "optimizer.lr=0.05",
        ],
    ),
    "dead_relu": ("DEAD_NEURONS", ["model.bias_init=-5"]),
    "random_labels": ("STUCK_AT_CHANCE", ["data.label_noise=1.0"]),
    "overfit_tiny_subset": (
        "OVERFITTING",
        ["data.subset=64", "data.batch_size=16", "model.hidden=[512,512]", "trainer.max_epochs=60"],
    ),
    "plateau_patience_0": (
        "LR_DECAYED_TOO_EARLY",
        [
            "optimizer=sgd",
            "optimizer.lr=0.1",
            "scheduler=plateau",
            "scheduler.lr_scheduler.patience=0",
            "scheduler.lr_scheduler.factor=0.1",
        ],
    ),
    "init_x100": ("BAD_INITIALIZATION", ["model.init_scale=100"]),
}

HEALTHY: dict[str, list[str]] = {
    "mlp_adam": [],
    "mlp_sgd_cosine": ["optimizer=sgd", "scheduler=cosine"],
    "cnn_adam": ["model=cnn"],
    "cnn_sgd_onecycle": ["model=cnn", "optimizer=sgd", "scheduler=onecycle", "optimizer.lr=0.05"],
    "mlp_gelu_bn_adamw": ["model.activation=gelu", "model.batchnorm=true", "optimizer=adamw"],
    "mlp_tanh_xavier": ["model.activation=tanh", "model.init=xavier", "optimizer=adam"],
}


def run_case(overrides: list[str], run_dir: Path, seed: int = 42) -> dict:
    """Run the real runner in-process on ``overrides``; return its report.json plus wall time."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from runner.app import run

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, f"seed={seed}"])
    with open_dict(cfg):
        cfg.trainer.progress = False
        cfg.paths.log_dir = str(run_dir.parent)
    t0 = time.perf_counter()
    run(cfg, run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    report["wall_time"] = time.perf_counter() - t0
    return report
