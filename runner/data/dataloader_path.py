"""The classic data path (``data.loader=dataloader``): torch ``DataLoader`` over torchvision datasets.

Per-sample PIL transforms run in worker processes with pinned memory, for
datasets that do not fit on the device. The sampler draws the epoch order from
the same generator with the same :func:`~runner.data.loader.epoch_order` as the
fast path, so with augmentation off both paths yield the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from runner.data.loader import epoch_order


class TensorImageDataset(Dataset):
    """uint8 ``(N, C, H, W)`` images served as PIL images through a torchvision transform.

    Lets datasets without a torchvision class (the sklearn digits) use the classic path too.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.transforms.functional import to_pil_image

        img = to_pil_image(self.images[index])
        return (self.transform(img) if self.transform else img), int(self.labels[index])


class IndexedDataset(Dataset):
    """Rows ``indices`` of ``base``, each with its label from ``labels`` (where label noise lives)."""

    def __init__(self, base: Dataset, indices: torch.Tensor, labels: torch.Tensor) -> None:
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.base, self.indices, self.labels = base, indices.tolist(), labels.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, _ = self.base[self.indices[i]]
        return x, self.labels[i]


class EpochSampler(Sampler[int]):
    """Yields one epoch's indices from :func:`epoch_order` (a fresh permutation per epoch when shuffling)."""

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.shuffle, self.generator = n, shuffle, generator
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n
        return self.n // self.world_size if self.shuffle else len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.shuffle, self.generator, self.rank, self.world_size).tolist())


class ClassicLoader:
    """Wraps a ``DataLoader`` so it behaves like :class:`~runner.data.loader.TensorLoader`:
    batches arrive on ``device``, ``len()`` is the number of batches, ``generator`` is the order RNG."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        pin_memory: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.generator = generator if generator is not None else torch.Generator()
        if not isinstance(dataset, Sized):  # a map-style Dataset need not declare __len__; ours all do
            raise TypeError(f"object of type {type(dataset).__name__!r} has no len()")
        self.sampler = EpochSampler(len(dataset), shuffle, self.generator, rank, world_size)
        pin = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        # Worker seeds come from their own generator so they never consume the order RNG.
        worker_seeds = torch.Generator().manual_seed(self.generator.initial_seed() + 1)
        self.loader = DataLoader(
            dataset,
            batch_size=int(batch_size),
            sampler=self.sampler,
            drop_last=drop_last,
            num_workers=int(num_workers),
            pin_memory=pin and torch.cuda.is_available(),
            persistent_workers=int(num_workers) > 0,
            generator=worker_seeds,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)
