"""A configurable multilayer perceptron: the default model and the fault-injection workhorse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from runner.models.layers import flat_features, init_weights, make_activation


class MLP(nn.Module):
    """Flatten → ``features``: [Linear → (BatchNorm) → activation → (Dropout)] × len(hidden) → ``classifier``.

    The module paths (``features.0``, ``features.2``, ..., ``classifier``) are the layer names every
    tag, figure and report uses, so the hidden layers and the output layer are told apart by name.
    """

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
        layers: list[nn.Module] = []
        width = flat_features(in_channels, image_size)
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if batchnorm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        init_weights(self, init, init_std, bias_init, activation, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))
