"""The time series a diagnosis reads, whoever recorded them (a live run, JSONL files, TensorBoard logs).

Every field is optional: the rules use what is there. Steps are optimizer steps;
``epoch_*`` lists are one value per epoch and ``epoch_step`` gives the step at
which each epoch ended. Per-layer dicts map a layer name to values sampled at
``layer_step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


@dataclass
class RunSeries:
    num_classes: int | None = None
    # sampled every few steps
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    update_ratio: list[float] = field(default_factory=list)  # global ‖Δw‖/‖w‖ per sampled step
    skipped_steps: list[int] = field(
        default_factory=list
    )  # steps whose update was skipped (non-finite grads)
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
            if f.name.startswith("layer_") and f.name != "layer_step":
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
            elif f.name in ("first_nonfinite_step", "first_nonfinite_layer", "initial_loss"):
                setattr(out, f.name, next((v for v in values if v is not None), None))
            elif f.name == "init_scale_ratio":  # measured at initialisation: the first segment's
                setattr(out, f.name, values[0])
        return out
