"""Hydra's own errors through the real CLI: one line, exit code 2, a suggestion where one is close."""

from __future__ import annotations

import pytest

CASES = [
    (
        ["optimizer.lrr=0.1"],
        "error: optimizer.lrr is not a config key (did you mean optimizer.lr?)",
    ),
    (["mdoel=cnn"], "error: mdoel is not a config key (did you mean model?)"),
    (  # a key of the default config that a group choice left out: not "did you mean" the same key
        ["diag=off", "callbacks.diagnostics.layer_every=10"],
        "error: callbacks.diagnostics.layer_every is not a key of the config these overrides compose "
        "(the default config has it: a group choice on the command line, such as diag=off, leaves it out)",
    ),
    (
        ["model=mpl"],
        "error: model=mpl is not an option of model (did you mean mlp?): choose one of cnn, mlp, resnet18",
    ),
    (
        ["model=transformer"],
        "error: model=transformer is not an option of model: choose one of cnn, mlp, resnet18",
    ),
    (
        ["trainer.max_epochs=1", "foo"],
        "error: cannot read the command line (Error parsing override 'foo')",
    ),
]


@pytest.mark.parametrize(("args", "starts"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_hydra_error_is_one_line_and_exit_2(cli, args, starts):
    proc = cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), proc.stderr


def test_hydra_full_error_keeps_hydras_traceback(cli):
    proc = cli("optimizer.lrr=0.1", env={"HYDRA_FULL_ERROR": "1"})
    assert (
        proc.returncode == 1 and "Traceback" in proc.stderr and "Could not override" in proc.stderr
    )


def test_a_sweep_whose_jobs_do_not_compose_leaves_no_sweep_folder(cli, tmp_path):
    """``-m model=mlp,mpl``: the sweep folder Hydra made for it held only multirun.yaml after the error."""
    proc = cli("-m", "model=mlp,mpl", "trainer.max_epochs=1")
    assert proc.returncode == 2 and "model=mpl is not an option of model" in proc.stderr
    assert not list((tmp_path / "multirun").glob("*")), list((tmp_path / "multirun").iterdir())
    # a sweep folder that was there before is never removed
    kept = tmp_path / "mine"
    kept.mkdir()
    proc = cli("-m", "model=mlp,mpl", f"hydra.sweep.dir={kept}")
    assert proc.returncode == 2 and kept.is_dir()


def test_a_search_without_multirun_is_refused_not_run_once(cli, tmp_path):
    """``hparams_search=lr_optuna`` without -m trained one run at the search's defaults, saying nothing."""
    proc = cli("hparams_search=lr_optuna", "trainer.max_epochs=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        "error: hparams_search=lr_optuna is a search over trials: add -m "
        "(python -m runner -m hparams_search=lr_optuna ...)"
    )
    assert not list((tmp_path / "runs").glob("*"))  # no run directory left behind


CHECK_DATA_CASES = [
    (  # a training key: it used to print Hydra's five lines, 'Key 'trainer' is not in struct', exit 1
        ["trainer.resume=auto"],
        "error: trainer.resume is a key of a training run's config, not of python -m "
        "runner.check_data's: drop it (`python -m runner.check_data --cfg job` lists the keys it reads)",
    ),
    (
        ["data.batchsize=3"],
        "error: data.batchsize is not a config key (did you mean data.batch_size?): list the keys "
        "with `python -m runner.check_data --cfg job`",
    ),
    (["data=cifar11"], "error: data=cifar11 is not an option of data (did you mean cifar10?)"),
]


@pytest.mark.parametrize(
    ("args", "starts"), CHECK_DATA_CASES, ids=[" ".join(a) for a, _ in CHECK_DATA_CASES]
)
def test_check_data_says_hydras_errors_in_one_line_and_writes_nothing(tmp_path, args, starts):
    from helpers import run_cli

    out = tmp_path / "cd"
    proc = run_cli([*args, f"hydra.run.dir={out}"], tmp_path, module="runner.check_data")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), proc.stderr
    assert not out.exists()


def test_a_mode_that_is_a_command_of_its_own_names_it(cli):
    proc = cli("mode=check_data")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    # the modes it has, one as an example, and the command that looks at the data; no generic "mode=..."
    assert line == (
        "error: mode='check_data' is not valid: choose one of train, lr_find "
        "(e.g. `python -m runner mode=lr_find`); to look at the data: `python -m runner.check_data`"
    )
