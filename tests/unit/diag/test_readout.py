"""What a reader sees, built from real models and series: one name per layer, Custom Scalars charts that
apply, a labelled confusion matrix, and a summary figure that shows an LR of 0 and a blow-up's start."""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import compose_cfg
from helpers.datasets import write_cifar10
from hydra.utils import instantiate
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torch import nn

from diag.activation_hooks import ActivationRecorder
from diag.confusion_plot import confusion_figure
from diag.layer_names import activation_names, weight_layer_names
from diag.series import RunSeries
from diag.summary_plot import summary_figure
from diag.tensorboard import CHART_LINES, custom_scalars_layout
from runner.trainer import Trainer


def test_runner_models_name_layers_by_module_path_and_activations_by_the_layer_they_follow():
    mlp = instantiate(compose_cfg(["model=mlp"]).model)
    assert weight_layer_names(mlp) == ["features.fc1", "features.fc2", "classifier"]
    rec = ActivationRecorder(mlp)
    assert list(rec.layers) == [
        "features.fc1",
        "features.fc2",
    ]  # the ReLUs at features.act1 and features.act2
    # a restart that adds batch norm and dropout keeps every layer's name (positions would shift)
    with_bn = instantiate(
        compose_cfg(["model=mlp", "model.batchnorm=true", "model.dropout=0.2"]).model
    )
    assert weight_layer_names(with_bn) == weight_layer_names(mlp)
    assert list(ActivationRecorder(with_bn).layers) == list(rec.layers)
    cnn = instantiate(compose_cfg(["model=cnn"]).model)
    assert weight_layer_names(cnn) == ["features.0", "features.4", "classifier"]
    assert list(ActivationRecorder(cnn).layers) == ["features.0", "features.4"]


def test_two_activations_after_one_layer_keep_their_own_names():
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Tanh())
    names = activation_names(model, ["0", "2", "3"])
    assert names == {"0": "0", "2": "1", "3": "3"}


def test_custom_scalars_show_what_applies_a_few_layers_per_chart():
    relu = ActivationRecorder(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    layout = custom_scalars_layout(["0", "2"], relu.measures())
    assert "Share of saturated units by layer" not in layout  # a ReLU model has nothing saturating
    assert list(layout["Share of dead units by layer"]) == ["0"]
    sigmoid = ActivationRecorder(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2)))
    layout = custom_scalars_layout(["0", "2"], sigmoid.measures())
    assert "Share of dead units by layer" not in layout
    tags = ["x_layers/grad_norm/features.0", "x_layers/grad_norm/features.10", "train/grad_norm"]
    layout = custom_scalars_layout(["features.0", "features.10"], {})
    (pattern,) = layout["Gradient norm by layer"]["features: 0, 10"][1]
    assert [t for t in tags if re.search(pattern, t)] == tags[:2]  # not features.1 or train/
    assert layout["Training"]["gradient norm"][1] == ["^train/grad_norm$"]


def test_a_resnet18_gets_charts_of_four_layers_by_block_each_layer_in_one():
    from torchvision.models import resnet18

    names = weight_layer_names(resnet18(num_classes=10))
    assert len(names) == 21
    layout = custom_scalars_layout(names, {})
    charts = layout["Gradient norm by layer"]
    tags = [f"x_layers/grad_norm/{n}" for n in names] + ["x_layers/grad_norm/layer1.0.conv10"]
    shown = {title: [t for t in tags if re.search(spec[1][0], t)] for title, spec in charts.items()}
    assert all(1 <= len(lines) <= CHART_LINES for lines in shown.values()), shown
    # every layer in exactly one chart, in model order, and nothing else
    assert [t for lines in shown.values() for t in lines] == tags[:-1]
    assert list(charts)[:3] == [
        "conv1",
        "layer1: 0.conv1, 0.conv2, 1.conv1, 1.conv2",
        "layer2 (1/2): 0.conv1, 0.conv2, 0.downsample.0, 1.conv1",
    ]
    assert list(charts)[-1] == "fc"


def test_evaluate_counts_a_confusion_matrix_that_agrees_with_its_accuracy():
    torch.manual_seed(0)
    x, y = torch.randn(300, 5), torch.randint(0, 3, (300,))
    model = nn.Linear(5, 3)
    loader = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 300, 64)]
    out = Trainer(max_epochs=1, device="cpu").evaluate(model, loader, confusion=True)
    m = np.array(out["confusion"])
    assert m.shape == (3, 3) and m.sum() == 300
    assert np.trace(m) / 300 == out["acc"]
    assert (
        m.sum(axis=1).tolist() == torch.bincount(y, minlength=3).tolist()
    )  # rows are true classes


