"""``diag analyze`` on other tools' TensorBoard logs, with no flags: Lightning's default tags at sparse
logging intervals, Hugging Face Trainer's tags, the class count from the first loss, JSON on errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from diag.analyze import main

STEPS_PER_EPOCH, EPOCHS = 23, 20


def lightning_logs(
    root: Path,
    loss_at: callable,
    val: callable,
    lr: float,
    optimizer: str = "Adam",
    every: int = 50,
    seed: int = 0,
    noise: float = 0.25,
) -> Path:
    """What ``self.log("train_loss", on_step=True, on_epoch=True)``, ``val_loss``/``val_acc`` and a
    ``LearningRateMonitor`` write at ``log_every_n_steps=every``: one batch's loss every ``every`` steps."""
    rng = np.random.default_rng(seed)
    logdir = root / "lightning_logs" / "version_0"
    w = SummaryWriter(str(logdir))
    step = 0
    for epoch in range(EPOCHS):
        batch_losses = []
        for _ in range(STEPS_PER_EPOCH):
            loss = loss_at(step) * float(rng.lognormal(0.0, noise))
            batch_losses.append(loss)
            step += 1
            if step % every == 0:
                w.add_scalar("train_loss_step", loss, step - 1)
                w.add_scalar(f"lr-{optimizer}", lr, step - 1)
                w.add_scalar("epoch", epoch, step - 1)
        vloss, vacc = val(epoch)
        w.add_scalar("val_loss", vloss, step - 1)
        w.add_scalar("val_acc", vacc, step - 1)
        w.add_scalar("train_loss_epoch", float(np.mean(batch_losses)), step - 1)
        w.add_scalar("epoch", epoch, step - 1)
    w.close()
    return root / "lightning_logs"


def run_json(capsys, path: Path) -> dict:
    rc = main([str(path), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def codes(report: dict) -> list[str]:
    return [i["code"] for i in report["issues"] if i["severity"] in ("warning", "critical")]


LN10 = math.log(10)


def healthy(step: int) -> float:
    return 2.2 * math.exp(-step / 40) + 0.03


def at_chance(step: int) -> float:
    return LN10 + 0.002 * math.sin(step)


@pytest.mark.parametrize("every", [10, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_lightning_run_is_clean(tmp_path, capsys, every, seed):
    logs = lightning_logs(
        tmp_path,
        healthy,
        lambda e: (0.1 + 2.0 * 0.5**e, 0.97 - 0.8 * 0.5**e),
        1e-3,
        every=every,
        seed=seed,
    )
    report = run_json(capsys, logs)
    assert codes(report) == [], report["issues"]


@pytest.mark.parametrize("every", [10, 50])
def test_a_flat_loss_at_an_ordinary_lr_is_stuck_at_chance_and_k_is_inferred(
    tmp_path, capsys, every
):
    logs = lightning_logs(
        tmp_path, at_chance, lambda e: (LN10, 0.1), 0.05, optimizer="SGD", every=every, noise=0.02
    )
    report = run_json(capsys, logs)
    assert codes(report) == ["STUCK_AT_CHANCE"], report["issues"]
    assert any("classes: 10, inferred" in n for n in report["input"]["notes"])
    issue = report["issues"][0]
    assert "not low" in issue["evidence"] and "per-layer statistics" in issue["evidence"]
    assert not any("Increase the learning rate" in r for r in issue["recommendations"])


@pytest.mark.parametrize("every", [10, 50])
def test_a_flat_loss_at_a_tiny_lr_is_slow_convergence(tmp_path, capsys, every):
    logs = lightning_logs(
        tmp_path, at_chance, lambda e: (LN10, 0.1), 1e-5, optimizer="SGD", every=every, noise=0.02
    )
    report = run_json(capsys, logs)
    assert codes(report) == ["SLOW_CONVERGENCE"], report["issues"]
    assert "lr= of the optimizer" in report["issues"][0]["recommendations"][0]  # Lightning's words


@pytest.mark.parametrize("every", [10, 50])
def test_a_blow_up_is_found(tmp_path, capsys, every):
    def blow(step: int) -> float:
        return 2.3 * 10 ** (step / 15) if step < 120 else math.nan

    logs = lightning_logs(
        tmp_path, blow, lambda e: (math.nan, 0.1), 20.0, optimizer="SGD", every=every
    )
    report = run_json(capsys, logs)
    assert "LOSS_EXPLOSION" in codes(report), report["issues"]


def test_no_class_count_from_a_run_that_learned_before_its_first_log(tmp_path, capsys):
    logs = lightning_logs(tmp_path, healthy, lambda e: (0.2, 0.95), 1e-3, every=50)
    report = run_json(capsys, logs)
    assert not any("inferred" in n for n in report["input"]["notes"])


def test_hugging_face_trainer_tags(tmp_path, capsys):
    w = SummaryWriter(str(tmp_path / "runs" / "hf"))
    for step in range(10, 1001, 10):
        w.add_scalar("train/loss", healthy(step / 5), step)
        w.add_scalar("train/learning_rate", 5e-5 * (1 - step / 1000), step)
        w.add_scalar("train/grad_norm", 1.0 + 0.1 * math.sin(step), step)
        w.add_scalar("train/epoch", step / 100, step)
        if step % 100 == 0:
            w.add_scalar("eval/loss", 0.2 + 0.3 * (step / 1000) ** 2, step)  # rising: overfitting
            w.add_scalar("eval/accuracy", 0.9, step)
    w.close()
    report = run_json(capsys, tmp_path / "runs")
    tags = report["input"]["tags"]
    assert tags["loss"] == "train/loss" and tags["val_loss"] == "eval/loss"
    assert tags["lr"] == "train/learning_rate" and tags["grad_norm"] == "train/grad_norm"
    assert tags["val_acc"] == "eval/accuracy"
    assert "OVERFITTING" in codes(report), report["issues"]
    for issue in report["issues"]:  # neither the runner's overrides nor Lightning's arguments
        assert not any("optimizer.lr" in r or "Trainer(" in r for r in issue["recommendations"])


@pytest.mark.parametrize(
    "args",
    [
        ["{missing}"],
        ["{missing}", "--num-classes", "1"],
        ["{empty}"],
        ["{empty}", "--tags", "nope=x"],
    ],
)
def test_json_on_stdout_even_for_an_error(tmp_path, capsys, args):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = [a.format(missing=tmp_path / "nope", empty=empty) for a in args]
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 2
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["error"] and doc["error"] in err
