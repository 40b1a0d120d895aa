"""One name per layer: its module path, used alike by tags, figures and reports.

A weight layer (Linear/Conv) is named by its path in the model (``features.fc1``, ``classifier``,
``layer1.0.conv1``). An activation module is measured separately (dead or saturated units) but belongs
to the weight layer whose outputs it transforms, so it carries that layer's name: the ReLU at
``features.act1`` after the Linear at ``features.fc1`` is reported as ``features.fc1``. A reader then finds
one layer under one name in ``x_layers/grad_norm/…`` and ``x_layers/dead_fraction/…``, in the figure's
panels and in a finding's evidence.
"""

from __future__ import annotations

from torch import nn

WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layer_names(model: nn.Module) -> list[str]:
    """Paths of the trainable Linear/Conv layers, in module order (input side first)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, WEIGHT_TYPES) and m.weight.requires_grad
    ]


def activation_names(model: nn.Module, activations: list[str]) -> dict[str, str]:
    """Each activation path → the name it is reported under: the weight layer registered last before it.

    An activation with no weight layer before it, or a second activation after the same weight layer,
    keeps its own path (two modules are never merged under one name).
    """
    wanted = set(activations)
    out: dict[str, str] = {}
    taken: set[str] = set()
    last: str | None = None
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_TYPES) and m.weight.requires_grad:
            last = name
        elif name in wanted:
            label = last if last is not None and last not in taken else name
            taken.add(label)
            out[name] = label
    return out
