"""The run directory is owned: one run at a time, no writes through planted links, read-only or full disks
exit 2 naming the path with the last checkpoint intact; a finished run resumed changes nothing, and a
signal after the last epoch completes the report without a duplicate epoch.

Every case runs the real CLI in a subprocess; the disks are real tmpfs mounts (skipped without root).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, cli_fork, run_cli

from runner.checkpoint import load_checkpoint
from runner.run_dir import claim, release

TINY = ["trainer.max_epochs=2", "data.subset=256", "diag=off"]
# the test helpers (a hook that sends a real signal) importable by the subprocess
WITH_HELPERS = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


def _one_line_exit_2(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One finished run of :data:`TINY` (each worker trains it once): a test that runs into a run
    directory, edits or remounts it takes its own copy (:func:`copy_of`)."""
    log_dir = tmp_path_factory.mktemp("tiny")
    run = log_dir / "run"
    res = run_cli(TINY, log_dir, run_dir=run)
    assert res.returncode == 0, res.stderr[-2000:]
    return run


def copy_of(run: Path, where: Path) -> Path:
    """A copy of the finished run ``run`` at ``where`` (the shared one stays as it ended)."""
    shutil.copytree(run, where, symlinks=True)
    return where


def _digests(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.slow
def test_a_second_run_into_a_directory_in_use_is_refused_and_the_first_keeps_its_files(tmp_path):
    run = tmp_path / "shared"
    first = cli_fork.start(
        [
            sys.executable,
            "-m",
            "runner",
            "trainer.max_epochs=6",
            "diag=off",
            f"paths.log_dir={tmp_path}",
            "trainer.progress=false",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    deadline = time.time() + 120
    while not (run / ".hydra" / "overrides.yaml").is_file():
        assert first.poll() is None and time.time() < deadline, "the first run never started"
        time.sleep(0.05)
    second = run_cli(["trainer.max_epochs=1", "seed=7"], tmp_path, run_dir=run)
    line = _one_line_exit_2(second)
    assert f"run directory {run} is in use by another run (pid {first.pid})" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    assert "seed=7" not in overrides and "trainer.max_epochs=6" in overrides
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] and report["metrics"]["epochs"] == 6
    assert "seed=7" not in (run / "train.log").read_text()


def test_a_run_directory_given_by_interpolation_is_locked_before_hydra_writes(tmp_path):
    """``hydra.run.dir=${paths.log_dir}/shared`` is owned as early as a plain path: a run into it while
    another process holds it is refused before Hydra writes ``.hydra/`` or ``train.log`` there."""
    run = tmp_path / "shared"
    claim(run)  # this process owns it, as a running run would
    try:
        res = run_cli(["hydra.run.dir=${paths.log_dir}/shared", *TINY], tmp_path)
    finally:
        release(run)
    line = _one_line_exit_2(res)
    assert f"run directory {run} is in use by another run (pid {os.getpid()})" in line
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the refused run's


@pytest.mark.slow
@pytest.mark.parametrize(
    "planted",
    ["report.json", "events.jsonl", "train_diagnostics.jsonl", "train.log", "checkpoints/last.pt"],
)
def test_a_link_planted_in_the_run_directory_is_refused_and_its_target_untouched(tmp_path, planted):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / planted).symlink_to(victim)
    line = _one_line_exit_2(run_cli(TINY, tmp_path, run_dir=run))
    assert f"{run / planted} is a symbolic link" in line
    assert victim.read_text() == "precious"
    assert (run / planted).is_symlink() and not (run / "report.md").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs mount (a disk the test can fill or make read-only); skipped without root."""
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_read_only_run_directory_exits_2_naming_it_with_the_checkpoint_intact(
    tmp_path, tmpfs, tiny_run
):
    disk = tmpfs("20m")
    run = copy_of(tiny_run, disk / "run")
    before = _digests(run)
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
    line = _one_line_exit_2(
        run_cli([*TINY[1:], "trainer.max_epochs=3", "trainer.resume=auto"], tmp_path, run_dir=run)
    )
    assert f"run directory {run} is not writable" in line
    assert _digests(run) == before
    load_checkpoint(run / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_a_full_disk_exits_2_naming_the_path_and_no_half_file_is_left(tmp_path, tmpfs):
    disk = tmpfs("300k")
    run = disk / "run"
    line = _one_line_exit_2(run_cli(TINY, tmp_path, run_dir=run))
    assert str(run) in line
    assert not list(run.rglob("*.tmp"))
    last = run / "checkpoints" / "last.pt"
    if last.exists():  # whatever was written whole is a checkpoint that loads
        load_checkpoint(last)


@pytest.mark.slow
def test_a_finished_run_resumed_says_so_and_changes_nothing(tmp_path, tiny_run):
    run = copy_of(tiny_run, tmp_path / "run")
    keep = [
        "report.json",
        "report.md",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "events.jsonl",
    ]
    before = {name: (run / name).read_bytes() for name in keep}
    again = run_cli([*TINY, "trainer.resume=auto"], tmp_path, run_dir=run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"run {run} already finished" in again.stdout and "nothing changed" in again.stdout
    assert {name: (run / name).read_bytes() for name in keep} == before


def test_a_fresh_start_into_a_run_is_refused_and_every_file_of_it_kept(tmp_path, tiny_run):
    """Without trainer.resume, a second command naming a finished run's directory replaced its checkpoints,
    report and .hydra config, and appended a second run to its events (a red-team finding)."""
    run = copy_of(tiny_run, tmp_path / "run")
    before = _digests(run)
    line = _one_line_exit_2(run_cli([*TINY, "optimizer.lr=0.01"], tmp_path, run_dir=run))
    assert line == (
        f"error: hydra.run.dir={run}: {run} already holds a run (checkpoints/last.pt, report.json): "
        "continue it with trainer.resume=auto, or choose another hydra.run.dir (nothing was changed)"
    )
    # every file but the lock, which holds the pid of the process that last claimed the directory
    assert {k: v for k, v in _digests(run).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_sweep_into_a_sweeps_folder_is_refused_and_its_jobs_kept(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli(["-m", *TINY, f"hydra.sweep.dir={sweep}", "optimizer.lr=1e-3,1e-2"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _digests(sweep)
    again = run_cli(["-m", *TINY, f"hydra.sweep.dir={sweep}", "optimizer.lr=0.1"], tmp_path)
    assert _one_line_exit_2(again).startswith(
        f"error: hydra.sweep.dir={sweep}: {sweep / '0'} already holds a run (checkpoints/last.pt, "
        "report.json): choose another hydra.sweep.dir"
    )
    assert _digests(sweep) == before


def test_a_sweep_folder_behind_a_file_is_one_line_and_the_file_kept(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    for sweep in (blocker, blocker / "sub"):
        res = run_cli(["-m", *TINY, f"hydra.sweep.dir={sweep}", "optimizer.lr=1e-3"], tmp_path)
        assert _one_line_exit_2(res) == (
            f"error: hydra.sweep.dir={sweep}: {blocker} is a file; choose another directory"
        )
    assert blocker.read_text() == "mine"


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_completes_its_report_on_resume(tmp_path, tiny_run):
    """The state a kill between the last checkpoint and the report leaves: resuming tests and reports,
    with the final losses of the last epoch (not nulls) and no extra epoch."""
    run = copy_of(tiny_run, tmp_path / "run")
    finished = json.loads((run / "report.json").read_text())
    (run / "report.json").unlink()
    (run / "report.md").unlink()
    again = run_cli([*TINY, "trainer.resume=auto"], tmp_path, run_dir=run)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True
    for key in (
        "final_train_loss",
        "final_val_loss",
        "best_val_loss",
        "test_acc",
        "epochs",
        "steps",
    ):
        assert report["metrics"][key] == finished["metrics"][key], key


@pytest.mark.slow
def test_a_signal_during_the_last_validation_completes_the_report_without_a_duplicate_epoch(
    tmp_path,
):
    run = tmp_path / "run"
    signal_hook = ["+callbacks.zz_signal._target_=helpers.signals.SignalAtValidation"]
    res = run_cli([*TINY, *signal_hook], tmp_path, run_dir=run, env=WITH_HELPERS)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SIGINT after the last epoch" in res.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True and "interrupted" not in report
    assert report["metrics"]["epochs"] == 2 and report["metrics"]["test_acc"] is not None
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not ckpt["mid_epoch"] and len(ckpt["history"]) == 2
    before = (run / "report.json").read_bytes()
    again = run_cli(
        [*TINY, *signal_hook, "trainer.resume=auto"], tmp_path, run_dir=run, env=WITH_HELPERS
    )
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-2000:]
    assert (run / "report.json").read_bytes() == before


@pytest.mark.slow
def test_trainer_resume_auto_passes_over_a_malformed_unrelated_run(tmp_path):
    bad = tmp_path / "runs" / "9999-12-31_23-59-59_000000"
    (bad / "checkpoints").mkdir(parents=True)
    (bad / "checkpoints" / "last.pt").write_text("not a checkpoint")
    (bad / ".hydra").mkdir()
    (bad / ".hydra" / "overrides.yaml").write_text("5\n")
    (bad / "report.json").write_text("[1, 2]")
    res = run_cli([*TINY, "trainer.resume=auto"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "continuing" not in res.stdout
    with contextlib.suppress(FileNotFoundError):
        assert (bad / "checkpoints" / "last.pt").read_text() == "not a checkpoint"
