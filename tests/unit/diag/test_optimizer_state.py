"""``diag analyze`` on loss-only logs reads the optimizer state of the checkpoint saved beside them.

Each net is really trained; its checkpoint is laid out as Lightning's ``ModelCheckpoint`` writes it
(``state_dict``, ``optimizer_states``, ``global_step`` in ``<version>/checkpoints/*.ckpt``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from diag.analyze import main

LN10 = math.log(10)
STEPS = 120


def _net(depth: int, act: type[nn.Module], bias: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 16
    for _ in range(depth):
        layers += [nn.Linear(width, 32), act()]
        width = 32
    net = nn.Sequential(*layers, nn.Linear(width, 10))
    if bias is not None:
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, bias)
    return net


def _train_and_log(root: Path, net: nn.Module, opt: torch.optim.Optimizer) -> Path:
    """Train ``net`` on a learnable problem; write Lightning-style scalars and checkpoint; the logs root."""
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = (x[:, :10].argmax(1) + 0) % 10
    version = root / "lightning_logs" / "version_0"
    w = SummaryWriter(str(version))
    for step in range(STEPS):
        idx = torch.randint(0, 256, (32,))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            w.add_scalar("train_loss_step", float(loss.detach()), step)
            w.add_scalar(f"lr-{type(opt).__name__}", opt.param_groups[0]["lr"], step)
        if step % 20 == 19:
            with torch.no_grad():
                logits = net(x)
                w.add_scalar("val_loss", float(nn.functional.cross_entropy(logits, y)), step)
                w.add_scalar("val_acc", float((logits.argmax(1) == y).float().mean()), step)
    w.close()
    (version / "checkpoints").mkdir()
    torch.save(
        {
            "epoch": 5,
            "global_step": STEPS,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [],
        },
        version / "checkpoints" / f"epoch=5-step={STEPS}.ckpt",
    )
    return root / "lightning_logs"


def _report(capsys: pytest.CaptureFixture[str], logs: Path) -> dict:
    assert main([str(logs), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _serious(report: dict) -> list[str]:
    return [i["code"] for i in report["issues"] if i["severity"] in ("warning", "critical")]


def test_dead_relu_units_are_named_from_adams_state(tmp_path: Path, capsys) -> None:
    net = _net(2, nn.ReLU, bias=-5.0)
    logs = _train_and_log(tmp_path, net, torch.optim.Adam(net.parameters(), lr=1e-3))
    report = _report(capsys, logs)
    assert "DEAD_NEURONS" in _serious(report), report["issues"]
    assert "STUCK_AT_CHANCE" not in _serious(report)  # explained by the dead units
    dead = next(i for i in report["issues"] if i["code"] == "DEAD_NEURONS")
    assert dead["layer"] == "net.0" and "zero gradient" in dead["evidence"]
    assert any("optimizer state in epoch=5-step=120.ckpt" in n for n in report["input"]["notes"])


def test_a_deep_sigmoid_net_is_vanishing_gradients_from_sgd_momentum(
    tmp_path: Path, capsys
) -> None:
    torch.manual_seed(0)
    net = _net(8, nn.Sigmoid)
    logs = _train_and_log(tmp_path, net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    report = _report(capsys, logs)
    assert "VANISHING_GRADIENTS" in _serious(report), report["issues"]
    issue = next(i for i in report["issues"] if i["code"] == "VANISHING_GRADIENTS")
    assert issue["layer"] == "net.0" and "running record" in issue["evidence"]


def test_a_healthy_net_gets_no_layer_finding_from_its_state(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    net = _net(2, nn.ReLU)
    logs = _train_and_log(tmp_path, net, torch.optim.Adam(net.parameters(), lr=3e-3))
    report = _report(capsys, logs)
    found = _serious(report)
    assert not {"DEAD_NEURONS", "VANISHING_GRADIENTS", "EXPLODING_GRADIENTS"} & set(found), found


def test_plain_sgd_keeps_no_gradient_record_and_says_so(tmp_path: Path, capsys) -> None:
    net = _net(2, nn.ReLU, bias=-5.0)
    logs = _train_and_log(tmp_path, net, torch.optim.SGD(net.parameters(), lr=0.01))
    report = _report(capsys, logs)
    assert "DEAD_NEURONS" not in _serious(report)
    assert any("plain SGD has none" in n for n in report["input"]["notes"])


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x80\x04K\x05."])
def test_an_unreadable_checkpoint_is_a_note_not_a_crash(tmp_path: Path, capsys, content) -> None:
    net = _net(2, nn.ReLU, bias=-5.0)
    logs = _train_and_log(tmp_path, net, torch.optim.Adam(net.parameters(), lr=1e-3))
    ckpt = next((logs / "version_0" / "checkpoints").iterdir())
    ckpt.write_bytes(content)
    report = _report(capsys, logs)
    assert "DEAD_NEURONS" not in _serious(report)
    assert any(ckpt.name in n and "skipped" in n for n in report["input"]["notes"])
