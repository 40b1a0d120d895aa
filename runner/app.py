"""What ``python -m runner`` does with one composed config: the LR finder, one train run, or the
AutoTrainer's attempts (each a train run). Tests and benches call :func:`run` in-process.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from runner import distributed


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Run the task ``cfg`` asks for in ``run_dir``; return the sweep objective (or the suggested LR)."""
    from runner.validation import validate

    # a bad value is said before torch is imported (train.build checks what only torch can)
    validate(cfg, build=False)
    from runner import train

    if cfg.get("mode") == "lr_find":
        distributed.require_single_process("mode=lr_find")
        from runner import lr_find

        if cfg.optimizer.lr == "auto":  # the range test sets the LR itself: don't run it twice
            cfg = cfg.copy()
            with open_dict(cfg):
                cfg.optimizer.lr = float(cfg.lr_find.min_lr)
        return lr_find.run(train.build(cfg, Path(run_dir)))
    from runner.autotrainer.settings import autotrainer_enabled

    if autotrainer_enabled(cfg):
        from runner.autotrainer import attempts

        return attempts.run(cfg, run_dir)
    return train.run(cfg, run_dir).objective
