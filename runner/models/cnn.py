"""A small convolutional network that works on any square image size (8x8 digits to 32x32 CIFAR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from runner.models.layers import init_weights, make_activation


class CNN(nn.Module):
    """[Conv3x3 → (BN) → act] blocks with a 2x2 max-pool after each block, global average pool, linear ``classifier``."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
        init: str = "default",
        init_std: float = 0.01,
        init_scale: float = 1.0,
        bias_init: float | None = None,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c in channels:
            layers += [nn.Conv2d(c_in, int(c), 3, padding=1, bias=not batchnorm)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(int(c)))
            layers.append(make_activation(activation))
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = int(c)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c_in, num_classes)
        init_weights(self, init, init_std, bias_init, activation, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))
