"""TensorBoard scalars for the basics: loss, LR, gradient norm, throughput, skipped steps.

Values accumulate on the device and are read once per logging interval, so the
hook adds no host sync to ordinary steps.

Tag layout: TensorBoard sorts tag groups (the part before the first ``/``) by name and
opens the first ones, so the curves people read first are ``train/*`` and ``val/*`` and
everything else lives in groups named after them: ``x_layers/<stat>/<layer>`` (per-layer
statistics), ``x_run/*`` (the run's outcome, the HParams metrics) and ``x_autotrainer/*``.
"""

from __future__ import annotations

import math
import re
import sys
import time

import torch

from diag.hooks import FitState, Hook


def use_fast_checksums() -> bool:
    """Have TensorBoard's record writer checksum events with google-crc32c's C build; whether it does.

    Every event record carries a masked CRC-32C, which tensorboard computes in pure Python: 136 us a
    kilobyte here, on the writer's thread, holding the GIL the training loop waits for (a run's epoch
    writes ~2 KB, its end's images ~160 KB). The C build gives the same value ~300x faster. The
    writer module's ``masked_crc32c`` is replaced, for the process, by :func:`masked_crc32c` (same
    values: ``tests/unit/runner/test_tensorboard_run.py``); without the C build tensorboard's own stays.
    """
    writer_module = sys.modules.get("tensorboard.summary.writer.record_writer")
    if writer_module is not None and writer_module.masked_crc32c is masked_crc32c:
        return True  # in place already: the scalars hook asks at each of its writes
    try:
        import google_crc32c
    except ImportError:  # a dependency, but a broken install keeps tensorboard's own checksum
        return False
    if google_crc32c.implementation != "c":
        return False
    from tensorboard.summary.writer import record_writer

    record_writer.masked_crc32c = masked_crc32c
    return True


