"""Every option of every config group composes, validates and instantiates."""

from __future__ import annotations

import pytest
import torch
from helpers import CONF, compose_cfg
from hydra.utils import instantiate

from runner.schedulers import build_scheduler
from runner.train import build_hooks
from runner.validation import validate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("model", options("model"))
def test_models_build_and_forward(model, tmp_path):
    cfg = compose_cfg([f"model={model}"], tmp_path)
    validate(cfg)
    net = instantiate(cfg.model)
    out = net(torch.randn(4, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size))
    assert out.shape == (4, cfg.data.num_classes)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_complete_at_call_site(optimizer, scheduler, tmp_path):
    cfg = compose_cfg([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    validate(cfg)
    net = instantiate(cfg.model)
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)
    sched = build_scheduler(cfg.scheduler, opt, steps_per_epoch=10, max_epochs=3)
    interval, monitor = cfg.scheduler.interval, cfg.scheduler.monitor
    if scheduler == "none":
        assert sched is None
        return
    assert interval in ("step", "epoch")
    assert (monitor == "val/loss") == (scheduler == "plateau")
    opt.step()
    sched.step(1.0) if monitor else sched.step()


@pytest.mark.parametrize("diag", options("diag"))
def test_diag_options_build_hooks(diag, tmp_path):
    cfg = compose_cfg([f"diag={diag}"], tmp_path)
    names = [type(h).__name__ for h in build_hooks(cfg)]
    assert names[:3] == ["TensorBoardScalars", "EpochJSONL", "CheckpointHook"]
    assert ("DiagnosticsHook" in names) == (diag != "off")


def test_data_options_compose(tmp_path):
    for data in options("data"):
        cfg = compose_cfg([f"data={data}"], tmp_path)
        validate(cfg)
        assert cfg.data.num_classes > 1


def test_digits_splits_are_disjoint_and_fixed(tmp_path):
    cfg = compose_cfg([], tmp_path)
    a, b = instantiate(cfg.data), instantiate(cfg.data)
    a.setup()
    b.setup()
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.test.images, b.test.images)
    x, y = next(iter(a.loader("train")))
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64


def test_label_noise_and_subset_do_what_they_say(tmp_path):
    clean = instantiate(compose_cfg([], tmp_path).data)
    clean.setup()
    noisy = instantiate(compose_cfg(["data.label_noise=1.0"], tmp_path).data)
    noisy.setup()
    agree = (clean.train.labels == noisy.train.labels).float().mean().item()
    assert agree < 0.2  # random labels agree with the truth about 1 time in 10
    assert torch.equal(clean.val.labels, noisy.val.labels)  # validation is never corrupted
    sub = instantiate(compose_cfg(["data.subset=100"], tmp_path).data)
    sub.setup()
    assert len(sub.train) == 100 and torch.equal(sub.train.images, clean.train.images[:100])


@pytest.mark.slow
def test_every_bad_value_is_reported_at_once_one_line_each(cli):
    proc = cli(
        "optimizer.lr=-1", "trainer.max_epochs=abc", "data.loader=gpu", "lr_find.num_steps=3"
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [line.split("=")[0] for line in lines] == [
        "error: trainer.max_epochs",
        "error: data.loader",
        "error: optimizer.lr",
        "error: lr_find.num_steps",
    ]


def test_debug_fast_overlay_shortens_any_config(tmp_path):
    cfg = compose_cfg(["debug=fast", "model=cnn"])
    assert (cfg.trainer.max_epochs, cfg.data.subset, cfg.trainer.progress) == (2, 256, False)
    assert cfg.model._target_.endswith("CNN") and cfg.paths.log_dir.endswith("debug")


@pytest.mark.parametrize(
    ("overrides", "every_epoch"),
    [([], False), (["autotrainer=default"], True), (["stop_on=critical"], True)],
)
def test_a_policy_that_acts_on_epoch_ends_has_every_epoch_end_diagnosed(
    overrides, every_epoch, tmp_path
):
    # alone, the diagnosis may skip short epochs' ends; the AutoTrainer and stop_on act on each one's findings
    hooks = build_hooks(compose_cfg(overrides, tmp_path))
    assert hooks.named["diagnostics"].every_epoch is every_epoch
