"""Models built from conf/model/*.yaml fit every dataset's shapes and train; compile and channels_last work."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose_cfg, run_cli
from hydra.utils import instantiate
from torch import nn

from runner.models.resnet import resnet18

DATASETS = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"]


def build(model: str, data: str, *extra: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model ``python -m runner model=<model> data=<data>`` would build, and the data's (C, S, classes)."""
    cfg = compose_cfg([f"model={model}", f"data={data}", *extra])
    shape = (cfg.data.in_channels, cfg.data.image_size, cfg.data.num_classes)
    return instantiate(cfg.model), shape


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """One SGD step; returns the loss and checks every parameter that got a gradient moved."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(moved) == len(before), f"parameters that did not move: {set(before) - set(moved)}"
    return loss.item()


@pytest.mark.parametrize("data", ["mnist", "cifar10"])
def test_resnet18_forward_and_one_training_step_on_1_and_3_channels(data):
    model, (c, s, k) = build("resnet18", data, "model.width=16")
    assert model.conv1.in_channels == c
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, c, s, s, generator=g), torch.randint(0, k, (8,), generator=g)
    out = model(x)
    assert out.shape == (8, k) and torch.isfinite(out).all()
    loss = train_step(model, x, y)
    assert 0 < loss < 10
    # a few more steps on the same batch drive its loss down: the network really learns
    for _ in range(10):
        last = train_step(model, x, y)
    assert last < loss


def test_resnet18_small_image_stem_and_width():
    small = resnet18(num_classes=100, in_channels=3, image_size=32)
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    assert small.fc.in_features == 512 and small.fc.out_features == 100
    assert 11.1e6 < sum(p.numel() for p in small.parameters()) < 11.3e6  # ResNet-18 on CIFAR-100
    large = resnet18(num_classes=10, in_channels=1, image_size=64)
    assert (large.conv1.kernel_size, large.conv1.stride, large.conv1.in_channels) == (
        (7, 7),
        (2, 2),
        1,
    )
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert large(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    narrow = resnet18(num_classes=10, in_channels=3, image_size=32, width=16)
    assert narrow.layer1[0].conv1.out_channels == 16 and narrow.layer4[0].conv1.out_channels == 128
    assert narrow.fc.in_features == 128
    assert (
        sum(p.numel() for p in narrow.parameters())
        < sum(p.numel() for p in small.parameters()) / 10
    )
    with pytest.raises(ValueError, match="model.width"):
        resnet18(num_classes=10, width=0)


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("model_name", ["mlp", "cnn", "resnet18"])
def test_every_model_fits_every_dataset(model_name, data):
    extra = ["model.width=8"] if model_name == "resnet18" else []
    model, (c, s, k) = build(model_name, data, *extra)
    x, y = torch.randn(4, c, s, s), torch.randint(0, k, (4,))
    assert model(x).shape == (4, k)
    train_step(model, x, y)


def test_channels_last_gives_the_same_outputs():
    model, (c, s, _) = build("resnet18", "cifar10", "model.width=8")
    model.eval()
    x = torch.randn(3, c, s, s)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        model(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4
    )


@pytest.mark.slow
def test_compile_unavailable_says_so_and_trains_eagerly(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["trainer.compile=true", "trainer.max_epochs=1", "diag=off"],
        tmp_path,
        run_dir=run_dir,
        env={"CXX": str(tmp_path / "no-such-compiler")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "trainer.compile=true: not compiling, the inductor backend needs a C++ compiler"
        in proc.stdout
    )
    assert json.loads((run_dir / "report.json").read_text())["metrics"]["epochs"] == 1


@pytest.mark.slow
def test_compile_runs_compiled_and_checkpoints_keep_plain_names(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["trainer.compile=true", "trainer.max_epochs=1", "diag=off", "model.hidden=[32]"],
        tmp_path,
        run_dir=run_dir,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trainer.compile=true: model compiled with torch.compile" in proc.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert report["metrics"]["test_acc"] > 0.2  # digits after one epoch, well above chance (0.1)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    keys = list(state["model"]) if "model" in state else list(state)
    assert keys and not any(k.startswith("_orig_mod") for k in keys)


def test_an_mlp_checkpoint_with_positional_layer_names_still_loads():
    """Runs saved before the MLP's blocks had names (``features.0``, ``features.4``) resume into it."""
    from runner.models.mlp import MLP

    torch.manual_seed(0)
    saved = MLP(1, 8, 10, hidden=(16, 16), batchnorm=True, dropout=0.1)
    positional = {"fc1": "0", "bn1": "1", "fc2": "4", "bn2": "5"}
    old = {}
    for key, value in saved.state_dict().items():
        parts = key.split(".")
        if parts[0] == "features":
            parts[1] = positional[parts[1]]
        old[".".join(parts)] = value
    assert "features.4.weight" in old and "features.fc2.weight" not in old
    fresh = MLP(1, 8, 10, hidden=(16, 16), batchnorm=True, dropout=0.1)
    assert not torch.equal(fresh.features.fc2.weight, saved.features.fc2.weight)
    fresh.load_state_dict(old)  # strict: every key found under its new name
    for key, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