def masked_crc32c(data: bytes) -> int:
    """TensorBoard's masked CRC-32C of ``data`` (its ``record_writer.masked_crc32c``), in C."""
    from google_crc32c import value

    x = value(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_scalars(
    writer, scalars: dict[str, float], step: int, walltime: float | None = None
) -> None:
    """Write several scalars of one step as ONE TensorBoard event (a Summary with a value per tag).

    ``add_scalar`` builds, serialises and queues an event per tag; one event
    holding all the values costs about as much as a single one, and every reader (TensorBoard,
    its EventAccumulator, tbparse) sees the same tags and values. Writers other than torch's
    ``SummaryWriter`` get plain ``add_scalar`` calls.
    """
    get_file_writer = getattr(writer, "_get_file_writer", None)
    if get_file_writer is None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step, walltime=walltime)
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(
        value=[Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
    )
    get_file_writer().add_summary(summary, step, walltime)


# Groups after train/ and val/ (see the module docstring).
LAYERS_PREFIX = "x_layers/"
AUTOTRAINER_PREFIX = "x_autotrainer/"
RUN_PREFIX = "x_run/"


UNIT_CHARTS = {"dead_fraction": "dead units", "saturation": "saturated units"}
# Lines per per-layer chart. Custom Scalars colours a chart's lines by run and tells its tags apart
# only by the marker shape (and the chart's "Matches" list): a few lines read, 24 do not.
CHART_LINES = 4


def layer_charts(layers: list[str]) -> dict[str, list[str]]:
    """The layers in charts of at most ``CHART_LINES``, grouped by top-level module in model order.

    A chart's title names its layers without repeating their module: ``features: fc1, fc2``, ``classifier``,
    ``layer2 (1/2): 0.conv1, 0.conv2, 0.downsample.0, 1.conv1``.
    """
    blocks: dict[str, list[str]] = {}
    for name in layers:
        blocks.setdefault(name.split(".", 1)[0], []).append(name)
    charts: dict[str, list[str]] = {}
    for block, names in blocks.items():
        chunks = [names[i : i + CHART_LINES] for i in range(0, len(names), CHART_LINES)]
        for n, chunk in enumerate(chunks, start=1):
            if chunk == [block]:
                charts[block] = chunk
                continue
            part = f" ({n}/{len(chunks)})" if len(chunks) > 1 else ""
            short = ", ".join(name[len(block) + 1 :] or name for name in chunk)
            charts[f"{block}{part}: {short}"] = chunk
    return charts


def custom_scalars_layout(layers: list[str], measures: dict[str, list[str]]) -> dict:
    """The Custom Scalars tab: the run's curves together, then per statistic a few layers per chart.

    Each chart is one regex over its layers' tags (``layer_charts``), so a 24-layer model gets six
    charts of four lines per statistic instead of one chart of 24 lines of one colour. A unit statistic
    gets charts only for the layers it applies to (``measures``, e.g. no saturation charts for a ReLU
    model).
    """

    def charts(stat: str, names: list[str]) -> dict[str, list]:
        out = {}
        for title, chunk in layer_charts(names).items():
            alternatives = "|".join(re.escape(name) for name in chunk)
            out[title] = [
                "Multiline",
                [f"^{re.escape(LAYERS_PREFIX + stat + '/')}({alternatives})$"],
            ]
        return out

    layout: dict[str, dict[str, list]] = {
        "Training": {
            "loss": ["Multiline", ["^train/loss$", "^val/loss$"]],
            "accuracy": ["Multiline", ["^train/acc$", "^val/acc$"]],
            "learning rate": ["Multiline", ["^train/lr$"]],
            "gradient norm": ["Multiline", ["^train/grad_norm$"]],
        },
        "Gradient norm by layer": charts("grad_norm", layers),
        "Update ratio by layer": charts("update_ratio", layers),
    }
    for stat, title in UNIT_CHARTS.items():
        if measures.get(stat):
            layout[f"Share of {title} by layer"] = charts(stat, measures[stat])
    return layout


def action_text(action: dict) -> str:
    """One AutoTrainer action as a line of TensorBoard text: what it saw, what it did, the LR change."""
    before, after = action.get("lr_before"), action.get("lr_after")
    lr = (
        f"; lr {before:.3g} → {after:.3g}"
        if isinstance(before, (int, float)) and isinstance(after, (int, float))
        else ""
    )
    return (
        f"**step {action.get('step')}**: {action.get('code')} → **{action.get('action')}** "
        f"({action.get('detail', '')}){lr}"
    )


def _action_key(action: dict) -> tuple:
    return (action.get("attempt"), action.get("step"), action.get("code"), action.get("action"))


class TensorBoardScalars(Hook):
    """Writes ``train/*`` every ``every_n_steps`` steps and ``val/*`` and epoch metrics each epoch.

    The writer is flushed (its events written and waited for) at an epoch's end at most every
    ``flush_secs`` seconds (5, TensorBoard's own reload interval; ``0`` flushes every epoch) and at the
    fit's end; the runner's checkpoints flush it before they are written (see :meth:`state_dict`). On short epochs (the digits MLP's
    take 20 ms) waiting for the writer every epoch costs the loop more than everything else it logs.
    A process killed outright loses the events since the last flush; a run resumed from its checkpoint
    has them all up to it, since the checkpoint flushed them first.
    """

    def __init__(
        self, every_n_steps: int = 10, write_every: int = 10, flush_secs: float = 5.0
    ) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        # logging intervals read and handed to the writer at once
        self.write_every = max(1, int(write_every))
        if not float(flush_secs) >= 0:
            raise ValueError(
                f"TensorBoardScalars(flush_secs={flush_secs!r}): use seconds >= 0 (0 flushes every epoch)"
            )
        self.flush_secs = float(flush_secs)
        self._flushed_at = time.monotonic()
        self._writer = None
        self._values: list[
            torch.Tensor
        ] = []  # (loss, grad_norm) of every step since the last write
        # per closed interval: its steps, samples, seconds, last step, LR, skipped steps, wall time
        self._intervals: list[tuple[int, int, float, int, float, int, float]] = []
        self._open()

    def _open(self) -> None:
        self._count = 0
        self._samples = 0
        self._t0 = time.perf_counter()

    def on_fit_start(self, state: FitState) -> None:
        self._values, self._intervals = [], []
        self._open()
        self._flushed_at = time.monotonic()
        # the actions already in state.actions at the first step (a resume's, an earlier attempt's) are in
        # their event files: taken at the first batch, once the AutoTrainer (a later hook) has put them there
        self._actions_seen: set[tuple] | None = None

    def _write_actions(self, state: FitState) -> None:
        """Each new AutoTrainer action: a text line and an ``x_autotrainer/lr_factor`` marker at its step.

        The marker's value is the LR factor the action applied (1.0 when it left the LR alone), so the
        chart reads as "what happened to the LR here" rather than a running count.
        """
        writer = state.writer
        if writer is None or not state.actions:
            return
        if self._actions_seen is None:
            self._actions_seen = {_action_key(a) for a in state.actions}
        for a in state.actions:
            key = _action_key(a)
            if key in self._actions_seen:
                continue
            self._actions_seen.add(key)
            if a.get("action") == "give_up":
                factor = 0.0
            else:
                before, after = a.get("lr_before"), a.get("lr_after")
                factor = after / before if before and after is not None else 1.0
            step = int(a.get("step") or state.step)
            writer.add_text(AUTOTRAINER_PREFIX + "actions", action_text(a), step)
            writer.add_scalar(AUTOTRAINER_PREFIX + "lr_factor", float(factor), step)

    def on_train_batch_end(self, state: FitState) -> None:
        if state.writer is None:
            return
        loss, grad_norm = state.loss, state.grad_norm
        assert loss is not None and grad_norm is not None  # a train step sets both before this hook
        self._values += (loss, grad_norm)  # no device op per step: read at the write
        self._count += 1
        self._samples += state.batch_size
        if state.step % self.every_n_steps == 0:
            self._flush(state)
        if self._actions_seen is None:  # the first batch: what is there now was written before
            self._actions_seen = {_action_key(a) for a in state.actions}
        elif len(state.actions) > len(self._actions_seen):  # host ints only
            self._write_actions(state)

    def _flush(self, state: FitState) -> None:
        """Close the current logging interval (host numbers only); write when ``write_every`` are closed."""
        if not self._count:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self._intervals.append(
            (
                self._count,
                self._samples,
                elapsed,
                state.step,
                state.current_lr,
                state.skipped_steps,
                time.time(),
            )
        )
        self._writer = state.writer
        if len(self._intervals) >= self.write_every:
            self._write_events(state.writer)
        self._open()

    def _write_events(self, writer, flush: bool = True) -> None:
        """Read the buffered steps in one device op, hand the closed intervals over, wait for the writer.

        One ``stack().tolist()`` per ``write_every`` intervals is the only host read. The writer's
        thread writes each event in Python (its checksum in C once :func:`use_fast_checksums` is in
        place: here, at the first write, not at fit start, where it would import TensorBoard's writer
        before the first step; an open/append/close per record); left to run beside the loop it
        fights it for the GIL at every torch op. ``flush()`` lets it run alone once per
        ``write_every`` intervals instead, which costs the loop less (compare on
        ``bench/overhead.py``'s MLP loops).
        """
        if not self._intervals:
            return
        use_fast_checksums()  # an attribute set once it is in place
        closed = 2 * sum(interval[0] for interval in self._intervals)
        values = torch.stack(self._values[:closed]).tolist()
        del self._values[:closed]
        at = 0
        for count, samples, elapsed, step, lr, skipped, walltime in self._intervals:
            chunk = values[at : at + 2 * count]
            at += 2 * count
            # the norm over the interval's finite steps: one Inf step would make the point Inf, which
            # TensorBoard's charts leave out; train/skipped_steps counts the steps with NaN/Inf gradients
            finite = [g for g in chunk[1::2] if math.isfinite(g)]
            scalars = {
                "train/loss": sum(chunk[0::2]) / count,  # NaN/Inf propagate as in a device sum
                "train/lr": lr,
                "train/samples_per_sec": samples / elapsed,
                "train/skipped_steps": skipped,
            }
            if finite:
                scalars["train/grad_norm"] = sum(finite) / len(finite)
            write_scalars(writer, scalars, step, walltime)
        self._intervals = []
        if flush:  # public API: returns once the writer thread has written the queue (see above)
            writer.flush()

    def state_dict(self) -> dict:
        """Nothing to keep; but the steps whatever is checkpointed (an interrupt too) covers are handed to
        the writer, so that a ``flush()`` of it before the checkpoint reaches the disk (the runner's
        CheckpointHook) puts every point up to the checkpoint in the event file."""
        if self._intervals and self._writer is not None:
            self._write_events(self._writer, flush=False)
        return {}

    def on_epoch_end(self, state: FitState) -> None:
        if state.writer is None:
            return
        self._flush(state)
        self._write_events(state.writer, flush=False)
        self._write_actions(state)
        # the epoch's numbers as one event; one wait for the writer thread per flush_secs (see the class)
        epoch: dict[str, float] = {
            k: state.metrics[k] for k in ("val/loss", "val/acc", "train/acc") if k in state.metrics
        }
        write_scalars(state.writer, {**epoch, "train/epoch": state.epoch}, state.step)
        now = time.monotonic()
        if now - self._flushed_at >= self.flush_secs:
            state.writer.flush()
            self._flushed_at = now

    def on_fit_end(self, state: FitState) -> None:
        if state.writer is None:
            return
        self._write_events(state.writer)
        self._write_actions(state)
        # test metrics are the run's outcome: x_run/test_* beside the other HParams metrics
        for key in ("test/loss", "test/acc"):
            if key in state.metrics:
                tag = RUN_PREFIX + key.replace("/", "_")
                state.writer.add_scalar(tag, state.metrics[key], state.step)
        state.writer.flush()
