"""Fixed random images and labels: a data source of any shape that needs no files and no download.

Used by ``bench/overhead.py`` to time a CNN step on MNIST-sized (28x28) inputs:
``python -m runner data=synthetic model=cnn``. Images are uniform random uint8
pixels and labels uniform random classes, both drawn from ``data_seed``, so
there is nothing to learn: accuracy stays at chance by design. Only the cost of
a step is meaningful here, not the loss.
"""

from __future__ import annotations

import torch

from runner.data.datamodule import ImageDataModule, Split
from runner.errors import UserError


class SyntheticDataModule(ImageDataModule):
    """``num_train`` + ``num_test`` random ``(in_channels, image_size, image_size)`` uint8 images."""

    name = "synthetic"
    fixed_classes = False

    def __init__(self, num_train: int = 4096, num_test: int = 512, data_seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("num_classes", 10)
        kwargs.setdefault("in_channels", 1)
        kwargs.setdefault("image_size", 28)
        super().__init__(**kwargs)
        self.num_train = int(num_train)
        self.num_test = int(num_test)
        self.data_seed = int(data_seed)

    def _load(self) -> tuple[Split, Split]:
        if self.num_train < 2 or self.num_test < 1:
            raise UserError(f"data.num_train={self.num_train} and data.num_test={self.num_test}: "
                            "need at least 2 training and 1 test example")
        g = torch.Generator().manual_seed(self.data_seed)
        shape = (self.in_channels, self.image_size, self.image_size)

        def draw(n: int) -> Split:
            images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
            return Split(images, torch.randint(0, self.num_classes, (n,), generator=g))

        train = draw(self.num_train)
        return train, draw(self.num_test)
