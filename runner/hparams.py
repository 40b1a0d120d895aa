"""TensorBoard HParams for a run, written into the run's own event files.

``SummaryWriter.add_hparams`` opens a second writer in a time-stamped sub-run,
so the HParams dashboard would show a stray run beside every real one. Here the
three hparams summaries (experiment, session start, session end) go through
the run's writer instead, and the metrics are ordinary scalars of the same run,
so the dashboard lines up the runs of a sweep with their curves.

Every run logs the same hparam and metric names (a fixed list plus the keys the
user overrode), because TensorBoard takes the column list from whichever run's
experiment summary it reads first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# (name shown in TensorBoard, config key); ``_target_`` keys are shown as the class name.
BASE_HPARAMS: tuple[tuple[str, str], ...] = (
    ("optimizer", "optimizer._target_"),
    ("optimizer.lr", "optimizer.lr"),
    ("optimizer.weight_decay", "optimizer.weight_decay"),
    ("model", "model._target_"),
    ("data", "data._target_"),
    ("data.batch_size", "data.batch_size"),
    ("scheduler", "scheduler.lr_scheduler._target_"),
    ("trainer.max_epochs", "trainer.max_epochs"),
    ("trainer.precision", "trainer.precision"),
    ("seed", "seed"),
)
METRICS: tuple[str, ...] = (
    "best_val_loss",
    "final_val_loss",
    "final_val_acc",
    "test_loss",
    "test_acc",
    "final_train_loss",
)
METRIC_PREFIX = "hparams/"
# Overrides that say where or how to run, not what was trained.
NOT_HPARAMS = (
    "paths",
    "hydra",
    "trainer.progress",
    "trainer.device",
    "trainer.resume",
    "mode",
    "hparams_search",
)


def _value(v: Any, target: bool = False) -> int | float | str | bool:
    """TensorBoard takes numbers, strings and bools; a ``_target_`` shows as its class name, the rest as text."""
    if isinstance(v, (bool, int, float)):
        return v
    if v is None:
        return "none"
    if isinstance(v, str):
        return v.rsplit(".", 1)[-1] if target else v
    return json.dumps(OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)


def _override_keys() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = []
    for o in HydraConfig.get().overrides.task:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" in o and not key.startswith(NOT_HPARAMS):
            keys.append(key)
    return keys


def hparam_dict(
    cfg: DictConfig, run_dir: Path | None = None
) -> dict[str, int | float | str | bool]:
    """The hparams of a run: the base list, then every overridden key; ``lr=auto`` shows the LR actually used."""
    out: dict[str, int | float | str | bool] = {}
    for name, key in BASE_HPARAMS:
        v = OmegaConf.select(cfg, key, default=None)
        out[name] = _value(v, target=key.endswith("_target_"))
    for key in _override_keys():
        if key not in out:
            node = OmegaConf.select(cfg, key, default=None)
            # a group choice (model=cnn) is a config node: show the option name, not the whole node
            out[key] = (
                _value(node, target=key.endswith("_target_"))
                if not OmegaConf.is_config(node)
                else _choice(key, node)
            )
    if out.get("optimizer.lr") == "auto" and run_dir is not None:
        found = run_dir / "lr_find.json"
        if found.exists():
            out["optimizer.lr"] = float(json.loads(found.read_text())["suggested_lr"])
    return out


def _choice(key: str, node: Any) -> str:
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get(key) if HydraConfig.initialized() else None
    if choice is not None:
        return str(choice)
    return str(_value(node.get("_target_"), target=True)) if "_target_" in node else key


def log_hparams(writer: Any, cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write hparams and ``hparams/<metric>`` scalars into ``writer``'s own event file; returns the hparams."""
    from torch.utils.tensorboard.summary import hparams

    run_dir = Path(writer.log_dir).parent
    hp = hparam_dict(cfg, run_dir)
    metric_dict = {METRIC_PREFIX + m: metrics.get(m) for m in METRICS}
    experiment, session_start, session_end = hparams(hp, metric_dict)
    # the run's writer (add_hparams would open a sub-run instead)
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    step = int(metrics.get("steps") or 0)
    for tag, value in metric_dict.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(tag, float(value), step)
    writer.flush()
    return hp
