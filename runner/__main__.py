"""``python -m runner``: compose the config, run, return the objective for sweepers."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.errors import UserError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """The Hydra task: one line and exit code 2 for user errors, the objective value otherwise."""
    try:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if cfg.get("mode") == "lr_find":
            from runner.lr_find import run as run_lr_find

            return run_lr_find(cfg, run_dir)
        from runner.task import run

        return run(cfg, run_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
