"""Every bad configuration value is refused before any work, named with its key, all at once."""

from __future__ import annotations

import pytest
from helpers import compose_cfg

from runner.errors import UserError
from runner.validation import config_errors, validate

# (overrides, the start of the one error line each must give)
BAD = [
    (["seed=99999999999999999999"], "seed="),
    (["seed=-1"], "seed="),
    (["objective_penalty=abc"], "objective_penalty="),
    (["trainer.deterministic=maybe"], "trainer.deterministic="),
    (["trainer.compile=1"], "trainer.compile="),
    (["data.eval_batch_size=true"], "data.eval_batch_size="),
    (["data.num_workers=-1"], "data.num_workers="),
    (["data.test_fraction=0"], "data.test_fraction="),
    (["data.test_fraction=1"], "data.test_fraction="),
    (["trainer.max_consecutive_skips=-1"], "trainer.max_consecutive_skips="),
    (["trainer.threads=0"], "trainer.threads="),
    (["trainer.threads=two"], "trainer.threads="),
    (["callbacks.checkpoint.every_n_steps=-1"], "callbacks.checkpoint.every_n_steps="),
    (["callbacks.stop_on.behind=2"], "callbacks.stop_on.behind="),
    # 0 was taken as 1 (the layers sampled every step: a 30x slower epoch, silently)
    (["callbacks.diagnostics.layer_every=0"], "callbacks.diagnostics.layer_every="),
    (["callbacks.diagnostics.scalar_every=1.5"], "callbacks.diagnostics.scalar_every="),
    (["callbacks.diagnostics.diagnose_every=-50"], "callbacks.diagnostics.diagnose_every="),
    (["callbacks.diagnostics.dead_window=0"], "callbacks.diagnostics.dead_window="),
    (["callbacks.diagnostics.diagnose_gap=2"], "callbacks.diagnostics.diagnose_gap="),
    (["callbacks.diagnostics.histogram_every=-1"], "callbacks.diagnostics.histogram_every="),
    (["callbacks.stop_on.behind_pace=0.5"], "callbacks.stop_on.behind_pace="),
    (["callbacks.stop_on.behind_sweep=maybe"], "callbacks.stop_on.behind_sweep="),
    (["model.hidden=[0]"], "model.hidden="),
    (["model.hidden=[]"], "model.hidden="),
    (["model=cnn", "model.channels=[32,-1]"], "model.channels="),
    (["model.dropout=1.5"], "model.dropout="),
    (["scheduler=plateau", "scheduler.monitor=val/los"], "scheduler.monitor="),
    (
        ["scheduler=warmup_cosine", "scheduler.lr_scheduler.warmup_steps=-3"],
        "scheduler.lr_scheduler.warmup_steps=",
    ),
    (["scheduler=step", "scheduler.lr_scheduler.step_size=0"], "scheduler: ZeroDivisionError"),
    (["scheduler.lr_scheduler.T_max=0"], "scheduler: ZeroDivisionError"),
    (["optimizer.betas=[1.5,0.9]"], "optimizer: ValueError: Invalid beta"),
    (
        ["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"],
        "optimizer: ValueError: Nesterov",
    ),
    (["optimizer.lr=${oc.env:RUNNER_TEST_UNSET_VARIABLE}"], "optimizer.lr: "),
    (["+trainer.loops=${trainer.loops}"], "trainer.loops: "),
    (["optimizer.lr=${nowhere.lr}"], "optimizer.lr: "),
    # red-team findings: each was accepted (or a traceback) before it was checked here
    (["model.batchnorm=no"], "model.batchnorm="),
    (["data.std=0"], "data.std="),  # was "data: TypeError: 'int' object is not iterable"
    (["data.std=[0]"], "data.std="),
    (["model.bias_init=abc"], "model.bias_init="),  # was torch's fill_() message
    (["model.init_std=-1"], "model.init_std="),
    (["data=synthetic", "data.num_classes=1"], "data.num_classes="),  # "test accuracy 1.0, healthy"
    (
        ["data=synthetic", "data.image_size=0"],
        "data.image_size=",
    ),  # a ZeroDivisionError mid-run  # a non-empty string: batch norm was turned on
    (["optimizer=sgd", "optimizer.nesterov=maybe"], "optimizer.nesterov="),
    (["data.split_seed=99999999999999999999"], "data.split_seed="),  # an overflow traceback
    (["data.split_seed=1.5"], "data.split_seed="),
    (["data.noise_seed=-1"], "data.noise_seed="),
    (["trainer.threads=1000000"], "trainer.threads="),  # ran out of memory
    (["callbacks.checkpoint.monitor=val/accc"], "callbacks.checkpoint.monitor="),  # no best.pt
    (["callbacks.stop_on.grace=-1"], "callbacks.stop_on.grace="),
    (["callbacks.stop_on.clear_blowup=-5"], "callbacks.stop_on.clear_blowup="),
    (["callbacks.stop_on.need=-1"], "callbacks.stop_on.need="),
    (
        ["autotrainer=default", "callbacks.autotrainer.clip_max_norm=-1"],
        "callbacks.autotrainer.clip_max_norm=-1",
    ),
    (
        ["autotrainer=default", "callbacks.autotrainer.time_budget=abc"],
        "callbacks.autotrainer.time_budget='abc'",
    ),
    (
        ["autotrainer=default", "callbacks.autotrainer.max_restarts=-1"],
        "callbacks.autotrainer.max_restarts=-1",
    ),
    (
        ["autotrainer=default", "callbacks.autotrainer.check_every=0"],
        "callbacks.autotrainer.check_every=0",
    ),
    (
        ["autotrainer=default", "callbacks.autotrainer.keep_snapshots=0"],
        "callbacks.autotrainer.keep_snapshots=0",
    ),
]


@pytest.mark.parametrize(("overrides", "starts"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_is_one_line_naming_its_key(overrides, starts, tmp_path):
    errors = config_errors(compose_cfg(overrides, tmp_path))
    assert len(errors) == 1, errors
    assert errors[0].startswith(starts), errors[0]
    assert "\n" not in errors[0]


def test_every_default_option_passes(tmp_path):
    for overrides in (
        [],
        ["model=cnn", "optimizer=sgd", "scheduler=onecycle"],
        ["scheduler=plateau"],
        ["optimizer.lr=auto", "scheduler=onecycle"],
        ["autotrainer=default"],
        ["debug=fast"],
    ):
        validate(compose_cfg(overrides, tmp_path))


def test_several_bad_values_are_all_reported(tmp_path):
    cfg = compose_cfg(["seed=-1", "data.num_workers=-1", "trainer.deterministic=maybe"], tmp_path)
    with pytest.raises(UserError) as caught:
        validate(cfg)
    assert [line.split("=")[0] for line in str(caught.value).splitlines()] == [
        "seed",
        "data.num_workers",
        "trainer.deterministic",
    ]
