"""What the per-step savings must not change: logged values, hook order, activation statistics, fused optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import ROOT
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from diag.activation_hooks import ActivationRecorder
from diag.hooks import FitState, Hook, HookList
from diag.tensorboard import TensorBoardScalars


def _scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _tensorboard_hook(
    tmp_path, every_n_steps: int, write_every: int
) -> tuple[FitState, TensorBoardScalars]:
    """A started TensorBoardScalars hook on a real SummaryWriter in tmp_path (SGD at lr 0.1, batches of 8)."""
    model = nn.Linear(2, 2)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    state.writer = SummaryWriter(str(tmp_path))
    state.batch_size = 8
    hook = TensorBoardScalars(every_n_steps=every_n_steps, write_every=write_every)
    hook.on_fit_start(state)
    return state, hook


def test_tensorboard_intervals_written_in_batches_hold_each_intervals_mean(tmp_path):
    """Steps are read from the device only every write_every intervals; each interval keeps its own mean."""
    state, hook = _tensorboard_hook(tmp_path, every_n_steps=4, write_every=3)
    losses = [float(k) for k in range(1, 23)]
    for k, loss in enumerate(losses, start=1):
        state.step = k
        state.loss, state.grad_norm = torch.tensor(loss), torch.tensor(2 * loss)
        hook.on_train_batch_end(state)
        if k == 9:  # a checkpoint hands what is buffered to the writer
            hook.state_dict()
    state.epoch = 0
    hook.on_epoch_end(state)  # closes the last, shorter interval (steps 21-22)
    state.writer.close()
    got = _scalars(tmp_path)
    want_steps = [4, 8, 12, 16, 20, 22]
    assert [s for s, _ in got["train/loss"]] == want_steps
    bounds = [0, 4, 8, 12, 16, 20, 22]
    for (step, value), lo, hi in zip(got["train/loss"], bounds, bounds[1:]):
        assert value == pytest.approx(sum(losses[lo:hi]) / (hi - lo)), step
    assert [v for _, v in got["train/grad_norm"]] == pytest.approx(
        [2 * v for _, v in got["train/loss"]]
    )
    assert [v for _, v in got["train/lr"]] == pytest.approx([0.1] * 6)


def test_tensorboard_intervals_are_on_disk_once_handed_to_the_writer(tmp_path):
    """TensorBoard shows a live run: each batch of intervals is on disk while the writer is still open."""
    state, hook = _tensorboard_hook(tmp_path, every_n_steps=5, write_every=2)
    for k in range(1, 21):
        state.step = k
        state.loss, state.grad_norm = torch.tensor(float(k)), torch.tensor(1.0)
        hook.on_train_batch_end(state)
    try:
        # the writer is still open
        assert [s for s, _ in _scalars(tmp_path)["train/loss"]] == [
            5,
            10,
            15,
            20,
        ]
    finally:
        state.writer.close()


def test_tensorboard_interval_with_a_nan_step_logs_nan(tmp_path):
    state, hook = _tensorboard_hook(tmp_path, every_n_steps=2, write_every=1)
    for k, loss in enumerate([1.0, float("nan"), 3.0, 5.0], start=1):
        state.step = k
        state.loss, state.grad_norm = torch.tensor(loss), torch.tensor(1.0)
        hook.on_train_batch_end(state)
    state.writer.close()
    values = [v for _, v in _scalars(tmp_path)["train/loss"]]
    assert math.isnan(values[0]) and values[1] == pytest.approx(4.0)


class _Calls(Hook):
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def on_train_batch_end(self, state: FitState) -> None:
        self.log.append(self.name)


class _EpochOnly(Hook):
    def __init__(self, log: list) -> None:
        self.log = log

    def on_epoch_end(self, state: FitState) -> None:
        self.log.append("epoch")


def test_hooklist_calls_per_step_hooks_in_order_and_others_only_for_their_events():
    log: list = []
    hooks = HookList([_Calls("a", log), _EpochOnly(log), _Calls("b", log)])
    state = FitState(model=nn.Linear(1, 1), optimizer=None)
    hooks.on_train_batch_end(state)
    hooks.on_epoch_end(state)
    assert log == ["a", "b", "epoch"]
    assert len(hooks._on_batch_end) == 2


def test_activation_statistics_match_the_full_computation_on_a_conv_map():
    """Dead units from one amax pass equal (out > 0).any(); saturation from the subsample is close."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.Tanh())
    with torch.no_grad():
        model[0].bias[:5] = -100.0  # channels 0-4 never fire
    rec = ActivationRecorder(model)
    outs = {}
    handles = [
        model[1].register_forward_hook(lambda m, i, o: outs.__setitem__("relu", o.detach())),
        model[3].register_forward_hook(lambda m, i, o: outs.__setitem__("tanh", o.detach())),
    ]
    rec.attach()
    model(torch.randn(64, 1, 28, 28) * 3)
    stats = rec.collect()
    rec.detach()
    for h in handles:
        h.remove()
    relu, tanh = outs["relu"], outs["tanh"]
    # each activation is keyed by the conv it follows: the ReLU (module 1) as "0", the tanh (3) as "2"
    assert torch.equal(rec.fired["0"], (relu > 0).any(dim=(0, 2, 3)))
    assert stats["0"]["dead_fraction"] == pytest.approx(5 / 16)
    assert stats["0"] == {"dead_fraction": pytest.approx(5 / 16)}  # no saturation for ReLU
    full_sat = ((tanh <= -0.98) | (tanh >= 0.98)).float().mean().item()
    assert stats["2"]["saturation"] == pytest.approx(full_sat, abs=0.01)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizer_configs_build_fused_optimizers(name):
    cfg = OmegaConf.load(ROOT / "runner" / "conf" / "optimizer" / f"{name}.yaml")
    opt = instantiate(cfg)(params=nn.Linear(3, 2).parameters())
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("fold_samples", [1, 50, 4096])
def test_buffered_train_loss_and_accuracy_are_the_epochs_exact_figures(monkeypatch, fold_samples):
    """However often the buffered steps are folded (every step, mid-batch bounds, once), and with a short last
    batch, train/loss and train/acc are the sample-weighted means over the epoch (lr 0: the model stays put)."""
    import runner.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "ACC_FOLD_SAMPLES", fold_samples)
    torch.manual_seed(0)
    x, y = torch.randn(203, 6), torch.randint(0, 4, (203,))
    data = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(data, batch_size=16)  # 12 batches of 16 and one of 11
    model = nn.Linear(6, 4)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    trainer_module.Trainer(max_epochs=2, progress=False).fit(state, loader, loader, HookList())
    with torch.no_grad():
        logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).sum().item() / len(y)
    assert state.metrics["train/loss"] == pytest.approx(loss, rel=1e-5)
    assert state.metrics["train/acc"] == pytest.approx(acc, abs=1e-9)
    # epoch 2 starts afresh
    assert [h["train/acc"] for h in state.history] == pytest.approx([acc, acc], abs=1e-9)
    assert 0.1 < acc < 0.9  # a value that a wrong count would change


def test_a_sample_hooks_only_layers_with_a_measure_unless_it_keeps_values():
    # GELU units have neither a dead nor a saturated measure: no hook on them for a plain sample (a hook
    # costs the forward pass), one when the sample's values go to histograms
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh()
    )
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # two of eight ReLU units never fire
    rec = ActivationRecorder(model)
    rec.attach()
    assert len(rec._handles) == 2
    model(torch.randn(32, 4))
    stats = rec.collect()
    rec.detach()
    assert stats.keys() == {"0", "4"}  # keyed by the layer each follows
    assert stats["0"] == {"dead_fraction": pytest.approx(0.25)}
    assert stats["4"].keys() == {"saturation"}
    assert rec.collect() == {}  # read once per forward pass
    rec.keep_values = True
    rec.attach()
    assert len(rec._handles) == 3
    model(torch.randn(32, 4))
    assert rec.collect().keys() == {"0", "2", "4"}
    assert rec.values.keys() == {"0", "2", "4"}
    rec.detach()
