"""A run's TensorBoard files: the writer, and what the Text and Images tabs show at the end.

The AutoTrainer's restarts (``attempt-N/``) continue the step axis of the attempts before them, so
their curves follow on instead of starting again at 0. At the end: the report, the command and the
resolved config as text; the summary figure, the LR finder's plot, the test confusion matrix (classes
named) and a grid of training inputs with their labels as images. The PNGs the run already wrote go
into the event file as they are (their bytes, not decoded and encoded again: that took a third of a
small trial's end). A trial ``stop_on`` ended gets no input grid (nor a confusion matrix: it has no
test pass), only its text and summary figure.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diag.tensorboard import RUN_PREFIX, use_fast_checksums

SAMPLES = 16  # input images in the grid


class _ShiftedSteps:
    """A file writer whose events land ``offset`` steps later (everything else passes through)."""

    def __init__(self, inner: Any, offset: int) -> None:
        self._inner, self._offset = inner, offset

    def add_summary(
        self, summary: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        step = None if global_step is None else global_step + self._offset
        self._inner.add_summary(summary, step, walltime)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# SummaryWriter's add_* methods that take a ``walltime`` (add_custom_scalars and add_hparams do not)
TIMED_ADDS = frozenset(
    (
        "add_scalar",
        "add_scalars",
        "add_text",
        "add_histogram",
        "add_image",
        "add_images",
        "add_figure",
    )
)


# queued events go out at least this often mid-epoch (SummaryWriter flushes its file every 120 s anyway)
MAX_DELAY_S = 10.0


class BatchingWriter:
    """A ``SummaryWriter`` written in batches: ``add_*`` calls (and summaries for its file writer) are queued
    and handed to it together at ``flush()`` (the TensorBoard hook's, every epoch end), at any other use,
    or once the oldest has waited ``max_delay`` seconds. The writer itself is made at the first of those.

    Why: each event handed over mid-epoch wakes the writer's thread, which then contends with the training
    loop for the GIL while it serialises and checksums in Python; handed over together and waited for once
    at the epoch's end, it runs alone. And importing TensorBoard's writer (its file layer pulls in boto3
    and fsspec where installed) waits until after the first step. Queued calls keep their wall time, and
    tensors are copied when queued (a weight histogram of step 0 stays step 0's).
    """

    def __init__(self, make: Callable[[], Any], max_delay: float = MAX_DELAY_S) -> None:
        self._make: Callable[[], Any] | None = make
        self._writer: Any = None
        self._queued: list[
            tuple[bool, str, tuple, dict]
        ] = []  # (for the file writer?, method, args, kwargs)
        self._since: float | None = None  # monotonic time of the oldest queued call
        self._max_delay = max_delay

    def _real(self) -> Any:
        """The SummaryWriter (made now if need be) with every queued call written to it."""
        if self._writer is None:
            assert self._make is not None
            self._writer, self._make = self._make(), None
        queued, self._queued, self._since = self._queued, [], None
        for to_file, name, args, kwargs in queued:
            target = self._writer._get_file_writer() if to_file else self._writer
            getattr(target, name)(*args, **kwargs)
        return self._writer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("add_"):
            return lambda *args, **kwargs: self._queue(False, name, args, kwargs)
        if name == "_get_file_writer":
            return lambda: _QueuedFileWriter(self)
        return getattr(self._real(), name)

    def _queue(self, to_file: bool, name: str, args: tuple, kwargs: dict) -> None:
        if to_file or name in TIMED_ADDS:
            kwargs.setdefault("walltime", time.time())
        args = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
        self._queued.append((to_file, name, args, kwargs))
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since > self._max_delay:
            self._real()


class _QueuedFileWriter:
    """What ``BatchingWriter._get_file_writer()`` returns: ``add_summary`` is queued with the rest."""

    def __init__(self, owner: BatchingWriter) -> None:
        self._owner = owner

    def add_summary(
        self, summary: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        kwargs = {} if walltime is None else {"walltime": walltime}
        self._owner._queue(True, "add_summary", (summary, global_step), kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._real()._get_file_writer(), name)


def open_writer(tb_dir: Path, step: int, step_offset: int = 0) -> BatchingWriter:
    """A ``SummaryWriter`` for ``tb_dir`` (written in batches, see :class:`BatchingWriter`) whose steps
    start after ``step_offset`` (a restart's earlier attempts); resuming at ``step`` drops events a killed
    run wrote past its checkpoint."""

    def make() -> Any:
        from torch.utils.tensorboard import SummaryWriter

        class RunWriter(SummaryWriter):
            def _get_file_writer(self) -> Any:
                inner = super()._get_file_writer()
                return _ShiftedSteps(inner, step_offset) if step_offset else inner

        use_fast_checksums()
        purge = step_offset + step + 1 if step else None
        return RunWriter(str(tb_dir), purge_step=purge)

    return BatchingWriter(make)


def log_run_media(
    writer: Any,
    run_dir: Path,
    cfg: DictConfig,
    report: dict[str, Any],
    batch: Any,
    step: int,
) -> None:
    """Text (report, command, config) and images (summary, LR finder, confusion matrix, the training
    inputs of ``batch`` unless it is None) into ``writer``."""
    report_md = run_dir / "report.md"
    if report_md.is_file():
        writer.add_text("run/report", report_md.read_text(encoding="utf-8"), step)
    if report.get("command"):
        writer.add_text("run/command", f"`{report['command']}`", step)
    config = OmegaConf.to_yaml(cfg, resolve=True)
    # markdown code block
    writer.add_text("run/config", "    " + config.replace("\n", "\n    "), step)
    for name in ("summary", "lr_find", "confusion_matrix"):
        png = run_dir / f"{name}.png"
        if png.is_file():
            # under x_run/, after train/ and val/: the Time Series page (TensorBoard's first) lists every
            # kind of tag by group name, and run/ had put the confusion matrix above the loss
            add_png(writer, f"{RUN_PREFIX}{name}", png.read_bytes(), step)
    if batch is not None:
        # drawn to PNG here, not through add_figure: that goes through pyplot to close a figure pyplot
        # never managed, and encodes the pixels as a PNG all the same
        grid = io.BytesIO()
        input_grid(*batch).savefig(grid, format="png")
        add_png(writer, f"{RUN_PREFIX}inputs", grid.getvalue(), step)
    writer.flush()


# PNG colour type (IHDR byte 25) -> channels, TensorBoard's ``colorspace``
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def add_png(writer: Any, tag: str, data: bytes, step: int) -> None:
    """An image summary of PNG ``data`` as it is: ``SummaryWriter.add_image`` takes pixels and encodes
    them again, so a PNG on disk cost a decode and an encode. Size and channels from the IHDR chunk."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{tag}: not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    image = Summary.Image(
        height=height,
        width=width,
        colorspace=_PNG_CHANNELS.get(data[25], 4),
        encoded_image_string=data,
    )
    writer._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )


def input_grid(images: torch.Tensor, labels: torch.Tensor) -> Any:
    """The first training images as the model sees them (scaled for display), each with its label.

    One axes holding every image at its own place: sixteen subplots laid out with ``tight_layout`` cost
    more than the rest of the run's end together on a small model.
    """
    from matplotlib.figure import Figure

    n = min(SAMPLES, len(images))
    cols = 8
    rows = (n + cols - 1) // cols
    height = rows * 1.1 + 0.4  # inches: a 1.1-inch cell per image (label above it), the title
    fig = Figure(figsize=(cols * 1.1, height))
    ax = fig.add_axes((0.005, 0.005, 0.99, 1 - 0.4 / height))
    for i in range(n):
        r, c = divmod(i, cols)
        img = images[i].detach().float().cpu()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
        ax.imshow(
            img[0] if img.shape[0] == 1 else img.permute(1, 2, 0),
            cmap="gray" if img.shape[0] == 1 else None,
            extent=(c + 0.05, c + 0.95, r + 1.0, r + 0.22),  # left, right, bottom, top (y down)
            interpolation="nearest",
        )
        ax.text(c + 0.5, r + 0.18, f"label {int(labels[i])}", ha="center", va="bottom", fontsize=8)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    fig.suptitle("training inputs (after normalisation and augmentation)", fontsize=9)
    return fig