def test_confusion_figure_names_the_classes(tmp_path):
    write_cifar10(tmp_path, per_batch=4, n_test=10)
    data = instantiate(compose_cfg(["data=cifar10", f"data.root={tmp_path}"]).data)
    names = data.class_names()
    assert names[:3] == ["airplane", "automobile", "bird"]
    fig = confusion_figure(np.eye(10) * 5, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "accuracy 1.000" in ax.get_title()
    digits = instantiate(compose_cfg(["data=digits"]).data)
    assert digits.class_names() == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "names",
    [
        [str(i) for i in range(3)],
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"] * 2,
        [f"class_with_a_long_name_{i:02d}" for i in range(100)],  # CIFAR-100's count, longer names
    ],
    ids=["3 digits", "fashion names", "100 long names"],
)
def test_confusion_figure_keeps_every_label_inside_the_picture(names):
    """The margins are fixed from the labels' length (no tight_layout pass): every tick label, axis
    label, the title and the colorbar's label must still fall inside the figure."""
    k = len(names)
    fig = confusion_figure(np.eye(k) * 5 + 1, names)
    canvas = FigureCanvasAgg(fig)  # the canvas savefig draws a PNG with
    canvas.draw()
    renderer = canvas.get_renderer()
    inside = fig.bbox.padded(1)
    ax, cbar = fig.axes
    texts = [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.yaxis.label, ax.title]
    texts += [cbar.yaxis.label, *cbar.get_yticklabels()]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, (text.get_text(), box, fig.bbox)
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, (text.get_text(), box, fig.bbox)
    # and the matrix does not run into the labels: the axes sit right of the y labels, above the x ones
    ax_box = ax.get_window_extent(renderer)
    assert max(t.get_window_extent(renderer).x1 for t in ax.get_yticklabels()) < ax_box.x0


def test_summary_shows_a_schedules_final_zero_and_a_blow_ups_start():
    s = RunSeries(num_classes=10)
    s.initial_loss = 2.3
    s.step = [10, 20, 30, 40]
    s.loss = [4e27, 1e28, math.nan, 2e28]
    s.grad_norm = [1e18, 2e18, math.nan, 1e18]
    s.lr = [1.0, 0.5, 0.1, 0.05]  # sampled before the per-epoch schedule's last step
    fig = summary_figure(s, final_lr=0.0)
    ax_loss, ax_lr = fig.axes[0], fig.axes[1]
    lr_line = ax_lr.get_lines()[-1]
    assert lr_line.get_ydata()[-1] == 0.0 and ax_lr.get_ylim()[0] == 0.0
    lo, hi = ax_loss.get_ylim()
    assert lo < 2.3 and hi > 2e28  # the start and the peak on one axis
    plt.close(fig)


def test_an_attempt_writes_only_its_own_autotrainer_actions(tmp_path):
    """A restart's state carries the earlier attempts' actions: they are in those attempts' event files,
    so the new attempt writes only the actions taken in it, each at its own step with its LR factor."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from diag.hooks import FitState
    from diag.tensorboard import TensorBoardScalars

    carried = {"attempt": 0, "step": 40, "code": "VANISHING_GRADIENTS", "action": "restart"}
    carried.update(lr_before=0.0427, lr_after=0.05, detail="restart as attempt-1")
    writer = SummaryWriter(str(tmp_path))
    state = FitState(model=nn.Linear(2, 2), writer=writer, batch_size=4, actions=[carried])
    hook = TensorBoardScalars(every_n_steps=1, write_every=1)
    hook.on_fit_start(state)
    for step in (1, 2, 3):
        state.step, state.loss, state.grad_norm = step, torch.tensor(1.0), torch.tensor(0.5)
        hook.on_train_batch_end(state)
        if step == 2:  # the AutoTrainer (a later hook) acts at step 2 of this attempt
            state.actions.append(
                {"attempt": 1, "step": 2, "code": "LOSS_OSCILLATION", "action": "scale_lr"}
                | {"lr_before": 0.05, "lr_after": 0.025, "detail": "x0.5"}
            )
    hook.on_fit_end(state)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    texts = [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in acc.Tensors("x_autotrainer/actions/text_summary")
    ]
    assert len(texts) == 1 and texts[0][0] == 2 and "**scale_lr**" in texts[0][1]
    assert "restart" not in texts[0][1]
    assert [(e.step, e.value) for e in acc.Scalars("x_autotrainer/lr_factor")] == [(2, 0.5)]


def test_the_scalars_hook_has_a_hand_loops_writer_checksum_in_c(tmp_path, monkeypatch):
    """A loop's own SummaryWriter gets the C checksum at the hook's first write; the scalars read back
    through tensorboard's reader, which checks every record against its pure-Python CRC."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer
    from torch.utils.tensorboard import SummaryWriter

    from diag.hooks import FitState
    from diag.tensorboard import TensorBoardScalars, masked_crc32c

    monkeypatch.setattr(record_writer, "masked_crc32c", pywrap_tensorflow.masked_crc32c)
    writer = SummaryWriter(str(tmp_path))
    state = FitState(model=nn.Linear(2, 2), writer=writer, batch_size=4)
    hook = TensorBoardScalars(every_n_steps=1, write_every=1)
    hook.on_fit_start(state)
    for step in range(1, 6):
        state.step, state.loss, state.grad_norm = step, torch.tensor(1.0 / step), torch.tensor(0.5)
        hook.on_train_batch_end(state)
    assert record_writer.masked_crc32c is masked_crc32c  # in place from the first write
    hook.on_fit_end(state)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("train/loss")] == [
        (s, round(1.0 / s, 4)) for s in range(1, 6)
    ]
