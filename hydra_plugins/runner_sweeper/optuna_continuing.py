"""Optuna's sweeper, continuing a relaunched study in new job folders, with its settings checked first.

A study kept in a storage (``hparams_search=lr_optuna``) continues when its command is run again into its
sweep folder. Hydra's Optuna sweeper numbers that launch's jobs from 0 again, so each new trial was run
in an earlier trial's folder: its report, checkpoints and ``.hydra/`` replaced, a second run appended to
its event files. This sweeper numbers them on from the highest job folder there. Its settings are
checked before the study opens: a typo in ``direction``, a storage that is not a URL, ``n_trials`` or
``n_jobs`` below 1 were a traceback from deep inside Optuna or SQLAlchemy. A continued study's sampler is
reseeded: seeded as at the first launch, it proposed that launch's first trials again.

Imported only by a sweep that selects it (``conf/hydra/sweeper/optuna_continuing.yaml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, ListConfig

DIRECTIONS = ("minimize", "maximize")


def next_job_number(sweep: Path) -> int:
    """One past the highest numbered job folder in ``sweep`` (0 for a new or empty folder)."""
    if not sweep.is_dir():
        return 0
    numbers = [int(p.name) for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1) + 1


def settings_problems(sweeper: DictConfig) -> list[str]:
    """What is wrong with ``hydra.sweeper``'s settings, one line each (none: an empty list)."""
    problems = []
    direction = sweeper.get("direction")
    directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
    for d in directions:
        if str(d).lower() not in DIRECTIONS:
            problems.append(
                f"hydra.sweeper.direction={d} is not valid: use minimize or maximize (the runner's "
                "objective is the best validation loss: minimize)"
            )
    for key in ("n_trials", "n_jobs"):
        value = sweeper.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"hydra.sweeper.{key}={value} is not valid: use a whole number >= 1")
    storage = sweeper.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        problems.append(
            f"hydra.sweeper.storage={storage} is not a database URL: use sqlite:///<path to a .db file> "
            "(or null for a study kept in memory)"
        )
    return problems


class ContinuingOptunaSweeper(OptunaSweeper):
    """:class:`OptunaSweeper` whose jobs continue the sweep folder's numbering (see the module)."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        problems = settings_problems(config.hydra.sweeper)
        if problems:
            from runner.run_dir import discard_unused_sweep

            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            discard_unused_sweep()  # made for this sweep a moment ago, still empty
            sys.exit(2)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # the impl's job counter, which it passes to the launcher as each batch's first job number
        self.sweeper.job_idx = next_job_number(Path(str(config.hydra.sweep.dir)))
        if self.sweeper.job_idx and hasattr(self.sweeper.sampler, "reseed_rng"):
            # a seeded sampler would draw its first (random) trials again: the relaunch repeated the
            # killed launch's LRs, trials the study already has
            self.sweeper.sampler.reseed_rng()
