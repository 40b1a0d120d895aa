"""Where the Hydra config tree lives (``runner/conf`` inside the package, so a wheel carries it), and the
resolvers it uses besides OmegaConf's and Hydra's own.

An absolute path works both for ``python -m runner`` and for the ``runner`` console script.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def _abspath(path: str) -> str:
    return os.path.abspath(str(path))


# ${runner.abspath:${hydra.sweep.dir}}: the Optuna study of a sweep directory, however it was spelled
OmegaConf.register_new_resolver("runner.abspath", _abspath, replace=True)


def _basic_sweeper() -> str:
    """The compose-once basic sweeper when its plugin is importable (it ships in this project's
    ``hydra_plugins``; an install made before it existed lacks it), else Hydra's own basic sweeper."""
    if importlib.util.find_spec("hydra_plugins.runner_sweeper") is not None:
        return "hydra_plugins.runner_sweeper.ComposeOnceSweeper"
    return "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


# ${runner.basic_sweeper:}: hydra/sweeper=compose_once's class
OmegaConf.register_new_resolver("runner.basic_sweeper", _basic_sweeper, replace=True)
