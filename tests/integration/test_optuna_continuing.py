"""hparams_search=lr_optuna relaunched into its sweep folder: new trials in new job folders.

Hydra's Optuna sweeper numbered a relaunch's jobs from 0 again, so its first trial ran in the earlier
trial 0's folder and replaced its report, checkpoints and config; a seeded sampler also proposed the
first launch's LRs again. Two sweeps sharing the storage keep a study each, a relaunch continuing
its own. Its settings are checked before the study opens (a typo was a traceback).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import run_cli

TINY = ["trainer.max_epochs=1", "diag=off", "data.subset=256"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _study(optuna, tmp: Path, sweep: Path):
    """The sweep directory's own study (its default name: ``lr_search@<absolute sweep dir>``) in the
    storage both sweeps share."""
    storage = f"sqlite:///{tmp / 'optuna' / 'lr_search.db'}"
    return optuna.load_study(study_name=f"lr_search@{sweep}", storage=storage)


@dataclass
class Storage:
    """Two Optuna sweeps sharing one SQLite storage: ``a`` launched, ``b`` launched, ``a`` relaunched."""

    tmp: Path
    trials: dict[str, int]  # each sweep's trials in all
    kept: dict[str, str]  # a's first trials' files (job/name: sha256) before the relaunch
    relaunch: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """Sweep ``a`` (two trials), then sweep ``b`` (one trial, another seed: other LRs) in the same storage
    (``<log_dir>/optuna/lr_search.db``), then ``a`` relaunched into its folder with the same command but
    one more trial."""
    pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    tmp = tmp_path_factory.mktemp("optuna")

    def launch(name: str, n_trials: int, seed: int) -> subprocess.CompletedProcess:
        args = ["-m", "hparams_search=lr_optuna", f"hydra.sweep.dir={tmp / name}", *TINY]
        return run_cli([*args, f"hydra.sweeper.n_trials={n_trials}", f"seed={seed}"], tmp)

    first = launch("a", 2, seed=2)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = {
        f"{job}/{name}": _digest(tmp / "a" / job / name)
        for job in ("0", "1")
        for name in ("report.json", ".hydra/overrides.yaml", "checkpoints/last.pt")
    }
    other = launch("b", 1, seed=1)
    assert other.returncode == 0, other.stderr[-3000:]
    return Storage(tmp, {"a": 3, "b": 1}, kept, launch("a", 1, seed=2))


def test_a_relaunched_study_runs_new_trials_in_new_folders_and_keeps_the_old_ones(storage):
    optuna = pytest.importorskip("optuna")
    sweep, again = storage.tmp / "a", storage.relaunch
    assert again.returncode == 0, again.stderr[-3000:]
    assert "#2 : " in again.stdout + again.stderr  # numbered after the first launch's #0 and #1
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    kept = storage.kept
    assert {k: _digest(sweep / k) for k in kept} == kept  # the first launch's trials untouched
    lrs = [t.params["optimizer.lr"] for t in _study(optuna, storage.tmp, sweep).trials]
    # the relaunch drew a new LR, not one of the first launch's again
    assert len(lrs) == 3 and len(set(lrs)) == 3


def test_two_optuna_sweeps_sharing_a_storage_keep_their_own_studies(storage):
    optuna = pytest.importorskip("optuna")
    tmp = storage.tmp
    names = sorted(
        s.study_name
        for s in optuna.get_all_study_summaries(f"sqlite:///{tmp / 'optuna' / 'lr_search.db'}")
    )
    assert names == [f"lr_search@{tmp / 'a'}", f"lr_search@{tmp / 'b'}"]
    for name, n in storage.trials.items():
        trials = _study(optuna, tmp, tmp / name).trials
        # each study holds its own sweep's trials only, and they are the jobs in its directory
        assert len(trials) == n
        lrs = sorted(t.params["optimizer.lr"] for t in trials)
        jobs = sorted(
            float(line.split("=", 1)[1])
            for job in (tmp / name).glob("[0-9]*")
            for line in (job / ".hydra" / "overrides.yaml").read_text().splitlines()
            if "optimizer.lr=" in line
        )
        assert lrs == pytest.approx(jobs)


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
