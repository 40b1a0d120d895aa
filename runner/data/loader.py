"""The fast tensor data path: whole splits live on the device as uint8, batches are index slices.

No per-sample Python or PIL work in the hot loop: one ``randperm`` per epoch,
one row gather, batched augmentation on the uint8 batch, an in-place normalise.
:func:`epoch_order` is shared with the classic ``DataLoader`` path so both
paths visit the same examples in the same order for the same generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one intra-op thread, then restore the thread count.

    Assembling a batch (gather, crop, normalise) is small and memory-bound: fanning it out
    over OpenMP threads saves little on an idle machine and costs many times more when the
    cores are shared (threads spin at barriers), so the CPU fast path keeps it on one thread and
    leaves every thread to the model.
    """
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def epoch_order(n: int, shuffle: bool, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The example indices one rank visits in one epoch (a fresh permutation when shuffling).

    Shuffled shards are equal-sized so every rank takes the same number of steps.
    """
    if shuffle:
        order = torch.randperm(n, generator=generator)
        if world_size > 1:
            per = n // world_size
            order = order[rank * per:(rank + 1) * per]
        return order
    return torch.arange(rank, n, world_size)


class TensorLoader:
    """Iterates ``(x, y)`` batches over uint8 images held as one tensor.

    ``x`` comes out as float32 ``(N, C, H, W)`` normalised by ``mean``/``std``
    (per channel); ``augment(x, generator)`` (a batched tensor transform such as
    :class:`runner.data.augment.RandomCropFlip`) sees the uint8 batch before
    normalisation and runs only when given, so validation and test loaders are
    never augmented.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = int(batch_size)
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(self.device)
        self.shift = (mean / std).view(1, -1, 1, 1).to(self.device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.generator = generator if generator is not None else torch.Generator()
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.world_size == 1:
            return n
        return n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))

    def _order(self) -> torch.Tensor:
        order = epoch_order(len(self.labels), self.shuffle, self.generator, self.rank, self.world_size)
        return order.to(self.device)

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select copies whole rows (memcpy); ``images[idx]`` goes through the generic
        # element-wise indexing kernel and is much slower on CPU. Likewise float().mul_().sub_()
        # beats a broadcast addcmul.
        x = self.images.index_select(0, idx)
        if self.augment is not None:
            x = self.augment(x, self.generator)
        return x.float().mul_(self.scale).sub_(self.shift), self.labels.index_select(0, idx)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        on_cpu = self.device.type == "cpu"
        with single_thread(on_cpu):
            order = self._order()
        n, bs = len(order), self.batch_size
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            with single_thread(on_cpu):
                batch = self._batch(order[start:start + bs])
            yield batch
