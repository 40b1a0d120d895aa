"""The run's TensorBoard writer is made at its first real use; what was written before it lands as written."""

from __future__ import annotations

import time

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runner.tensorboard_run import open_writer


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
    writer.flush()  # the first use that is not an add_*: the writer is made, the queue replayed
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
