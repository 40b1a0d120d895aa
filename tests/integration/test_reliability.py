"""Reliability: each fault is provoked for real (SIGKILL, SIGTERM, SIGINT, truncated and malicious checkpoints,
NaN batches, a full disk, hostile paths) and what is kept is checked.

The README's "Reliability" section is generated from these test names by ``bench/reliability_report.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import cli_fork, run_cli
from torch import nn

from diag.hooks import EventLog, FitState, HookList
from runner.checkpoint import load_checkpoint, read_checkpoint, save_atomic
from runner.distributed import quote_override
from runner.errors import UserError
from runner.trainer import Trainer

# A run long enough to be killed mid-epoch (the kill comes once its first epoch is logged: five more
# epochs of 20 steps, a checkpoint every 3, are ample), deterministic so an uninterrupted twin gives the
# same weights.
EPOCHS = 6
LONG = [
    "model=cnn",
    "model.channels=[16,32]",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
    "callbacks.checkpoint.every_n_steps=3",
    "model.dropout=0.1",
    "scheduler=cosine",
]


_STARTED: list[cli_fork.Forked | subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_run_left_behind():
    """A test that fails while a run it started still trains does not leave that run training."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _start(args: list[str], log_dir: Path) -> cli_fork.Forked | subprocess.Popen:
    """``python -m runner ...`` started to be signalled or killed: forked, as ``run_cli`` runs (a process of
    its own all the same: the signal reaches the run, not pytest)."""
    cmd = [
        sys.executable,
        "-m",
        "runner",
        *args,
        f"paths.log_dir={log_dir}",
        "trainer.progress=false",
    ]
    proc = cli_fork.start(cmd, log_dir, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _STARTED.append(proc)
    return proc


def _wait_for_mid_epoch_checkpoint(
    log_dir: Path, proc: cli_fork.Forked | subprocess.Popen, timeout: float = 120
) -> Path:
    """Block until some run under log_dir has a checkpoint written inside an epoch after the first one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        for ckpt in log_dir.glob("runs/*/checkpoints/last.pt"):
            events = ckpt.parents[1] / "train_diagnostics.jsonl"
            if events.exists() and events.read_text().count("\n") >= 1:
                return ckpt.parents[1]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_with_resume_auto_matches_uninterrupted_run(tmp_path):
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    ref = run_cli([*LONG, "trainer.resume=auto"], straight_dir)
    assert ref.returncode == 0, ref.stderr
    (reference,) = list(straight_dir.glob("runs/*"))

    proc = _start([*LONG, "trainer.resume=auto"], killed_dir)
    run = _wait_for_mid_epoch_checkpoint(killed_dir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run / "report.json").exists()  # it really died before finishing
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    assert payload["step"] < EPOCHS * 20

    again = run_cli([*LONG, "trainer.resume=auto"], killed_dir)  # the very same command
    assert again.returncode == 0, again.stderr
    assert "continuing" in again.stdout and str(run) in again.stdout
    assert json.loads((run / "report.json").read_text())["completed"] is True
    a, b = _weights(reference), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((reference / "report.json").read_text())["metrics"]
    rb = json.loads((run / "report.json").read_text())["metrics"]
    assert ra["test_acc"] == rb["test_acc"] and ra["steps"] == rb["steps"]
    lines = [json.loads(x) for x in (run / "train_diagnostics.jsonl").read_text().splitlines()]
    # continuous, no duplicates after the resume point
    assert [x["epoch"] for x in lines] == list(range(EPOCHS))
    ref_lines = [
        json.loads(x) for x in (reference / "train_diagnostics.jsonl").read_text().splitlines()
    ]
    assert [x["loss"] for x in lines] == pytest.approx([x["loss"] for x in ref_lines], rel=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val/loss")]
    assert steps == sorted(set(steps)) and len(steps) == EPOCHS


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_a_checkpoint_write_the_report_and_say_how_to_resume(
    tmp_path, sig, code
):
    proc = _start(LONG, tmp_path)
    run = _wait_for_mid_epoch_checkpoint(tmp_path, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "resume with: python -m runner" in err and "trainer.resume=auto" in err
    assert "Traceback" not in err
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is False and report["interrupted"] == sig.name
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["mid_epoch"] and ckpt["step"] == report["metrics"]["steps"]
    kinds = [json.loads(x)["kind"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert "interrupted" in kinds


@pytest.mark.slow
def test_the_printed_resume_command_run_in_a_shell_continues_the_same_run_directory(tmp_path):
    """A run with its own hydra.run.dir (spaces, commas, quotes, non-ASCII) is interrupted; the command it
    prints, pasted into a shell from another directory, continues that very directory instead of starting
    a fresh run (the path is quoted for Hydra's override grammar inside the shell's quoting). One name holds
    every hard case (a plain name with a space was a second run of this test, covered by this one)."""
    run = tmp_path / "a run, \"its\" 'quotes' é ü 日本"
    proc = _start(
        [
            "trainer.max_epochs=20",
            "callbacks.checkpoint.every_n_steps=5",
            "model.hidden=[64,64]",
            f"hydra.run.dir={quote_override(str(run))}",
        ],
        tmp_path,
    )
    deadline = time.time() + 120
    while (
        not (run / "train_diagnostics.jsonl").is_file()
        or not (run / "checkpoints" / "last.pt").is_file()
    ):
        assert proc.poll() is None and time.time() < deadline, "the run never saved a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    (command,) = [
        line.split("resume with: ", 1)[1] for line in err.splitlines() if "resume with: " in line
    ]
    stopped_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run(
        command.replace("python", sys.executable, 1),
        shell=True,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints' / 'last.pt'}" in again.stdout + again.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["completed"] is True and report["metrics"]["steps"] > stopped_at
    assert not list(tmp_path.glob("runs/*/checkpoints"))  # no second run started anywhere


@pytest.mark.slow
def test_a_run_killed_during_an_autotrainer_restart_continues_that_attempt(tmp_path):
    """SIGTERM while attempt-1 trains; the same command with resume=auto goes straight on to attempt-1 (its
    restart already asked for) and continues it from its own checkpoint, with the one restart recorded once."""
    sick = [
        "autotrainer=default",
        "model.activation=sigmoid",
        "model.hidden=[64,64,64,64,64,64,64,64]",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "callbacks.checkpoint.every_n_steps=20",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    run = tmp_path / "run"
    proc = _start(sick, tmp_path)
    deadline = time.time() + 120
    while not (run / "attempt-1" / "checkpoints" / "last.pt").is_file():
        assert proc.poll() is None and time.time() < deadline, "attempt-1 never saved a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    killed_at = load_checkpoint(run / "attempt-1" / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 400

    again = run_cli([*sick, "trainer.resume=auto"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "had asked at step" in again.stdout + again.stderr
        and "going on to attempt-1" in again.stdout + again.stderr
    )
    assert (
        f"resumed from {run / 'attempt-1' / 'checkpoints' / 'last.pt'}"
        in again.stdout + again.stderr
    )
    report = json.loads((run / "report.json").read_text())
    restarts = [a for a in report["autotrainer"]["actions"] if a["action"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["attempt"] == 0
    assert report["completed"] is True and report["autotrainer"]["final_attempt"] == "attempt-1"
    starts = [
        e
        for e in map(json.loads, (run / "attempt-1" / "events.jsonl").read_text().splitlines())
        if e["kind"] == "fit_start"
    ]
    assert [(e["resumed"], e["step"]) for e in starts] == [(False, 0), (True, killed_at)]
    assert report["metrics"]["steps"] == 400 and report["metrics"]["test_acc"] > 0.9


TINY_RUN = ["trainer.max_epochs=1", "diag=off", "scheduler=cosine"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One finished one-epoch run for the tests that only read it (each worker trains it once); a test
    that runs into it takes a copy. Its schedule is named: the default, cosine."""
    log_dir = tmp_path_factory.mktemp("tiny")
    run = log_dir / "run"
    res = run_cli(TINY_RUN, log_dir, run_dir=run)
    assert res.returncode == 0, res.stderr
    return run


def test_truncated_checkpoint_is_refused_with_one_line(tmp_path, tiny_run):
    ckpt = tmp_path / "last.pt"  # a copy cut in half: the shared run keeps its own
    whole = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    ckpt.write_bytes(whole[: len(whole) // 2])
    res = run_cli([f"trainer.resume={ckpt}"], tmp_path)
    assert res.returncode == 2
    assert (
        res.stderr.strip().count("\n") == 0 and str(ckpt) in res.stderr and "refused" in res.stderr
    )


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, evil)
    res = run_cli([f"trainer.resume={evil}"], tmp_path)
    assert res.returncode == 2, res.stderr
    assert "refused" in res.stderr and str(evil) in res.stderr
    assert not (tmp_path / "PWNED").exists()


def test_resuming_from_best_pt_is_refused_in_one_line_naming_last_pt(tmp_path, tiny_run):
    best = tiny_run / "checkpoints" / "best.pt"
    res = run_cli([f"trainer.resume={best}"], tmp_path)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "Traceback" not in line, line
    assert (
        str(best) in line
        and "holds only the weights of the best epoch (step 20, val/loss 0." in line
    )
    assert "checkpoints/last.pt" in line


def test_checkpoint_from_a_different_model_is_refused(tmp_path, tiny_run):
    res = run_cli(["model=cnn", f"trainer.resume={tiny_run}"], tmp_path)
    assert res.returncode == 2
    assert "holds a different model" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "scheduler, named",
    [
        ("cosine", "CosineAnnealingLR T_max=1 (this config: 3)"),
        ("onecycle", "OneCycleLR total_steps=20 (this config: 60)"),
    ],
)
def test_resuming_with_another_run_length_is_refused_before_the_schedule_breaks(
    tmp_path, tiny_run, scheduler, named
):
    """Past its saved end OneCycleLR raises mid-run and a cosine climbs back: say so up front, lose nothing."""
    run = tmp_path / "run"
    overrides = ["trainer.max_epochs=1", "diag=off", f"scheduler={scheduler}"]
    if overrides == TINY_RUN:  # the shared run is this one: the resume is tried into a copy of it
        shutil.copytree(tiny_run, run)
    else:
        assert run_cli(overrides, tmp_path, run_dir=run).returncode == 0
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    report = (run / "report.json").read_bytes()
    res = run_cli(
        ["trainer.max_epochs=3", "diag=off", f"scheduler={scheduler}", "trainer.resume=auto"],
        tmp_path,
        run_dir=run,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert (
        "trainer.resume" in res.stderr
        and named in res.stderr
        and "trainer.max_epochs" in res.stderr
    )
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    assert (run / "report.json").read_bytes() == report
    if scheduler != "onecycle":
        return  # the same length resumes: checked once, on the schedule that breaks hardest
    same = run_cli(
        ["trainer.max_epochs=1", "diag=off", f"scheduler={scheduler}", "trainer.resume=auto"],
        tmp_path,
        run_dir=run,
    )
    assert same.returncode == 0 and "resumed from" in same.stdout, same.stderr


def test_nan_batches_never_change_the_weights_and_are_counted(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(max_epochs=1, progress=False)
    trainer.attach(model)
    state = FitState(model=model, optimizer=opt, events=EventLog(tmp_path / "events.jsonl"))
    y = torch.randint(0, 3, (8,))
    for i in range(6):
        x = torch.randn(8, 16)
        if i % 2:
            x[3, 5] = float("nan")
            before = [p.detach().clone() for p in model.parameters()]
        trainer.training_step(state, x, y)
        if i % 2:
            assert state.step_skipped
            assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert state.skipped_steps == 3
    assert (
        sum(json.loads(x)["kind"] == "skipped_step" for x in (tmp_path / "events.jsonl").open())
        == 3
    )


def test_a_run_that_keeps_producing_nan_stops_with_a_clear_reason(tmp_path):
    model = nn.Linear(4, 2)
    trainer = Trainer(max_epochs=3, progress=False, max_consecutive_skips=5)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    nan_batches = [(torch.full((4, 4), float("nan")), torch.zeros(4, dtype=torch.long))] * 20
    val = [(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))]
    trainer.fit(state, nan_batches, val, HookList())
    assert state.stop_training and "consecutive steps had non-finite gradients" in state.stop_reason
    assert state.step == 5 and torch.equal(before, model.weight)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full_gives_a_clear_error_and_keeps_the_last_good_checkpoint(small_disk):
    path = small_disk / "checkpoints" / "last.pt"
    save_atomic({"model": {"w": torch.ones(10)}, "step": 1}, path)
    with open(small_disk / "filler", "wb") as fh, contextlib.suppress(OSError):  # fill the disk
        fh.write(b"\0" * (1 << 20))
    with pytest.raises(UserError, match=r"cannot write checkpoint .*previous checkpoint is intact"):
        save_atomic({"model": {"w": torch.zeros(20000)}, "step": 2}, path)
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_unwritable_run_directory_exits_2_with_the_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoint folder should be")
    res = run_cli(["trainer.max_epochs=1", "diag=off"], tmp_path, run_dir=run)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {run / 'checkpoints'} is a file where a folder belongs: remove it, or choose "
        "another hydra.run.dir"
    ]
    assert not (run / "train_diagnostics.jsonl").exists()  # refused before the first step


def test_config_names_cannot_escape_the_run_directory(tmp_path):
    res = run_cli(
        ["trainer.max_epochs=1", "callbacks.checkpoint.dirname=../../escaped"],
        tmp_path,
        run_dir=tmp_path / "run",
    )
    assert res.returncode == 2 and "points outside the run directory" in res.stderr
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(
    "override, needle",
    [
        ("trainer.device=cuda", "trainer.device=cuda"),
        ("data.val_fraction=0", "data.val_fraction=0"),
        ("trainer.max_epochs=0.5", "trainer.max_epochs=0.5"),
        ("optimizer.lr=0", "optimizer.lr=0"),
    ],
)
def test_more_bad_configuration_exits_2_before_training(tmp_path, override, needle):
    res = run_cli([override], tmp_path)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("runs/*/train_diagnostics.jsonl"))  # nothing was trained
