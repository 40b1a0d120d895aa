"""Write the sweep summary (``sweep.md``, ``sweep.png``) when a multirun ends, so a sweep ends with an answer.

Registered in ``runner/conf/hydra/default.yaml`` under ``hydra.callbacks``. It runs in
the launching process after every job has finished, whatever the sweeper
(basic, Optuna) or launcher (basic, joblib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummaryCallback(Callback):
    """``on_multirun_end``: summarise ``hydra.sweep.dir`` with :func:`diag.sweep.summarize` and print it.

    ``on_multirun_start``: make the folder of a SQLite Optuna storage (``sqlite:///<path>``), which
    Optuna opens before any job has created a directory.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = config.hydra.sweeper.get("storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from diag.sweep import render_text, summarize

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = summarize(sweep_dir, write=True)
        except (OSError, ValueError) as exc:
            # a summary problem must not hide the runs: say so and leave the sweep's results alone
            print(f"sweep summary not written: {exc}")
            return
        print("\n" + render_text(summary), flush=True)
