"""Hydra's basic sweeper, composing each job's config once instead of twice.

Hydra's ``BasicSweeper`` composes every job of a batch to check that it can be composed (a bad override
fails before any job runs), throws the configs away, and its launcher composes each job again. On a
small run that second composition is a visible share of a trial: 0.11 s of CPU each on digits, where a
stopped MLP trial trains for a tenth of a second. This sweeper keeps the configs its check composed and
hands each to the launcher when it asks for that job: the same check, the same configs
(``load_sweep_config`` is a function of the master config and the job's overrides alone), one
composition per job.

Only the basic launcher's own calls are served from the kept configs; a launcher that composes in
another process (joblib, submitit) composes there, as before. A Hydra plugin must live in the ``hydra_plugins``
namespace, so this module does; ``runner/conf/hydra/sweeper/compose_once.yaml`` selects it when it is
importable (``runner.conf_dir``) and Hydra's own basic sweeper otherwise.

When the sweep compares its trials with each other (``stop_on`` set and ``callbacks.stop_on.behind_sweep``
on: :mod:`runner.behind_sweep`), the jobs of a batch run from the middle of the list out (6, 5, 7, 4,
... of 12) instead of in the listed order. A grid listed in order (LRs ascending) has its best trials
in the middle and its weak ones at both ends; run in order, the weak low LRs would train before any
good trial finished to compare them with. Each job keeps its number and directory (``<sweep>/<job>``),
and the sweep gets its results back in the listed order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


def _parse(overrides: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


class KeptCompositions:
    """A config loader that hands out a job's config composed by the batch check once, then composes.

    A job whose overrides differ from an already composed job's only in the values of plain config keys
    (``optimizer.lr=0.1`` where the other has ``optimizer.lr=0.2``: no config group, no ``+``/``~``, no
    ``hydra.`` key) is not composed from the YAML again: it is the other job's config with those values
    set the way Hydra sets a command-line override (``OmegaConf.update(..., merge=True)``), its
    ``hydra.overrides.task`` and ``hydra.job.override_dirname`` made from its own overrides. A grid over
    one hyperparameter composes once; on digits a composition (0.11 s of CPU) costs as much as a stopped
    trial's training.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.kept: dict[tuple[str, ...], DictConfig] = {}
        self.composed: list[
            tuple[list[Override], DictConfig]
        ] = []  # this batch's full compositions

    def keep(self, master_config: DictConfig, overrides: Sequence[str]) -> None:
        """Compose ``overrides`` now (raising what Hydra raises) and keep the result for the launcher."""
        parsed = _parse(overrides)
        for done, cfg in self.composed:
            derived = derive(cfg, done, parsed)
            if derived is not None:
                OmegaConf.copy_cache(from_config=master_config, to_config=derived)
                self.kept[tuple(overrides)] = derived
                return
        cfg = self.loader.load_sweep_config(master_config, list(overrides))
        self.composed.append((parsed, copy.deepcopy(cfg)))
        self.kept[tuple(overrides)] = cfg

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        kept = self.kept.pop(
            tuple(sweep_overrides), None
        )  # the launcher changes what it gets: once
        if kept is not None:
            return kept
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:  # everything else is the loader's own
        # not set yet (unpickling): not the loader's to answer
        if name in ("loader", "kept", "composed"):
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent to another process (joblib's workers) without the kept configs: it composes there."""
        return (KeptCompositions, (self.loader,))


def middle_out(n: int) -> list[int]:
    """``0..n-1`` from the middle out: 6, 5, 7, 4, 8, 3, 9, 2, 10, 1, 11, 0 for 12."""
    mid = n // 2
    order = [mid]
    for k in range(1, n):
        order += [i for i in (mid - k, mid + k) if 0 <= i < n]
    return order[:n]


def compares_trials(config: DictConfig) -> bool:
    """The sweep's trials are compared with each other: ``stop_on`` set, ``behind_sweep`` on."""
    level = OmegaConf.select(config, "stop_on", default=None)
    rule = OmegaConf.select(config, "callbacks.stop_on.behind_sweep", default=False)
    return level is not None and bool(rule)


class MiddleOutLauncher:
    """A launcher that runs each batch's jobs from the middle out, one job at a time, each under the job
    number it has in the listed order, and returns the results in the listed order."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        results: dict[int, JobReturn] = {}
        for i in middle_out(len(job_overrides)):
            (results[i],) = self.launcher.launch([job_overrides[i]], initial_job_idx + i)
        return [results[i] for i in range(len(job_overrides))]

    def __getattr__(self, name: str) -> Any:  # everything else is the launcher's own
        if name == "launcher":
            raise AttributeError(name)
        return getattr(self.launcher, name)


def derive(cfg: DictConfig, done: list[Override], overrides: list[Override]) -> DictConfig | None:
    """``cfg`` (composed with the overrides ``done``) made into the config of ``overrides``, or None when
    they differ in anything but the values of plain config keys (then the job is composed)."""
    if len(done) != len(overrides):
        return None
    changed = []
    groups = set(cfg.hydra.runtime.choices or {})
    for a, b in zip(done, overrides):
        if a.input_line == b.input_line:
            continue
        plain = all(
            o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_hydra_override()
            and not o.is_sweep_override()
            and o.key_or_group not in groups
            for o in (a, b)
        )
        if not plain or a.key_or_group != b.key_or_group:
            return None
        changed.append(b)
    out = copy.deepcopy(cfg)
    for o in changed:
        OmegaConf.update(out, o.key_or_group, o.value(), merge=True)
    app = [o for o in overrides if not o.is_hydra_override()]
    job = out.hydra.job
    out.hydra.overrides.task = [o.input_line for o in app]
    job.override_dirname = get_overrides_dirname(
        overrides=app,
        kv_sep=job.config.override_dirname.kv_sep,
        item_sep=job.config.override_dirname.item_sep,
        exclude_keys=job.config.override_dirname.exclude_keys,
    )
    return out


class ComposeOnceSweeper(BasicSweeper):
    """``BasicSweeper`` whose batch check keeps the configs it composed for the launcher."""

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.kept = KeptCompositions(hydra_context.config_loader)
        context = HydraContext(config_loader=self.kept, callbacks=hydra_context.callbacks)  # type: ignore[arg-type]
        super().setup(hydra_context=context, task_function=task_function, config=config)
        # the sweep folder's multirun.yaml before sweep() saves this launch's over it
        where = OmegaConf.select(config, "hydra.sweep.dir", throw_on_resolution_failure=False)
        saved = Path(str(where)) / "multirun.yaml" if where is not None else None
        self.previous_sweep = saved.read_bytes() if saved is not None and saved.is_file() else None
        # only Hydra's in-process launcher, which runs jobs one after another anyway: a parallel one
        # (joblib, submitit) would be made to wait for each job, and its jobs run side by side regardless
        if compares_trials(config) and isinstance(self.launcher, BasicLauncher):
            self.launcher = MiddleOutLauncher(self.launcher)  # type: ignore[assignment]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job of the batch (a bad one fails the sweep before any job runs), keeping each;
        a job folder holding another job's run refuses the sweep before any job writes into one."""
        assert self.config is not None
        first = getattr(self, "_next_job", 0)
        self._next_job = first + len(batch)
        refuse_other_runs(self.config, batch, first, self.previous_sweep)
        self.kept.kept.clear()  # a batch's configs live until the next batch at most
        self.kept.composed.clear()
        for overrides in batch:
            self.kept.keep(self.config, overrides)


def refuse_other_runs(
    config: DictConfig,
    batch: Sequence[Sequence[str]],
    first: int,
    previous_sweep: bytes | None = None,
) -> None:
    """Exit (one line, code 2) when job ``first + i``'s folder holds a run made with other overrides.

    A sweep relaunched with ``trainer.resume=auto`` and an edited value list (``optimizer.lr=1e-3,2e-3``,
    then ``1e-3,1.5e-3,2e-3``) gave job 1 a new value: Hydra rewrote its ``.hydra/`` before the job
    started, the resume was refused, and the failed job's report replaced the finished run's, so the
    summary listed 0.0015 with 0.002's files. Only the default job folders (``hydra.sweep.subdir`` of
    ``${hydra.job.num}``) are known here. ``previous_sweep``: the sweep folder's ``multirun.yaml`` before
    this launch, put back when it is refused.
    """
    import sys

    import yaml

    from runner.resume import task_overrides as _task

    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    if not isinstance(raw, dict) or raw.get("subdir") != "${hydra.job.num}":
        return
    where = OmegaConf.select(config, "hydra.sweep.dir", throw_on_resolution_failure=False)
    if where is None:
        return
    sweep = Path(str(where))
    for i, overrides in enumerate(batch):
        job = sweep / str(first + i)
        listed = job / ".hydra" / "overrides.yaml"
        if not listed.is_file() or not any(
            (job / m).exists() for m in ("report.json", "checkpoints")
        ):
            continue
        try:
            theirs = yaml.safe_load(listed.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # unreadable: the job's own checks say what is wrong with it
        if not isinstance(theirs, list):
            continue
        made, asked = _task([str(o) for o in theirs]), _task(overrides)
        if made == asked:
            continue
        was, now = sorted(set(made) - set(asked)), sorted(set(asked) - set(made))
        print(
            f"error: hydra.sweep.dir={sweep}: job {first + i} holds a run made with "
            f"{' '.join(was) or 'other overrides'}, where this sweep's job {first + i} has "
            f"{' '.join(now) or 'other overrides'}: relaunch with the sweep's own values to continue it, "
            "or choose another hydra.sweep.dir (nothing was changed)",
            file=sys.stderr,
        )
        if previous_sweep is not None:  # Hydra saved this launch's config over the sweep's own
            (sweep / "multirun.yaml").write_bytes(previous_sweep)
        sys.exit(2)
