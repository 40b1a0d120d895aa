"""Per-layer gradient evidence from a saved optimizer state, for logs that hold none of their own.

Plain Lightning logs have the loss, the validation metrics and the LR, but no per-layer gradient or
activation statistics, so a deep sigmoid net, dead ReLU units and mislabelled data all look alike there:
a loss that sits at ``ln(k)``. Lightning's default ``ModelCheckpoint`` saves the optimizer's state
beside the weights, and that state is a running record of each parameter's gradients: Adam's
``exp_avg_sq`` (a running mean of g², over ~1/(1-beta2) steps), SGD's ``momentum_buffer`` (a running sum
of g), RMSprop's ``square_avg``, Adagrad's ``sum``. From it, per weight tensor:

- the gradient norm the layer has been getting (the scale differs per optimizer, the ratio between
  layers does not): a first layer far below the last is a gradient that fades through the depth;
- the share of output units (rows of a hidden layer's weight) whose state is exactly zero: every
  gradient those units got was exactly zero, which a ReLU that never fires gives and noise never does.

The file is loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, no code.
torch is imported only then: ``python -m diag analyze`` of logs without such a checkpoint (a runner run,
a JSONL file, plain TensorBoard logs) never waits the seconds its import takes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diag.series import RunSeries

if TYPE_CHECKING:
    import torch

# The optimizer-state entry that records gradients, and whether it holds squares (take the root).
GRADIENT_STATE = (
    ("exp_avg_sq", True),  # Adam, AdamW, NAdam, RAdam
    ("square_avg", True),  # RMSprop, Adadelta
    ("sum", True),  # Adagrad
    ("momentum_buffer", False),  # SGD with momentum
)
MAX_CHECKPOINT_BYTES = 2 << 30  # a bigger file is not read just to explain a loss curve


def newest_checkpoint(event_dir: Path) -> Path | None:
    """The most recently written ``*.ckpt`` in Lightning's ``<version>/checkpoints/`` beside the logs."""
    folder = event_dir / "checkpoints"
    try:
        found = [p for p in folder.iterdir() if p.suffix == ".ckpt" and p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def _gradient_tensor(state: dict[str, Any]) -> torch.Tensor | None:
    import torch

    for key, squared in GRADIENT_STATE:
        value = state.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().float()
            return value.clamp_min(0).sqrt() if squared else value.abs()
    return None


def _parameter_names(
    state_dict: dict[str, Any], opt_state: dict[int, Any], order: list[int]
) -> list[str] | None:
    """State-dict names of the optimizer's parameters, in its order; None when they cannot be matched.

    The optimizer numbers its parameters in the module's order and the state dict lists them in the
    same order with buffers in between; each optimizer entry's shape must match the name given to it.
    """
    import torch

    candidates = [
        k
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and not k.endswith(("running_mean", "running_var"))
    ]
    if len(candidates) != len(order):
        return None
    for name, index in zip(candidates, order, strict=True):
        grad = _gradient_tensor(opt_state.get(index, {}))
        if grad is not None and grad.shape != state_dict[name].shape:
            return None
    return candidates


def read_optimizer_state(path: Path, series: RunSeries, notes: list[str]) -> bool:
    """Fill ``series``' per-layer gradient norms and dead fractions from a Lightning checkpoint.

    Returns whether anything was read; every reason for reading nothing goes to ``notes``.
    """
    import torch

    try:
        if path.stat().st_size > MAX_CHECKPOINT_BYTES:
            notes.append(f"{path.name}: larger than 2 GiB, optimizer state not read")
            return False
        with (
            warnings.catch_warnings()
        ):  # torch's remarks on a foreign pickle: the note below says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file is a note, never the analyzer's crash
        notes.append(f"{path.name}: not readable as a checkpoint ({type(exc).__name__}), skipped")
        return False
    if not isinstance(ckpt, dict):
        notes.append(f"{path.name}: not a Lightning checkpoint, skipped")
        return False
    state_dict, optimizers = ckpt.get("state_dict"), ckpt.get("optimizer_states")
    if not (isinstance(state_dict, dict) and isinstance(optimizers, list) and optimizers):
        notes.append(f"{path.name}: no weights or optimizer state in it, skipped")
        return False
    opt = optimizers[0]
    groups, opt_state = opt.get("param_groups"), opt.get("state")
    if not (isinstance(groups, list) and isinstance(opt_state, dict)):
        notes.append(f"{path.name}: optimizer state of an unknown layout, skipped")
        return False
    order = [i for g in groups if isinstance(g, dict) for i in g.get("params", [])]
    names = _parameter_names(state_dict, opt_state, order)
    if names is None:
        notes.append(
            f"{path.name}: its optimizer does not hold every weight of the model in order; "
            "per-layer gradients not read"
        )
        return False
    layers: list[tuple[str, torch.Tensor]] = []
    for name, index in zip(names, order, strict=True):
        grad = _gradient_tensor(opt_state.get(index, {}))
        if grad is not None and grad.dim() >= 2 and name.endswith("weight"):
            layers.append((name.removesuffix(".weight"), grad))
    if len(layers) < 2:
        notes.append(
            f"{path.name}: its optimizer keeps no per-parameter gradient record "
            "(plain SGD has none); per-layer gradients not read"
        )
        return False
    step = ckpt.get("global_step")
    series.layer_step = [int(step) if isinstance(step, int) else 0]
    series.layer_grad_norm = {name: [float(g.norm())] for name, g in layers}
    series.layer_dead_fraction = {
        name: [float((g.flatten(1).amax(dim=1) == 0).float().mean())] for name, g in layers[:-1]
    }
    series.per_layer_source = "optimizer_state"
    notes.append(
        f"per-layer gradients: from the optimizer state in {path.name} "
        f"(step {series.layer_step[0]}, {len(layers)} layers)"
    )
    return True
