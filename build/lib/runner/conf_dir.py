"""Where the Hydra config tree lives: ``runner/conf`` inside the package, so a wheel carries it.

An absolute path works both for ``python -m runner`` and for the ``runner`` console script.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
