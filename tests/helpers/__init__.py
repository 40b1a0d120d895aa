"""What tests share: compose the real config tree, run the real CLI in a subprocess."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from runner.conf_dir import CONF_DIR

from .cli_fork import forkable, run, run_forked

ROOT = Path(__file__).resolve().parents[2]
CONF = Path(CONF_DIR)


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    """Hydra's composition of ``overrides``, once per pytest process: a pure function of the config tree
    and the overrides (interpolations stay unresolved until read; ``compose`` sets no global state), and
    most of the unit tests' time was spent composing the same few override lists again (~0.12 s each,
    YAML parsed anew every time). A failed composition is not kept: it raises every time."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def compose_cfg(overrides: list[str] | None = None, tmp_path: Path | None = None) -> DictConfig:
    """Compose ``runner/conf/config.yaml`` with overrides, as the CLI would (hydra node resolved for paths):
    a config of the caller's own (a deep copy of the composition), free to change."""
    cfg = copy.deepcopy(_composed(tuple(overrides or [])))
    with open_dict(cfg):
        cfg.trainer.progress = False
        if tmp_path is not None:
            cfg.paths.log_dir = str(tmp_path)
            cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


def event_file(run: Path) -> str:
    """The one TensorBoard event file a run (or an attempt) wrote in its own directory: the runner writes
    them there, and a reader of the directory tree (tbparse) would also read ``attempt-N/`` below it."""
    files = sorted(Path(run).glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return str(files[0])


def run_cli(
    args: list[str],
    tmp_path: Path,
    module: str = "runner",
    run_dir: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    extra: bool = True,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> ...`` for real with every output under ``tmp_path``: in a process forked
    from one that has imported torch and Hydra already (:mod:`helpers.cli_fork`), or with ``fresh`` (or an
    environment variable read at import time set) in a new interpreter."""
    cmd = [sys.executable, "-m", module, *args]
    if module == "runner" and extra:
        cmd += [f"paths.log_dir={tmp_path}", "trainer.progress=false"]
        if run_dir is not None:
            cmd.append(f"hydra.run.dir={run_dir}")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not fresh and forkable(full_env):
        return run_forked(cmd, tmp_path, full_env, timeout)
    return subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def run_bench(
    script: str, tmp_path: Path, *args: str, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``python bench/<script>.py --quick --out <tmp_path>/<script>.md *args``, forked; it must exit 0 and
    write its markdown under the heading naming the command (:mod:`bench.results_file`)."""
    out = tmp_path / f"{script}.md"
    proc = run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), "--quick", "--out", str(out), *args],
        tmp_path,
        timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text().startswith(f"# bench/{script}.py\n\n`python bench/{script}.py --quick")
    return proc
