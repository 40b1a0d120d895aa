"""scikit-learn's bundled 8x8 handwritten digits: real data, no download, the offline default."""

from __future__ import annotations

import torch

from runner.data.datamodule import ImageDataModule, Split


class DigitsDataModule(ImageDataModule):
    """1,797 grey 8x8 digits (values 0-16, rescaled to uint8); a fixed 20% is held out for test."""

    name = "digits"

    def __init__(self, test_fraction: float = 0.2, **kwargs) -> None:
        kwargs.setdefault("num_classes", 10)
        kwargs.setdefault("in_channels", 1)
        kwargs.setdefault("image_size", 8)
        super().__init__(**kwargs)
        self.test_fraction = float(test_fraction)

    def _load(self) -> tuple[Split, Split]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.as_tensor(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(bunch.target, dtype=torch.int64)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        n_test = int(round(len(labels) * self.test_fraction))
        test, train = perm[:n_test], perm[n_test:]
        return Split(images[train], labels[train]), Split(images[test], labels[test])
