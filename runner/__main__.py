"""``python -m runner``: compose the config, run, return the objective for sweepers."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner import distributed
from runner.conf_dir import CONF_DIR
from runner.errors import Interrupted, UserError, report_error


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """The Hydra task: one line and exit code 2 for user errors, the objective value otherwise."""
    try:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        distributed.publish_run_dir(run_dir)  # rank 0 under torchrun: the other ranks wait for this
        from runner import app

        return app.run(cfg, run_dir)
    except UserError as exc:
        report_error(exc)
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
    try:
        hydra_main()  # raises SystemExit when the run fails
    except BaseException:
        distributed.teardown()
        raise
    distributed.teardown(barrier=True)


if __name__ == "__main__":
    main()
