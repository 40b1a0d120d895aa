"""scikit-learn's bundled 8x8 handwritten digits: real data, no download, the offline default."""

from __future__ import annotations

from pathlib import Path

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
        raw_images, raw_labels = _digits_arrays()
        images = torch.as_tensor(raw_images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(raw_labels, dtype=torch.int64)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        n_test = int(round(len(labels) * self.test_fraction))
        test, train = perm[:n_test], perm[n_test:]
        return Split(images[train], labels[train]), Split(images[test], labels[test])


def _digits_arrays():
    """(images (1797, 8, 8) with values 0-16, labels) as ``sklearn.datasets.load_digits`` returns them.

    Read straight from the ``digits.csv.gz`` that scikit-learn ships, the way ``load_digits``
    reads it (gzip + ``np.loadtxt``): importing ``sklearn.datasets`` pulls in scipy and pandas,
    about 1.5 s of every run's start-up. Falls back to ``load_digits`` if the file moved.
    """
    import gzip
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
