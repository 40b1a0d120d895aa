"""The time series a diagnosis reads, whoever recorded them (a live run, JSONL files, TensorBoard logs).

Every field is optional: the rules use what is there. Steps are optimizer steps;
``epoch_*`` lists are one value per epoch and ``epoch_step`` gives the step at
which each epoch ended. Per-layer dicts map a layer name to values sampled at
``layer_step``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunSeries:
    num_classes: int | None = None
    # sampled every few steps
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    update_ratio: list[float] = field(default_factory=list)  # global ‖Δw‖/‖w‖ per sampled step
    skipped_steps: list[int] = field(default_factory=list)  # steps whose update was skipped (non-finite grads)
    # one value per epoch
    epoch_step: list[int] = field(default_factory=list)
    epoch_offset: int = 0  # epochs completed before this series began (a live series restarted mid-run)
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
    # how many steps the run is planned to take (for "found within the first third")
    planned_steps: int | None = None
