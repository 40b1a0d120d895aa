"""``python -m runner``: compose the config, run, return the objective for sweepers."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from runner import distributed
from runner.conf_dir import CONF_DIR
from runner.errors import Interrupted, UserError, report_error
from runner.run_dir import claim, discard_if_unused, discard_unused_sweep, release

# whether the user set HYDRA_FULL_ERROR=1 (main sets it for every run, so that Hydra raises its errors)
_full_error = False


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """The Hydra task: one line and exit code 2 for user errors, the objective value otherwise."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    # runner.report (torch behind it) is imported where a branch needs it: a value app.run's validation
    # refuses is said before torch is imported
    try:
        distributed.publish_run_dir(run_dir)  # rank 0 under torchrun: the other ranks wait for this
        if distributed.launch_rank() == 0:  # one owner: a submitit job's tasks are not grouped yet
            claim(run_dir)  # already held when main() could claim it before Hydra wrote into it
    except UserError as exc:  # a directory that is not ours to write: nothing is written into it
        report_error(exc)
        if multirun:
            from runner.report import objective_of

            return objective_of({}, cfg.get("objective_penalty"))
        sys.exit(exc.exit_code)
    try:
        from runner import app

        search = HydraConfig.get().runtime.choices.get("hparams_search")
        if not multirun and search:  # one run at the search's defaults, no search: said, not done
            raise UserError(
                f"hparams_search={search} is a search over trials: add -m "
                f"(python -m runner -m hparams_search={search} ...)"
            )
        done = None
        if multirun:
            from runner.report import finished_job

            done = finished_job(run_dir)
        if done is not None:  # a relaunched sweep: this job finished before, with these overrides
            print(f"job {run_dir.name} already finished ({run_dir}/report.json): skipped")
            from runner.report import objective_of

            return objective_of(done, cfg.get("objective_penalty"))
        return app.run(cfg, run_dir)
    except (UserError, InstantiationException) as exc:
        # an object the build could not make is said by its cause, here in the task: raised on, Hydra
        # would print "Error executing job with overrides" and leave the run directory behind
        if isinstance(exc, InstantiationException) and _full_error:
            raise  # the user's HYDRA_FULL_ERROR=1: Hydra's traceback, the whole cause chain
        from runner.hydra_errors import one_line

        error = exc if isinstance(exc, UserError) else UserError(one_line(exc, CONF_DIR))
        report_error(error)
        if (
            multirun
        ):  # one bad job of a sweep is recorded as failed and the sweep goes on to the next
            from runner.report import report_failed_job

            return report_failed_job(run_dir, str(error), cfg.get("objective_penalty"))
        if distributed.is_rank_zero():  # a start refused before any work leaves no directory behind
            discard_if_unused(run_dir)
        sys.exit(error.exit_code)
    except Interrupted as exc:
        if (
            distributed.is_rank_zero()
        ):  # every rank stops; rank 0 saved the checkpoint and says where
            print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C where no handler finishes the step: set-up, or a second one
        if distributed.is_rank_zero():
            print(aborted(run_dir), file=sys.stderr)
        sys.exit(130)
    finally:
        if multirun:  # a long sweep in one process holds one lock at a time, not one per job
            release(run_dir)


def aborted(run_dir: Path) -> str:
    """The one line for a Ctrl-C that stopped the run where it was: what is left of it, and how to go on."""
    if discard_if_unused(run_dir):
        return f"interrupted by SIGINT before the run started: nothing kept ({run_dir} removed)"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        from runner.resume import launch_resume_command

        return (
            f"interrupted by SIGINT; its last checkpoint is kept: resume with: "
            f"{launch_resume_command(run_dir)}"
        )
    return f"interrupted by SIGINT before its first checkpoint: {run_dir} keeps its logs"


def claim_given_run_dir(args: list[str]) -> Path | None:
    """Own the run directory named on the command line (``hydra.run.dir=...``) before Hydra writes into it.

    A second run into a directory in use is refused here, before its config or log could overwrite
    the first one's. Directories Hydra names itself (fresh timestamps, multirun jobs, interpolations)
    are claimed by ``run_dir.ClaimRunDir`` once composed, still before Hydra writes into them (multirun
    jobs first thing in the task). Returns the directory claimed.
    """
    if any(
        a in ("-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-c", "--cfg")
        for a in args
    ):
        return None
    given = [a for a in args if a.startswith("hydra.run.dir=")]
    if not given or not distributed.is_rank_zero():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_overrides(given[-1:])[0].value()
    except HydraException:
        return None  # Hydra reports the override it cannot parse, in one line
    if not isinstance(value, str) or "${" in value:
        return None
    run_dir = Path(value)
    claim(run_dir)
    return run_dir


def flags_first(argv: list[str]) -> list[str]:
    """``-m``/``--multirun`` moved before the overrides: Hydra's argparse takes overrides as one positional
    list, so ``python -m runner optimizer.lr=1e-3,1e-2 -m`` would otherwise end in a usage error."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    return [argv[0], *flags, *rest]


def main() -> None:
    """``python -m runner`` / ``runner``: agree on one run directory across torchrun's ranks, then run Hydra.

    The process's last act: it returns (or exits) with the heap frozen for the interpreter's exit. Code
    that trains inside a process that goes on (a notebook, a script's loop) calls
    :func:`runner.train.run`, which leaves the heap as it found it.
    """
    # The modules imported so far (torch among them) live as long as the process: the collector's full
    # passes during Hydra's composition and the build skip them (~0.14 s of start-up). See runner.train.run.
    gc.freeze()
    try:
        sys.argv = distributed.share_run_dir(flags_first(sys.argv))
        claimed = claim_given_run_dir(sys.argv[1:])
    except UserError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
    # Hydra's composition errors are raised to us (not printed over several lines) and said in one;
    # a user who set HYDRA_FULL_ERROR keeps Hydra's full traceback
    global _full_error
    full_error = _full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()  # raises SystemExit when the run fails
    except (HydraException, OmegaConfBaseException) as exc:
        distributed.teardown()
        if full_error:
            raise
        from runner.hydra_errors import one_line

        report_error(UserError(one_line(exc, CONF_DIR)))
        if claimed is not None:  # composition failed: the directory claimed for it goes if unused
            discard_if_unused(claimed)
        discard_unused_sweep()  # a sweep none of whose jobs composed leaves no folder behind
        sys.exit(UserError.exit_code)
    except KeyboardInterrupt:  # during Hydra's composition, before the task started
        distributed.teardown()
        if claimed is not None:
            discard_if_unused(claimed)
        print("interrupted by SIGINT before the run started: nothing kept", file=sys.stderr)
        sys.exit(130)
    except BaseException:
        distributed.teardown()
        raise
    else:
        distributed.teardown(barrier=True)
        from runner.sweep_callback import sweep_exit_code

        # a multirun in which no job succeeded: the summary listed the jobs, each printed its error
        if sweep_exit_code():
            sys.exit(sweep_exit_code())
    finally:
        # The process ends here. Python's exit collects every object the collector tracks, torch's
        # import-time objects among them (0.6-1.3 s on a 2-core machine, after the run's last line is
        # printed): frozen, they are skipped and freed as the interpreter frees them anyway.
        gc.freeze()


if __name__ == "__main__":
    main()
