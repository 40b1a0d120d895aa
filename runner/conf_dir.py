"""Where the Hydra config tree lives (``runner/conf`` inside the package, so a wheel carries it), and the
resolver it uses besides OmegaConf's and Hydra's own.

An absolute path works both for ``python -m runner`` and for the ``runner`` console script.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def _abspath(path: str) -> str:
    return os.path.abspath(str(path))


# ${runner.abspath:${hydra.sweep.dir}}: the Optuna study of a sweep directory, however it was spelled
OmegaConf.register_new_resolver("runner.abspath", _abspath, replace=True)
