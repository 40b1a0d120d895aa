"""``python -m runner``: compose the config, run, return the objective for sweepers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from runner import distributed
from runner.conf_dir import CONF_DIR
from runner.errors import Interrupted, UserError, report_error
from runner.run_dir import discard_if_unused


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """The Hydra task: one line and exit code 2 for user errors, the objective value otherwise."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        distributed.publish_run_dir(run_dir)  # rank 0 under torchrun: the other ranks wait for this
        from runner import app

        return app.run(cfg, run_dir)
    except UserError as exc:
        report_error(exc)
        if distributed.is_rank_zero():  # a start refused before any work leaves no directory behind
            discard_if_unused(run_dir)
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        if (
            distributed.is_rank_zero()
        ):  # every rank stops; rank 0 saved the checkpoint and says where
            print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)


def main() -> None:
    """``python -m runner`` / ``runner``: agree on one run directory across torchrun's ranks, then run Hydra."""
    try:
        sys.argv = distributed.share_run_dir(sys.argv)
    except UserError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
    # Hydra's composition errors are raised to us (not printed over several lines) and said in one;
    # a user who set HYDRA_FULL_ERROR keeps Hydra's full traceback
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()  # raises SystemExit when the run fails
    except (HydraException, OmegaConfBaseException) as exc:
        distributed.teardown()
        if full_error:
            raise
        from runner.hydra_errors import one_line

        report_error(UserError(one_line(exc, CONF_DIR)))
        sys.exit(UserError.exit_code)
    except BaseException:
        distributed.teardown()
        raise
    distributed.teardown(barrier=True)


if __name__ == "__main__":
    main()
