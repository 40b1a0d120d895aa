"""The run's TensorBoard writer: events queued and written in batches (at flush, or after a delay), as written."""

from __future__ import annotations

import time

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diag.tensorboard import write_scalars
from runner.tensorboard_run import BatchingWriter, open_writer


def test_calls_before_the_writer_exists_land_with_their_values_steps_and_wall_times(tmp_path):
    writer = open_writer(tmp_path, step=0)
    weights = torch.zeros(4)
    before = time.time()
    writer.add_histogram("x_layers/weights/fc1", weights, 0)
    weights += 5.0  # an optimizer step changes the tensor in place after it was queued
    writer.add_text("x_autotrainer/attempts", "attempt-1: model.batchnorm=True", 0)
    writer.add_custom_scalars({"loss": {"loss": ["Multiline", ["^train/loss$"]]}})
    assert not list(tmp_path.iterdir())  # nothing made yet: no event file
    time.sleep(0.05)
    writer.add_scalar("train/loss", 1.5, 1)
    writer.flush()  # the writer is made, the queue written to it
    writer.add_scalar("train/loss", 0.5, 2)
    writer.close()

    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "tensors": 0})
    acc.Reload()
    (hist,) = acc.Histograms("x_layers/weights/fc1")
    assert hist.step == 0 and hist.histogram_value.max == 0.0  # step 0's values, not the later +5
    assert before <= hist.wall_time < before + 0.05  # when it was written, not when it was replayed
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.5), (2, 0.5)]
    texts = acc.Tensors("x_autotrainer/attempts/text_summary")
    assert texts[0].tensor_proto.string_val[0].decode() == "attempt-1: model.batchnorm=True"
    assert acc.Tensors("custom_scalars__config__")


def test_scalars_for_the_file_writer_wait_for_the_flush_and_keep_their_wall_time(tmp_path):
    writer = open_writer(tmp_path, step=0)
    before = time.time()
    write_scalars(writer, {"x_layers/grad_norm/fc1": 0.25, "x_layers/grad_norm/fc2": 0.5}, 10)
    # a wall time given stays
    write_scalars(writer, {"train/loss": 2.0}, 10, walltime=before - 60.0)
    assert not list(tmp_path.iterdir())  # queued: no writer thread woken mid-epoch
    time.sleep(0.05)
    writer.flush()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    (fc1,) = acc.Scalars("x_layers/grad_norm/fc1")
    assert (fc1.step, fc1.value) == (10, 0.25) and before <= fc1.wall_time < before + 0.05
    (loss,) = acc.Scalars("train/loss")
    assert loss.wall_time == before - 60.0


def test_events_queued_longer_than_the_delay_are_written_without_a_flush(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = BatchingWriter(lambda: SummaryWriter(str(tmp_path)), max_delay=0.02)
    writer.add_scalar("train/loss", 1.0, 1)
    assert not list(tmp_path.iterdir())
    time.sleep(0.05)
    writer.add_scalar("train/loss", 0.5, 2)  # the first one has waited past the delay: both go out
    assert writer._writer is not None and not writer._queued
    writer._writer.flush()  # the real writer's own flush: nothing of ours left to hand over
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]
    writer.close()


def _epochs_with_flush_secs(tmp_path, flush_secs: float, epochs: int = 3):
    """A TensorBoardScalars hook on the run's writer through ``epochs`` epoch ends (fit end not yet)."""
    from torch import nn

    from diag.hooks import FitState
    from diag.tensorboard import TensorBoardScalars

    model = nn.Linear(2, 2)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    state.writer, state.batch_size = open_writer(tmp_path, step=0), 8
    hook = TensorBoardScalars(every_n_steps=5, flush_secs=flush_secs)
    hook.on_fit_start(state)
    for epoch in range(epochs):
        for _ in range(10):
            state.step += 1
            state.loss, state.grad_norm = torch.tensor(1.0 / state.step), torch.tensor(1.0)
            hook.on_train_batch_end(state)
        state.epoch, state.metrics["val/acc"] = epoch, 0.5 + 0.1 * epoch
        hook.on_epoch_end(state)
    return state, hook


def _val_acc(tb_dir) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return (
        [(e.step, round(e.value, 6)) for e in acc.Scalars("val/acc")]
        if "val/acc" in acc.Tags()["scalars"]
        else []
    )


def test_epoch_ends_within_flush_secs_keep_their_events_queued_until_the_fit_end(tmp_path):
    state, hook = _epochs_with_flush_secs(tmp_path, flush_secs=3600)
    assert (
        _val_acc(tmp_path) == []
    )  # three epochs within the hour: nothing handed to the writer yet
    hook.on_fit_end(state)  # the fit's end always writes
    state.writer.close()
    assert _val_acc(tmp_path) == [(10, 0.5), (20, 0.6), (30, 0.7)]


def test_flush_secs_zero_writes_every_epoch_end(tmp_path):
    state, _ = _epochs_with_flush_secs(tmp_path, flush_secs=0)
    try:
        assert _val_acc(tmp_path) == [(10, 0.5), (20, 0.6), (30, 0.7)]  # on disk, writer still open
    finally:
        state.writer.close()


def test_a_negative_flush_secs_is_refused_by_name():
    import pytest

    from diag.tensorboard import TensorBoardScalars

    with pytest.raises(ValueError, match=r"flush_secs=-1.*seconds >= 0"):
        TensorBoardScalars(flush_secs=-1)
