"""A restarted run's command: the user's command with the repair applied, in Hydra's grammar, and it runs.

Red-team findings: a restart's report said ``python -m runner model.bias_init=None`` (Python's None, which
Hydra reads as the string 'None' and the run refuses) and ``python -m runner optimizer.lr=0.102977`` (the
user's ``optimizer=sgd``, epochs and ``autotrainer=default`` dropped). The restart's LR record is here too.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from helpers import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

LOW_LR = ["autotrainer=default", "optimizer=sgd", "optimizer.lr=1e-5", "trainer.max_epochs=4"]


def _command(run: Path) -> str:
    """The command report.json gives, checked to be the one report.md and the final attempt give."""
    report = json.loads((run / "report.json").read_text())
    final = run / report["autotrainer"]["final_attempt"]
    command = report["command"]
    assert command == json.loads((final / "report.json").read_text())["command"]
    assert command in (run / "report.md").read_text()
    return command


def _run_printed(command: str, tmp_path: Path, run: Path):
    """The printed command as a user would paste it, into a new ``hydra.run.dir``."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "runner"], command
    return run_cli([*argv[3:], f"hydra.run.dir={run}"], tmp_path, extra=False)


@pytest.fixture(scope="module")
def low_lr_run(tmp_path_factory) -> Path:
    """A too-low LR the AutoTrainer repairs by a restart at a raised LR (attempt-1)."""
    log_dir = tmp_path_factory.mktemp("low_lr")
    run = log_dir / "run"
    res = run_cli(LOW_LR, log_dir, run_dir=run)
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def test_a_dead_bias_restart_command_reads_null_and_trains_with_the_repair(tmp_path):
    run = tmp_path / "dead"
    res = run_cli(
        ["autotrainer=default", "model.bias_init=-5", "trainer.max_epochs=2"], tmp_path, run_dir=run
    )
    assert res.returncode == 0, res.stderr[-3000:]
    command = _command(run)
    assert "model.bias_init=null" in command and "None" not in command
    assert "autotrainer=default" in command and "trainer.max_epochs=2" in command
    assert "model.bias_init=-5" not in command
    # what made attempt-1 differ, as Hydra reads it
    assert yaml.safe_load((run / "attempt-1" / ".hydra" / "overrides.yaml").read_text()) == [
        "model.bias_init=null"
    ]
    # TensorBoard's Text tab gives the same command
    events = EventAccumulator(str(run / "attempt-1"), size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("run/command/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert command in text

    again = _run_printed(command, tmp_path, tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch   1/2" in again.stdout + again.stderr
    cfg = yaml.safe_load((tmp_path / "again" / ".hydra" / "config.yaml").read_text())
    assert cfg["model"]["bias_init"] is None
    # the repaired setting trains without the restart it needed
    assert not (tmp_path / "again" / "attempt-1").exists()


def test_a_raised_lr_restart_command_keeps_every_user_override(low_lr_run, tmp_path):
    command = _command(low_lr_run)
    report = json.loads((low_lr_run / "report.json").read_text())
    lr = report["autotrainer"]["attempts"][-1]["changes"]["optimizer.lr"]
    assert lr > 1e-3
    argv = shlex.split(command)
    for given in ("autotrainer=default", "optimizer=sgd", "trainer.max_epochs=4"):
        assert given in argv, command
    # the repaired LR takes the place of the user's, once
    assert [a for a in argv if a.startswith("optimizer.lr=")] == [f"optimizer.lr={lr}"]

    run = tmp_path / "again"
    res = _run_printed(command, tmp_path, run)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert cfg["optimizer"]["lr"] == lr and cfg["optimizer"]["_target_"] == "torch.optim.SGD"
    assert cfg["trainer"]["max_epochs"] == 4
    first = json.loads((run / "train_diagnostics.jsonl").read_text().splitlines()[0])
    assert first["learning_rate"] == pytest.approx(lr)


def test_a_restart_records_the_lr_it_replaces_and_its_factor(low_lr_run):
    report = json.loads((low_lr_run / "report.json").read_text())
    (restart,) = [a for a in report["autotrainer"]["actions"] if a["action"] == "restart"]
    assert restart["lr_before"] == pytest.approx(1e-5)
    assert restart["lr_after"] == restart["changes"]["optimizer.lr"]
    events = EventAccumulator(str(low_lr_run), size_guidance={"scalars": 0})
    events.Reload()
    markers = {e.step: e.value for e in events.Scalars("x_autotrainer/lr_factor")}
    assert markers[restart["step"]] == pytest.approx(restart["lr_after"] / 1e-5, rel=1e-3)


def test_a_relaunched_sweep_skips_a_job_the_autotrainer_restarted_and_finished(tmp_path):
    """The job's report gives the repaired command: a relaunch still knows the job as its own, finished."""
    sweep = tmp_path / "sweep"
    args = ["-m", "autotrainer=default", "model.bias_init=-5", "trainer.max_epochs=2"]
    args.append("trainer.resume=auto")  # a sweep relaunched into its directory
    first = run_cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "model.bias_init=null" in _command(sweep / "0")
    before = (sweep / "0" / "report.json").read_bytes()

    again = run_cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "job 0 already finished" in again.stdout
    assert (sweep / "0" / "report.json").read_bytes() == before
