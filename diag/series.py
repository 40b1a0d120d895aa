"""The time series a diagnosis reads, whoever recorded them (a live run, JSONL files, TensorBoard logs).

Every field is optional: the rules use what is there. Steps are optimizer steps;
``epoch_*`` lists are one value per epoch and ``epoch_step`` gives the step at
which each epoch ended. Per-layer dicts map a layer name to values sampled at
``layer_step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

# RunSeries' per-layer fields: {layer name: values}, one value per entry of ``layer_step``
LAYER_FIELDS = (
    "layer_grad_norm",
    "layer_update_ratio",
    "layer_dead_fraction",
    "layer_saturation",
    "layer_activation_std",
)


@dataclass
class RunSeries:
    num_classes: int | None = None
    # sampled every few steps
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    update_ratio: list[float] = field(default_factory=list)  # global ‖Δw‖/‖w‖ per sampled step
    # steps whose update was skipped (non-finite grads)
    skipped_steps: list[int] = field(default_factory=list)
    # one value per epoch
    epoch_step: list[int] = field(default_factory=list)
    epoch_offset: int = (
        0  # epochs completed before this series began (a live series restarted mid-run)
    )
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_train_acc: list[float] = field(default_factory=list)
    epoch_val_loss: list[float] = field(default_factory=list)
    epoch_val_acc: list[float] = field(default_factory=list)
    epoch_lr: list[float] = field(default_factory=list)
    epoch_weight_update: list[float] = field(default_factory=list)
    # per layer, sampled at layer_step
    layer_step: list[int] = field(default_factory=list)
    layer_grad_norm: dict[str, list[float]] = field(default_factory=dict)
    layer_update_ratio: dict[str, list[float]] = field(default_factory=dict)
    layer_dead_fraction: dict[str, list[float]] = field(default_factory=dict)
    layer_saturation: dict[str, list[float]] = field(default_factory=dict)
    # read from logs that carry it (``activation_std/`` tags); the live hook does not measure it: no rule reads it
    layer_activation_std: dict[str, list[float]] = field(default_factory=dict)
    # first step where non-finite gradients were seen, and in which layer
    first_nonfinite_step: int | None = None
    first_nonfinite_layer: str | None = None
    # weight scale versus He/Xavier at initialisation: layer -> actual_std / expected_std
    init_scale_ratio: dict[str, float] = field(default_factory=dict)
    # the first step's loss, computed on the initial weights (a classifier starts near ln(classes))
    initial_loss: float | None = None
    # how many steps the run is planned to take (for "found within the first third")
    planned_steps: int | None = None
    # global weight norm ‖w‖ of the Linear/Conv weights, sampled with ``update_ratio`` (at ``layer_step``)
    weight_norm: list[float] = field(default_factory=list)
    initial_weight_norm: float | None = None  # the same norm on the initial weights (at fit start)
    # each weight layer's width (a Linear's outputs, a convolution's channels), read at fit start: a layer
    # narrower than the classes need is a cause the rules can name
    layer_width: dict[str, int] = field(default_factory=dict)
    # the run's state, read once at fit start (no per-step cost): what a loop can always supply.
    # momentum is SGD's momentum or Adam's beta1 (the largest over param groups); weight_decay the largest;
    # decoupled_weight_decay says whether it shrinks the weights directly (AdamW) or as an L2 gradient term.
    momentum: float | None = None
    weight_decay: float | None = None
    decoupled_weight_decay: bool | None = None
    dropout: float | None = None  # the largest dropout probability in the model
    batch_size: int | None = (
        None  # examples per optimizer step (sets the loss's step-to-step noise)
    )
    # optimizer steps per epoch (the loader's length), read at fit start: 1 means a batch holds the whole split
    steps_per_epoch: int | None = None
    # the first training batch's input mean and std (a normalised input sits near 0 and 1)
    input_mean: float | None = None
    input_std: float | None = None
    # how ``loss``/``grad_norm`` were sampled: "mean" (each value is the mean over the steps since the
    # previous one, as the live hook reads them) or "step" (one value per optimizer step, as a hand-written
    # loop records them). The rules are calibrated on interval means; a per-step series is first reduced
    # to them (see :func:`interval_means`), and its step-to-step swings are judged separately.
    sampling: str = "mean"
    # how the per-layer values were taken: "batches" (each one batch's statistics, so a finding needs two
    # samples to agree) or "optimizer_state" (each a running record over many steps, read from a saved
    # optimizer state by diag.optimizer_state, so one sample is evidence enough)
    per_layer_source: str = "batches"

    @property
    def min_layer_samples(self) -> int:
        """How many per-layer samples a per-layer rule needs before it speaks."""
        return 1 if self.per_layer_source == "optimizer_state" else 2

    def to_dict(self) -> dict:
        """Plain lists, dicts and numbers (``torch.load(weights_only=True)`` reads them back); a copy.

        ``dataclasses.asdict`` deep-copies float by float, a cost per checkpoint that grows with the
        run. Copying each list whole costs a small fraction of that.
        """

        def copy(v):
            if isinstance(v, list):
                return list(v)
            if isinstance(v, dict):  # per-layer lists, or init_scale_ratio's numbers
                return {k: copy(x) for k, x in v.items()}
            return v

        return {f.name: copy(getattr(self, f.name)) for f in fields(self)}

    def until(self, step: int) -> RunSeries:
        """The series as it stood at ``step``: every sample taken after it left out (a copy).

        What a diagnosis at that step saw, for judging how long a finding held over a finished run.
        """
        out = RunSeries(**self.to_dict())
        n = sum(1 for st in self.step if st <= step)
        out.step, out.loss, out.grad_norm = out.step[:n], out.loss[:n], out.grad_norm[:n]
        if len(self.lr) == len(self.step):
            out.lr = out.lr[:n]
        m = sum(1 for st in self.layer_step if st <= step)
        out.layer_step = out.layer_step[:m]
        for name in LAYER_FIELDS:
            setattr(out, name, {k: v[:m] for k, v in getattr(out, name).items()})
        for name in ("update_ratio", "weight_norm"):  # taken with each layer sample
            if len(getattr(self, name)) == len(self.layer_step):
                setattr(out, name, getattr(out, name)[:m])
        e = sum(1 for st in self.epoch_step if st <= step)
        for f in fields(self):
            if f.name.startswith("epoch_") and isinstance(getattr(out, f.name), list):
                setattr(out, f.name, getattr(out, f.name)[:e])
        out.skipped_steps = [st for st in out.skipped_steps if st <= step]
        if out.first_nonfinite_step is not None and out.first_nonfinite_step > step:
            out.first_nonfinite_step, out.first_nonfinite_layer = None, None
        return out

    @classmethod
    def concat(cls, parts: list[RunSeries]) -> RunSeries:
        """One series from consecutive segments of a run (a live series restarted after a repair), for plotting.

        Lists are joined; each per-layer list is padded with NaN to its segment's ``layer_step`` so that
        the joined lists stay aligned with the joined steps. Scalars come from the first segment that
        has them, ``num_classes`` and ``planned_steps`` from the last.
        """
        if len(parts) == 1:
            return parts[0]
        out = cls(
            num_classes=parts[-1].num_classes,
            planned_steps=parts[-1].planned_steps,
            epoch_offset=parts[0].epoch_offset,
        )
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if f.name.startswith("layer_") and f.name not in ("layer_step", "layer_width"):
                merged: dict[str, list[float]] = {}
                done = 0
                for p, d in zip(parts, values):
                    n = len(p.layer_step)
                    for key in [*merged, *(k for k in d if k not in merged)]:  # layer order kept
                        got = list(d.get(key, []))[:n]
                        merged.setdefault(key, [math.nan] * done).extend(
                            got + [math.nan] * (n - len(got))
                        )
                    done += n
                setattr(out, f.name, merged)
            elif isinstance(values[0], list):
                setattr(out, f.name, [v for segment in values for v in segment])
            elif f.name in (
                "first_nonfinite_step",
                "first_nonfinite_layer",
                "initial_loss",
                "initial_weight_norm",
                "momentum",
                "weight_decay",
                "decoupled_weight_decay",
                "dropout",
                "batch_size",
                "steps_per_epoch",
                "input_mean",
                "input_std",
            ):
                setattr(out, f.name, next((v for v in values if v is not None), None))
            elif f.name in ("init_scale_ratio", "layer_width"):  # read at fit start: the first's
                setattr(out, f.name, values[0])
        return out


def interval_every(n_steps: int) -> int:
    """How many per-step samples one interval mean covers: 10 (the live hook's default), fewer on short runs.

    A short run keeps about 20 intervals, so the window rules still have samples to compare.
    """
    return max(1, min(10, n_steps // 20))


def _interval_mean(values: list[float]) -> float:
    """The mean of one interval; a non-finite value anywhere makes it non-finite (NaN before Inf).

    The live hook sums the loss the same way; its gradient-norm mean skips non-finite steps only
    because it counts them separately as skipped steps, which a per-step record does not have.
    """
    if any(math.isnan(v) for v in values):
        return math.nan
    if any(math.isinf(v) for v in values):
        return math.inf
    return sum(values) / len(values)


def _interval_median(values: list[float]) -> float:
    """The (lower) median of one interval, non-finite as :func:`_interval_mean`: per-step records show
    a single bad batch as one step, which a median passes over and a sustained blow-up does not."""
    if any(not math.isfinite(v) for v in values):
        return _interval_mean(values)
    return sorted(values)[(len(values) - 1) // 2]


def interval_means(series: RunSeries, every: int | None = None) -> RunSeries:
    """A per-step series reduced to interval means, as the live hook samples (a "mean" series is returned as is).

    Each interval is labelled with its last step, or with the step where it first turned non-finite,
    so a blow-up keeps its exact step. The first step's loss becomes ``initial_loss`` (the loss on the
    initial weights). Epoch, per-layer and scalar fields are copied unchanged.
    """
    if series.sampling != "step":
        return series
    n = len(series.loss)
    every = every or interval_every(n)
    out = RunSeries(**series.to_dict())
    out.sampling = "mean"
    if out.initial_loss is None and n:
        out.initial_loss = float(series.loss[0])
    steps: list[int] = []
    loss: list[float] = []
    grad: list[float] = []
    lr: list[float] = []
    for a in range(0, n, every):
        b = min(n, a + every)
        chunk_loss = [float(v) for v in series.loss[a:b]]
        chunk_grad = [float(v) for v in series.grad_norm[a:b]]
        label = series.step[b - 1] if len(series.step) >= b else b - 1
        bad = [i for i, v in enumerate(chunk_loss) if not math.isfinite(v)] or [
            i for i, v in enumerate(chunk_grad) if not math.isfinite(v)
        ]
        if bad and len(series.step) > a + bad[0]:
            label = series.step[a + bad[0]]
        steps.append(int(label))
        loss.append(_interval_median(chunk_loss))
        if chunk_grad:
            grad.append(_interval_mean(chunk_grad))
        if len(series.lr) >= b:
            lr.append(float(series.lr[b - 1]))
    out.step, out.loss, out.grad_norm = steps, loss, grad
    out.lr = lr if len(lr) == len(steps) else []
    if out.first_nonfinite_step is None:
        out.first_nonfinite_step = next(
            (
                int(st)
                for st, g in zip(series.step, series.grad_norm)
                if not math.isfinite(float(g))
            ),
            None,
        )
    return out
