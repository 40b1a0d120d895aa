"""The run's PNGs go into TensorBoard byte for byte, read back with TensorBoard's own reader."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from torch.utils.tensorboard import SummaryWriter

from runner.tensorboard_run import add_png, open_writer


def _png(width_in: float, height_in: float) -> bytes:
    fig = Figure(figsize=(width_in, height_in))
    fig.add_subplot().plot([0, 1, 4], "o-")
    buf = io.BytesIO()
    fig.savefig(buf, dpi=50, format="png")
    return buf.getvalue()


def _images(logdir, tag):
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    return acc.Images(tag)


def test_a_png_is_stored_as_written_with_its_size_and_channels(tmp_path):
    data = _png(4, 3)
    writer = SummaryWriter(str(tmp_path))
    add_png(writer, "x_run/summary", data, 7)
    writer.close()
    (image,) = _images(tmp_path, "x_run/summary")
    assert image.step == 7 and image.encoded_image_string == data
    pixels = imread(io.BytesIO(data), format="png")
    assert (image.height, image.width) == pixels.shape[:2] == (150, 200)
    # the channels TensorBoard is told: matplotlib writes RGBA
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    (raw,) = [
        v.image
        for e in LegacyEventFileLoader(str(event_file)).Load()  # as written
        for v in e.summary.value
        if v.tag == "x_run/summary"
    ]
    assert raw.colorspace == pixels.shape[2] == 4
    assert np.ptp(pixels[..., :3]) > 0.5  # a real picture, not a blank


def test_a_restart_writer_shifts_the_image_step_like_its_scalars(tmp_path):
    writer = open_writer(tmp_path, step=0, step_offset=100)
    add_png(writer, "x_run/summary", _png(2, 2), 5)
    writer.close()
    (image,) = _images(tmp_path, "x_run/summary")
    assert image.step == 105


def test_bytes_that_are_not_a_png_are_refused_by_name(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(ValueError, match="x_run/summary: not a PNG"):
        add_png(writer, "x_run/summary", b"GIF89a" + bytes(40), 0)
    writer.close()


@pytest.mark.parametrize("size", [0, 1, 7, 8, 12, 255, 4097])
def test_the_c_checksum_is_tensorboards_masked_crc32c(size):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs

    from diag.tensorboard import masked_crc32c

    rng = np.random.default_rng(size)
    for _ in range(5):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == theirs(data)


def test_a_run_writer_checksums_in_c_and_tensorboards_reader_accepts_every_record(
    tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    from diag.tensorboard import masked_crc32c

    # as a fresh process has it (an earlier test in this one may have made a run writer already)
    monkeypatch.setattr(record_writer, "masked_crc32c", pywrap_tensorflow.masked_crc32c)
    writer = open_writer(tmp_path, step=0)
    for step in range(30):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    add_png(writer, "x_run/summary", _png(2, 2), 30)
    writer.close()
    assert record_writer.masked_crc32c is masked_crc32c  # the writer's module uses the C checksum
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    # the reader recomputes each record's checksums with tensorboard's own pure-Python CRC and stops
    # at the first mismatch (as at a record still being written)
    events = [Event.FromString(r) for r in RawEventFileLoader(str(event_file)).Load()]
    scalars = [v.tag for e in events for v in e.summary.value]
    assert scalars.count("train/loss") == 30 and "x_run/summary" in scalars
    # and a byte flipped in the middle is caught there: the checksums are checked
    raw = bytearray(event_file.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    event_file.write_bytes(bytes(raw))
    assert 0 < len(list(RawEventFileLoader(str(event_file)).Load())) < len(events)
