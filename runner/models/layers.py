"""Activation and initialisation choices shared by the runner's models.

The diagnostics inject faults through these knobs (sigmoid depth, bias init,
init scale), so they are explicit modules rather than functional calls: the
activation monitor finds them by type.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
INITS = ("default", "he", "xavier", "normal")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``leaky_relu``, ``gelu``, ``tanh``, ``sigmoid``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"model.activation={name!r}: choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def init_weights(
    module: nn.Module,
    init: str = "default",
    std: float = 0.01,
    bias: float | None = None,
    activation: str = "relu",
    scale: float = 1.0,
) -> None:
    """Initialise every Linear/Conv weight in ``module``; ``bias`` (when set) fills every bias.

    ``default`` keeps PyTorch's own initialisation; ``normal`` draws N(0, std)
    whatever the fan-in; ``scale`` multiplies the result. The bad-initialisation
    faults are made with these two.
    """
    if init not in INITS:
        raise ValueError(f"model.init={init!r}: choose one of {', '.join(INITS)}")
    nonlinearity: Literal["leaky_relu", "relu"] = (
        "leaky_relu" if activation == "leaky_relu" else "relu"
    )
    gain_name: Literal["tanh", "sigmoid", "linear"] = (
        "tanh" if activation == "tanh" else "sigmoid" if activation == "sigmoid" else "linear"
    )
    for m in module.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if init == "he":
            nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
        elif init == "xavier":
            nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain(gain_name))
        elif init == "normal":
            nn.init.normal_(m.weight, 0.0, std)
        if scale != 1.0:
            with torch.no_grad():
                m.weight.mul_(scale)
        if m.bias is not None and bias is not None:
            nn.init.constant_(m.bias, bias)
        elif m.bias is not None and init in ("he", "xavier"):
            nn.init.zeros_(m.bias)


def flat_features(in_channels: int, image_size: int) -> int:
    """Number of inputs an MLP sees for a square image."""
    return int(in_channels * image_size * image_size)
