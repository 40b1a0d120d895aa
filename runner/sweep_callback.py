"""Write the sweep summary (``sweep.md``, ``sweep.png``) when a multirun ends, so a sweep ends with an answer.

Registered in ``runner/conf/hydra/default.yaml`` under ``hydra.callbacks``. It runs in
the launching process after every job has finished, whatever the sweeper
(basic, Optuna) or launcher (basic, joblib).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# a sweep that ran its jobs and none succeeded: 1, as a result that is no answer (`diag analyze --fail-on`);
# 2 stays a command line refused before any work
EXIT_NO_JOB_SUCCEEDED = 1

_exit_code = 0  # the launching process's verdict on its last multirun, read by runner.__main__.main


def sweep_exit_code() -> int:
    """The exit code the last multirun of this process calls for: 0, or :data:`EXIT_NO_JOB_SUCCEEDED`."""
    return _exit_code


def no_job_succeeded(runs: list[dict[str, Any]]) -> bool:
    """True when the sweep has runs and every one failed.

    "Failed" is ``diag.sweep``'s word: a job refused with an error (``report.json`` status ``failed``)
    or one that left no report. A diverged run or one ``stop_on`` ended is not a failure: it ran to its
    end and gave the sweeper its objective (a penalty for a divergence), and the summary lists it under
    its own word; a sweep of such runs answered (this range diverges) and exits 0. A sweep whose
    every job was refused gave no answer at all, and a script or CI job must see that in the exit code.
    """
    return bool(runs) and all(r.get("status") == "failed" for r in runs)


class SweepSummaryCallback(Callback):
    """``on_multirun_end``: summarise ``hydra.sweep.dir`` with :func:`diag.sweep.summarize` and print it.

    ``on_multirun_start``: make the folder of a SQLite Optuna storage (``sqlite:///<path>``), which
    Optuna opens before any job has created a directory.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _exit_code
        _exit_code = 0
        storage = config.hydra.sweeper.get("storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the summary; a sweep in which no job succeeded says so in one line and exits 1."""
        global _exit_code
        from diag.sweep import render_text, summarize

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary = summarize(sweep_dir, write=True)
        except (OSError, ValueError) as exc:
            # a summary problem must not hide the runs: say so and leave the sweep's results alone
            print(f"sweep summary not written: {exc}")
            return
        print("\n" + render_text(summary), flush=True)
        if no_job_succeeded(summary["runs"]):
            _exit_code = EXIT_NO_JOB_SUCCEEDED
            names = ", ".join(str(r["name"]) for r in summary["runs"])
            print(
                f"error: no job of the sweep succeeded (failed: {names}): fix the error each job "
                f"printed (its report.json in {sweep_dir} keeps it) and run the sweep again",
                file=sys.stderr,
                flush=True,
            )
