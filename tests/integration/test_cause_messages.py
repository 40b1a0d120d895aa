"""An object Hydra could not build is said by its cause, through the real CLI: the message the runner or
``diag`` raised (not Hydra's "Error in call to target"), exit code 2, one line, no run directory left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.conf_dir import CONF_DIR
from runner.hydra_errors import one_line

FAST = ["debug=fast"]

CASES = [
    (
        ["model.activation=foo"],
        "error: model.activation='foo': choose one of relu, leaky_relu, gelu, tanh, sigmoid",
    ),
    (  # the runner's own UserError, raised in the CheckpointHook's constructor
        ["callbacks.checkpoint.every_minutes=-1"],
        "error: callbacks.checkpoint.every_minutes=-1: use a positive number of minutes, or null "
        "to save only at the end of the fit",
    ),
    (  # diag's message does not name the key: the key goes first
        ["callbacks.diagnostics.advice=foo"],
        "error: callbacks.diagnostics: unknown advice renderer 'foo': use one of",
    ),
]


def _run_dirs(tmp_path: Path) -> list[Path]:
    return [p.parent for p in tmp_path.rglob(".hydra")]


@pytest.mark.parametrize(("args", "starts"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_build_error_is_its_cause_in_one_line_and_exit_2(cli, tmp_path, args, starts):
    proc = cli(*FAST, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Error executing job" not in proc.stderr + proc.stdout
    assert "Error in call to target" not in proc.stderr
    assert _run_dirs(tmp_path) == [], "a refused start leaves no run directory behind"


def test_hydra_full_error_keeps_the_cause_chain(cli):
    proc = cli(*FAST, "model.activation=foo", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr, proc.stderr[-3000:]
    assert "ValueError: model.activation='foo'" in proc.stderr


def test_a_sweep_job_that_cannot_be_built_is_recorded_with_its_cause(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m",
        *FAST,
        "model.activation=foo,relu",
        "trainer.max_epochs=1",
        "data.subset=256",
        "diag=off",
        f"hydra.sweep.dir={sweep}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error: model.activation='foo': choose one of" in proc.stderr
    assert "Error executing job" not in proc.stderr + proc.stdout
    failed = json.loads((sweep / "0" / "report.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("model.activation='foo': choose one of")
    assert json.loads((sweep / "1" / "report.json").read_text())["completed"] is True
    assert "failed: 0" in proc.stdout


def _build_error(config: dict, key: str) -> InstantiationException:
    """What Hydra raises building ``config[key]`` (a real instantiation, under its config key)."""
    with pytest.raises(InstantiationException) as info:
        instantiate(OmegaConf.create(config)[key])
    return info.value


def test_a_cause_in_words_of_its_own_is_named_with_its_key():
    # torch refuses the value in its own words (no validation in the way: a target of the test's own)
    exc = _build_error({"model": {"_target_": "torch.zeros", "size": "abc"}}, "model")
    assert one_line(exc, CONF_DIR) == (
        "model: TypeError: zeros(): argument 'size' must be tuple of ints, not str: "
        "fix the model.* values"
    )


def test_the_runners_own_error_is_the_line_as_written():
    config = {"checkpoint": {"_target_": "runner.checkpoint.CheckpointHook", "every_minutes": -1}}
    # a UserError names its key: the line is its message, not Hydra's "Error in call to target"
    assert one_line(_build_error(config, "checkpoint"), CONF_DIR) == (
        "callbacks.checkpoint.every_minutes=-1: use a positive number of minutes, or null to save "
        "only at the end of the fit"
    )
