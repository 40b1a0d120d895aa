"""The run's settings the rules read as causes: optimizer momentum and weight decay, dropout, input scale.

Read once when a fit starts (and the inputs on its first forward pass), never per step: they are what
any loop can supply, and what tells a cause (weight decay 10, inputs at -90) from the symptom it makes
(a loss that will not fall, units that never fire).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# optimizers whose weight_decay shrinks the weights directly (the others add it to the gradient as L2)
_DECOUPLED = ("AdamW", "Lion", "SGDW", "AdamWScheduleFree")


def optimizer_settings(optimizer: Any) -> dict[str, Any]:
    """The largest momentum (SGD's momentum or Adam's beta1) and weight decay over the param groups,
    and whether the decay is decoupled (AdamW shrinks the weights by lr x wd per step, whatever the gradient)."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return {}
    momentum = [float(g["momentum"]) for g in groups if "momentum" in g]
    momentum += [float(g["betas"][0]) for g in groups if "betas" in g]
    decay = [float(g.get("weight_decay", 0.0) or 0.0) for g in groups]
    return {
        "momentum": max(momentum) if momentum else None,
        "weight_decay": max(decay) if decay else None,
        "decoupled_weight_decay": type(optimizer).__name__ in _DECOUPLED,
    }


def max_dropout(model: nn.Module) -> float | None:
    """The largest dropout probability among the model's dropout layers (None: it has none)."""
    ps = [
        float(m.p)
        for m in model.modules()
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout))
    ]
    return max(ps) if ps else None


class InputProbe:
    """Mean and std of the first batch the model sees (a forward pre-hook that removes itself).

    The statistics stay on the device until :meth:`read` (one host read, once per run).
    """

    def __init__(self, model: nn.Module) -> None:
        self._stats: torch.Tensor | None = None
        self._handle: RemovableHandle | None = model.register_forward_pre_hook(self._first_forward)

    @torch.no_grad()
    def _first_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel() > 1:
            x = x.detach().float()
            self._stats = torch.stack([x.mean(), x.std()])
        self.remove()

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def read(self) -> tuple[float, float] | None:
        """(mean, std) of the first batch, once it has been seen; None before (or for non-float inputs)."""
        if self._stats is None:
            return None
        mean, std = self._stats.tolist()
        self._stats = None
        return float(mean), float(std)
