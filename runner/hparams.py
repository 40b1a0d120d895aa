"""TensorBoard HParams for a run, written into the run's own event files.

``SummaryWriter.add_hparams`` opens a second writer in a time-stamped sub-run,
so the HParams dashboard would show a stray run beside every real one. Here the
three hparams summaries (experiment, session start, session end) go through
the run's writer instead, and the metrics are ordinary scalars of the same run,
so the dashboard lines up the runs of a sweep with their curves.

Every run of a sweep logs the same hparam and metric names, because TensorBoard
takes the column list from whichever run's experiment summary it reads first:
the base list, then every key the sweep can touch (this job's overrides and the
sweeper's ``params``), sorted. A run that diverged or stopped early ends its
session with ``STATUS_FAILURE`` so the dashboard can filter it out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from diag.tensorboard import RUN_PREFIX

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
# Scalars of the run summary sort after ``train/`` and ``val/``: TensorBoard opens its first groups.
METRIC_PREFIX = RUN_PREFIX
# written by the TensorBoard hook at the end of the fit (an identical second point would be noise)
WRITTEN_BY_HOOK = ("test_loss", "test_acc")
# Numbers read from report.json: the run's outcome beside its losses.
OUTCOME_METRICS: tuple[str, ...] = (
    "status",
    "warnings",
    "criticals",
    "autotrainer_actions",
    "skipped_steps",
    "stopped_early",
)
# report.json's status as a number: higher is worse.
STATUS_VALUE = {"not_diagnosed": -1.0, "healthy": 0.0, "warning": 1.0, "critical": 2.0}
# Overrides that say where or how to run, not what was trained (whole keys or their children).
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


def is_hparam_key(key: str) -> bool:
    """False for keys that say where or how to run: ``mode`` excludes ``mode`` but not ``model.x``."""
    return not any(key == p or key.startswith(p + ".") for p in NOT_HPARAMS)


def sweep_keys(task_overrides: list[str], sweeper_params: Any = None) -> list[str]:
    """The keys every run of a sweep shows, sorted: its overrides plus the sweeper's ``params``."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in task_overrides if "=" in o}
    if sweeper_params:
        keys.update(str(k) for k in sweeper_params)
    return sorted(k for k in keys if is_hparam_key(k))


def _override_keys() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    # HydraConfig.get() is a DictConfig at run time (typed as the HydraConf dataclass)
    params = OmegaConf.select(cast(DictConfig, hc), "sweeper.params", default=None)
    return sweep_keys(list(hc.overrides.task), params)


def varying_keys() -> set[str]:
    """The hparams a multirun varies: its sweep overrides (``optimizer.lr=0.03,0.3,30`` in the sweep's
    ``multirun.yaml``) and the sweeper's ``params`` (Optuna's search space); empty for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    hc = HydraConfig.get()
    params = OmegaConf.select(cast(DictConfig, hc), "sweeper.params", default=None)
    keys = {str(k) for k in params} if params else set()
    multirun = Path(hc.runtime.output_dir).parent / "multirun.yaml"  # <sweep>/<job>/ -> <sweep>/
    try:
        task = OmegaConf.select(OmegaConf.load(multirun), "hydra.overrides.task", default=[])
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task or []])
    except (OSError, ValueError, HydraException):  # no readable multirun.yaml: the params alone
        return keys
    keys.update(o.key_or_group for o in parsed if o.is_sweep_override())
    return keys


def _mark_varying(experiment: Any, keys: set[str]) -> None:
    """Set ``differs`` on the columns a sweep varies: TensorBoard lists those first and shows the first
    few columns, which were otherwise the alphabetical ``data``, ``data.batch_size``, ... (``optimizer.lr``
    of an LR sweep left unticked)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in keys
    value.metadata.plugin_data.content = data.SerializeToString()


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
            # a group choice (model=cnn) is a config node, or nothing at its own key when the group is
            # placed elsewhere (diag=full fills callbacks.diagnostics): show the option name
            out[key] = (
                _value(node, target=key.endswith("_target_"))
                if node is not None and not OmegaConf.is_config(node)
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
    if node is None:
        return "none"
    return str(_value(node.get("_target_"), target=True)) if "_target_" in node else key


def outcome(report: dict[str, Any]) -> dict[str, float]:
    """The run's outcome as numbers (status, warnings, criticals, actions, skipped steps, early stop)."""
    issues = report.get("issues") or []
    actions = (report.get("autotrainer") or {}).get("actions") or []
    return {
        "status": STATUS_VALUE.get(str(report.get("status")), -1.0),
        "warnings": float(sum(i.get("severity") == "warning" for i in issues)),
        "criticals": float(sum(i.get("severity") == "critical" for i in issues)),
        "autotrainer_actions": float(sum(a.get("action") != "give_up" for a in actions)),
        "skipped_steps": float((report.get("metrics") or {}).get("skipped_steps") or 0),
        "stopped_early": float(bool(report.get("stopped"))),
    }


def failed(report: dict[str, Any]) -> bool:
    """A run that diverged, stopped early or never got a finite validation loss failed."""
    from diag.codes import BLOWUP_CODES

    best = (report.get("metrics") or {}).get("best_val_loss")
    return (
        bool(report.get("stopped"))
        or bool(report.get("interrupted"))
        or any(i.get("code") in BLOWUP_CODES for i in report.get("issues") or [])
        or not isinstance(best, (int, float))
        or not math.isfinite(best)
    )


def _session_end(failure: bool) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    status = Status.Value("STATUS_FAILURE" if failure else "STATUS_SUCCESS")
    content = HParamsPluginData(
        session_end_info=SessionEndInfo(status=status), version=PLUGIN_DATA_VERSION
    )
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)])


def log_hparams(writer: Any, cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write hparams and ``x_run/<metric>`` scalars into ``writer``'s own event file; returns the hparams.

    The outcome (status, issue counts, actions, early stop) comes from the ``report.json`` rank 0
    has just written beside the event files (in the run directory); without one the run counts as not
    diagnosed.
    """
    from torch.utils.tensorboard.summary import hparams

    run_dir = Path(writer.log_dir)
    hp = hparam_dict(cfg, run_dir)
    found = run_dir / "report.json"
    report: dict[str, Any] = (
        json.loads(found.read_text()) if found.exists() else {"metrics": metrics}
    )
    values: dict[str, Any] = {m: metrics.get(m) for m in METRICS}
    values.update(outcome(report))
    metric_dict = {METRIC_PREFIX + m: values[m] for m in (*METRICS, *OUTCOME_METRICS)}
    experiment, session_start, _ = hparams(hp, metric_dict)
    _mark_varying(experiment, varying_keys())
    session_end = _session_end(failed(report))
    # the run's writer (add_hparams would open a sub-run instead)
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    step = int(metrics.get("steps") or 0)
    hook = OmegaConf.select(cfg, "callbacks.tensorboard", default=None) is not None
    written = {METRIC_PREFIX + m for m in WRITTEN_BY_HOOK} if hook else set()
    for tag, value in metric_dict.items():
        if tag in written:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(tag, float(value), step)
    writer.flush()
    return hp
