"""The configuration matrix: every bad value a user (or a typo) can give, refused before any work.

Each case composes the real config tree with its overrides and runs the validation pass
(:func:`runner.validation.config_errors`, what ``train.build`` runs first): exactly one error, one line,
starting with the key it names. A handful go through the CLI too (exit 2, one line, no traceback, no run
directory left behind).
"""

from __future__ import annotations

import pytest
from helpers import compose_cfg, run_cli

from runner.validation import config_errors

# A matrix of hundreds of cases: the full suite runs it; the fast tier keeps the unit tests.
pytestmark = pytest.mark.slow

NOT_INT = ["abc", "1.5", "true", "[1]", "-1"]

# (overrides, the key the one error line starts with)
MATRIX: list[tuple[list[str], str]] = [
    *[([f"seed={v}"], "seed=") for v in ["-1", "abc", "1.5", "99999999999999999999", "true"]],
    *[([f"objective_penalty={v}"], "objective_penalty=") for v in ["abc", "true", "[1]"]],
    *[([f"mode={v}"], "mode=") for v in ["tain", "1", "lr-find"]],
    *[([f"trainer.max_epochs={v}"], "trainer.max_epochs=") for v in [*NOT_INT, "two"]],
    *[([f"trainer.max_steps={v}"], "trainer.max_steps=") for v in ["0", "-5", "abc", "2.5"]],
    *[([f"trainer.precision={v}"], "trainer.precision=") for v in ["fp8", "16", "half", "x"]],
    *[([f"trainer.device={v}"], "trainer.device=") for v in ["gpu0", "tpu", "cuda:x"]],
    *[([f"trainer.clip.max_norm={v}"], "trainer.clip.max_norm=") for v in ["0", "-1", "abc"]],
    *[([f"trainer.clip.value={v}"], "trainer.clip.value=") for v in ["0", "-2", "big"]],
    *[
        ([f"trainer.log_every_n_steps={v}"], "trainer.log_every_n_steps=")
        for v in ["0", "-1", "abc", "2.5"]
    ],
    *[
        ([f"trainer.max_consecutive_skips={v}"], "trainer.max_consecutive_skips=")
        for v in ["-1", "abc", "1.5"]
    ],
    *[
        ([f"trainer.{k}={v}"], f"trainer.{k}=")
        for k in ("deterministic", "nonfinite_guard", "channels_last", "compile")
        for v in ["maybe", "2"]
    ],
    *[([f"data.batch_size={v}"], "data.batch_size=") for v in ["0", "-8", "abc", "2.5"]],
    *[([f"data.eval_batch_size={v}"], "data.eval_batch_size=") for v in ["0", "true", "abc"]],
    *[([f"data.val_fraction={v}"], "data.val_fraction=") for v in ["0", "1", "1.5", "-0.1", "x"]],
    *[([f"data.test_fraction={v}"], "data.test_fraction=") for v in ["0", "1", "2", "x"]],
    *[([f"data.label_noise={v}"], "data.label_noise=") for v in ["-0.1", "1.5", "x"]],
    *[([f"data.subset={v}"], "data.subset=") for v in ["0", "-3", "abc"]],
    *[([f"data.num_workers={v}"], "data.num_workers=") for v in ["-1", "abc", "1.5"]],
    *[([f"data.augmentation={v}"], "data.augmentation=") for v in ["heavy", "1"]],
    *[([f"data.loader={v}"], "data.loader=") for v in ["fast", "1"]],
    (["data.normalize=maybe"], "data.normalize="),
    *[(["data=mnist", f"data.{k}=maybe"], f"data.{k}=") for k in ("download", "cache")],
    *[([f"model.hidden={v}"], "model.hidden=") for v in ["[0]", "[]", "[-1,2]", "[a]", "5"]],
    *[
        (["model=cnn", f"model.channels={v}"], "model.channels=")
        for v in ["[32,-1]", "[0]", "[]", "[x]"]
    ],
    *[([f"model.dropout={v}"], "model.dropout=") for v in ["1", "1.5", "-0.1", "x"]],
    *[([f"optimizer.lr={v}"], "optimizer.lr=") for v in ["0", "-1", "abc", "fast", "true"]],
    *[([f"optimizer.weight_decay={v}"], "optimizer.weight_decay=") for v in ["-1", "abc"]],
    *[(["optimizer=sgd", f"optimizer.momentum={v}"], "optimizer.momentum=") for v in ["-1", "x"]],
    (["optimizer.betas=[1.5,0.9]"], "optimizer: ValueError: Invalid beta"),
    (["optimizer.betas=[0.9,-0.1]"], "optimizer: ValueError: Invalid beta"),
    (["+optimizer.eps=-1"], "optimizer: ValueError: Invalid epsilon"),
    (["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "optimizer: ValueError"),
    (["optimizer=adamw", "optimizer.betas=[0.9,1.0]"], "optimizer: ValueError: Invalid beta"),
    *[([f"scheduler.interval={v}"], "scheduler.interval=") for v in ["batch", "1"]],
    (["scheduler=step", "scheduler.lr_scheduler.step_size=0"], "scheduler: ZeroDivisionError"),
    (["scheduler.lr_scheduler.T_max=0"], "scheduler: ZeroDivisionError"),
    (["scheduler=plateau", "scheduler.monitor=val/los"], "scheduler.monitor="),
    (["scheduler=plateau", "scheduler.monitor=train/accuracy"], "scheduler.monitor="),
    *[
        (["scheduler=warmup_cosine", f"scheduler.lr_scheduler.warmup_steps={v}"], "scheduler")
        for v in ["-3", "abc"]
    ],
    *[
        ([f"callbacks.checkpoint.every_n_steps={v}"], "callbacks.checkpoint.every_n_steps=")
        for v in ["-1", "0", "abc", "2.5"]
    ],
    *[
        ([f"callbacks.{hook}.flush_secs={v}"], f"callbacks.{hook}.flush_secs=")
        for hook in ("tensorboard", "epoch_jsonl")
        for v in ["-1", "abc", "true"]
    ],
    (["optimizer.lr=${oc.env:RUNNER_TEST_UNSET_VARIABLE}"], "optimizer.lr: "),
    (["+trainer.loops=${trainer.loops}"], "trainer.loops: "),
    (["optimizer.lr=${nowhere.lr}"], "optimizer.lr: "),
    (["data.batch_size=${data.nope}"], "data.batch_size: "),
]


def test_the_matrix_has_at_least_a_hundred_cases():
    assert len(MATRIX) >= 100


@pytest.mark.parametrize(("overrides", "starts"), MATRIX, ids=[" ".join(o) for o, _ in MATRIX])
def test_a_bad_value_is_refused_in_one_line_naming_its_key(overrides, starts, tmp_path):
    errors = config_errors(compose_cfg(overrides, tmp_path))
    assert len(errors) == 1, errors
    assert errors[0].startswith(starts), errors[0]
    assert "\n" not in errors[0] and "Traceback" not in errors[0]


CLI = [
    (["seed=99999999999999999999"], "seed="),
    (["scheduler=onecycle", "optimizer.lr=-1"], "optimizer.lr="),
    (["data.num_workers=-1"], "data.num_workers="),
    (["trainer.max_consecutive_skips=-1"], "trainer.max_consecutive_skips="),
    (["optimizer.lr=${nowhere.lr}"], "optimizer.lr: "),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "starts"), CLI, ids=[" ".join(o) for o, _ in CLI])
def test_through_the_cli_exit_2_one_line_and_no_run_directory(overrides, starts, tmp_path):
    res = run_cli(["trainer.max_epochs=1", *overrides], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert res.stderr.startswith(f"error: {starts}") and "Traceback" not in res.stderr + res.stdout
    assert not list(tmp_path.glob("runs/*")), "a refused start leaves no run directory behind"
