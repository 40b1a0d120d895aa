"""A configurable multilayer perceptron: the default model and the fault-injection workhorse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from runner.models.layers import flat_features, init_weights, make_activation


class MLP(nn.Module):
    """Flatten → [Linear → (BatchNorm) → activation → (Dropout)] × len(hidden) → Linear."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        init: str = "default",
        init_std: float = 0.01,
        init_scale: float = 1.0,
        bias_init: float | None = None,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat_features(in_channels, image_size)
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if batchnorm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        init_weights(self, init, init_std, bias_init, activation, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
