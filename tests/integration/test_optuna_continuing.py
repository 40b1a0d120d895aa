"""hparams_search=lr_optuna relaunched into its sweep folder: new trials in new job folders.

Hydra's Optuna sweeper numbered a relaunch's jobs from 0 again, so its first trial ran in the earlier
trial 0's folder and replaced its report, checkpoints and config; a seeded sampler also proposed the
first launch's LRs again. Its settings are checked before the study opens (a typo was a traceback).
"""

from __future__ import annotations

import hashlib

import pytest
from helpers import run_cli

TINY = ["trainer.max_epochs=1", "diag=off", "data.subset=256"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_relaunched_study_runs_new_trials_in_new_folders_and_keeps_the_old_ones(tmp_path):
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=lr_optuna", f"hydra.sweep.dir={sweep}", *TINY]
    first = run_cli([*args, "hydra.sweeper.n_trials=2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = {
        f"{job}/{name}": _digest(sweep / job / name)
        for job in ("0", "1")
        for name in ("report.json", ".hydra/overrides.yaml", "checkpoints/last.pt")
    }
    again = run_cli([*args, "hydra.sweeper.n_trials=2"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "#2 : " in again.stdout + again.stderr and "#3 : " in again.stdout + again.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert {k: _digest(sweep / k) for k in kept} == kept  # the first launch's trials untouched
    storage = f"sqlite:///{tmp_path / 'optuna' / 'lr_search.db'}"
    study = optuna.load_study(study_name=f"lr_search@{sweep}", storage=storage)
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    # the relaunch drew new LRs, not the first two again
    assert len(lrs) == 4 and len(set(lrs)) == 4


def test_bad_sweeper_settings_are_one_line_each_before_the_study_opens(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(
        [
            "-m",
            "hparams_search=lr_optuna",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.direction=maximise",
            "hydra.sweeper.n_trials=0",
            "hydra.sweeper.storage=/tmp/x.db",
            *TINY,
        ],
        tmp_path,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3, res.stderr
    assert lines[0].startswith("error: hydra.sweeper.direction=maximise is not valid: use minimize")
    assert lines[1].startswith("error: hydra.sweeper.n_trials=0 is not valid")
    assert lines[2].startswith("error: hydra.sweeper.storage=/tmp/x.db is not a database URL")
    assert not sweep.exists() and not (tmp_path / "optuna").exists()
