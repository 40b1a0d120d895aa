"""A configurable multilayer perceptron: the default model and the fault-injection workhorse."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from runner.models.layers import flat_features, init_weights, make_activation


class MLP(nn.Module):
    """Flatten → ``features``: [Linear → (BatchNorm) → activation → (Dropout)] × len(hidden) → ``classifier``.

    Each part of hidden block ``k`` is named for what it is (``features.fc1``, ``features.bn1``,
    ``features.act1``, ``features.drop1``, ..., ``classifier``), and those paths are the layer names every
    tag, figure and report uses: the same layer keeps its name when a restart adds batch norm or dropout,
    where ``Sequential`` positions (``features.3``) would name another layer. Checkpoints written with the
    positional names still load.
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
        layers: dict[str, nn.Module] = {}
        width = flat_features(in_channels, image_size)
        for k, h in enumerate(hidden, start=1):
            layers[f"fc{k}"] = nn.Linear(width, int(h))
            if batchnorm:
                layers[f"bn{k}"] = nn.BatchNorm1d(int(h))
            layers[f"act{k}"] = make_activation(activation)
            if dropout > 0:
                layers[f"drop{k}"] = nn.Dropout(dropout)
            width = int(h)
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Linear(width, num_classes)
        init_weights(self, init, init_std, bias_init, activation, init_scale)
        self._positional = {f"features.{i}.": f"features.{name}." for i, name in enumerate(layers)}
        self.register_load_state_dict_pre_hook(self._rename_positional)

    def _rename_positional(
        self, module: nn.Module, state_dict: dict, prefix: str, *_: object
    ) -> None:
        """A state dict saved before the blocks had names (``features.3.weight``): renamed in place."""
        for key in [k for k in state_dict if k.startswith(prefix + "features.")]:
            rest = key[len(prefix) :]
            head = ".".join(rest.split(".")[:2]) + "."
            if head in self._positional:
                state_dict[prefix + self._positional[head] + rest[len(head) :]] = state_dict.pop(
                    key
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))
