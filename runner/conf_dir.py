"""Where the Hydra config tree lives: ``conf/`` beside the ``runner`` package (the project root).

An absolute path works both for ``python -m runner`` and for the ``runner`` console script; a relative
``config_path`` would be resolved as a package by the console script and not be found.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
