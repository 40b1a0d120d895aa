"""The data a run needs: train/val/test splits as uint8 tensors plus what the model must know.

Subclasses load their raw arrays (``_load``); this class makes the validation
split with a fixed seed, applies ``subset`` and ``label_noise`` to the training
split only, picks the normalisation statistics (the dataset's published
mean/std from config, or measured on the training split), and hands out
loaders: the fast on-device :class:`~runner.data.loader.TensorLoader`
(``loader: tensor``) or the classic torch ``DataLoader`` over torchvision
datasets with transforms (``loader: dataloader``).

Validation is never augmented: it is carved out of the training files, but
only the ``train`` loader ever gets augmentation (the
classic path builds a separate dataset instance with evaluation transforms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from runner.data.augment import RandomCropFlip
from runner.data.loader import TensorLoader
from runner.errors import UserError

if TYPE_CHECKING:
    from runner.data.dataloader_path import ClassicLoader

AUGMENTATIONS = ("none", "standard")
LOADERS = ("tensor", "dataloader")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


class ImageDataModule:
    """Base for every dataset. Subclasses implement :meth:`_load` (and may override :meth:`vision_dataset`)."""

    name = "data"
    # the labels are the dataset's own: every class occurs (synthetic data draws them, and may miss one)
    fixed_classes = True
    # What ``augmentation: standard`` means for this dataset: crop padding (a random shift of up to
    # this many pixels, zero fill) and whether to mirror horizontally.
    standard_padding = 2
    standard_flip = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        subset: int | None = None,
        label_noise: float = 0.0,
        noise_seed: int = 0,
        normalize: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augmentation: str = "none",
        loader: str = "tensor",
        num_workers: int = 0,
        pin_memory: bool | None = None,
        root: str | None = None,
        download: bool = False,
        **_: object,
    ) -> None:
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.subset = subset
        self.label_noise = float(label_noise)
        self.noise_seed = int(noise_seed)
        self.normalize = bool(normalize)
        self.config_mean = None if mean is None else [float(v) for v in mean]
        self.config_std = None if std is None else [float(v) for v in std]
        self.augmentation = str(augmentation)
        self.loader_kind = str(loader)
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.root = root
        self.download = bool(download)
        self.train: Split | None = None
        self.val: Split | None = None
        self.test: Split | None = None
        self.train_indices: torch.Tensor | None = None  # rows of the training files in each split
        self.val_indices: torch.Tensor | None = None
        self._vision_cache: dict[tuple[bool, bool], Any] = {}

    def class_names(self) -> list[str]:
        """What each label means, for figures (the confusion matrix); the label numbers by default."""
        return [str(i) for i in range(self.num_classes)]

    # -- loading -------------------------------------------------------------
    def _load(self) -> tuple[Split, Split]:
        """Return (the training part, the held-out test part) as uint8 splits."""
        raise NotImplementedError

    def _check_options(self) -> None:
        """Raise :class:`UserError` for option values no loader can honour (done in setup, not __init__,
        so Hydra's instantiate does not wrap the message in a traceback)."""
        if self.augmentation not in AUGMENTATIONS:
            raise UserError(f"data.augmentation={self.augmentation!r} is not valid: choose none or standard")
        if self.loader_kind not in LOADERS:
            raise UserError(f"data.loader={self.loader_kind!r} is not valid: choose tensor (fast, on-device) "
                            "or dataloader (torch DataLoader with workers)")
        for key, values in (("mean", self.config_mean), ("std", self.config_std)):
            if values is not None and len(values) != self.in_channels:
                raise UserError(f"data.{key} has {len(values)} values but the data has {self.in_channels} "
                                f"channel(s): give one per channel, or null to measure it on the training split")
        if self.config_std is not None and min(self.config_std) <= 0:
            raise UserError(f"data.std={self.config_std} must be positive: fix it or set data.std=null")

    def _check_loaded(self, *splits: Split) -> None:
        """The data as loaded against what the config says it is, which the model is built from: a
        mismatch (``data.num_classes=5`` on digits) is an override to remove, said before the first step
        fails deep inside the model (a shape error, a target out of bounds) or a head of the wrong width
        trains without a word."""
        shape = tuple(splits[0].images.shape[1:])
        said = (self.in_channels, self.image_size, self.image_size)
        for key, have, want in zip(("in_channels", "image_size", "image_size"), shape, said):
            if have != want:
                raise UserError(
                    f"data.{key}={want} but the {self.name} images are {'x'.join(map(str, shape))} "
                    f"(channels x height x width): remove the data.{key} override"
                )
        top = max((int(split.labels.max()) for split in splits if len(split.labels)), default=-1)
        if top >= self.num_classes or (self.fixed_classes and top + 1 != self.num_classes):
            raise UserError(
                f"data.num_classes={self.num_classes} but the {self.name} labels are 0 to {top} "
                f"({top + 1} classes): remove the data.num_classes override"
            )

    def setup(self) -> None:
        """Load once, split off validation with a fixed seed, apply subset and label noise."""
        if self.train is not None:
            return
        self._check_options()
        train_full, self.test = self._load()
        self._check_loaded(train_full, self.test)
        self._train_full = train_full
        n = len(train_full)
        g = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(n, generator=g)
        n_val = int(round(n * self.val_fraction))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        if self.subset is not None:
            if int(self.subset) < 1:
                raise UserError(f"data.subset={self.subset}: must be a positive number of examples or null")
            train_idx = train_idx[: int(self.subset)]
        self.val_indices, self.train_indices = val_idx, train_idx
        self.val = Split(train_full.images[val_idx], train_full.labels[val_idx])
        train = Split(train_full.images[train_idx], train_full.labels[train_idx])
        if self.label_noise > 0:
            train = Split(train.images, self._noisy(train.labels))
        self.train = train
        if self.batch_size > len(self.train):
            raise UserError(
                f"data.batch_size={self.batch_size} is larger than the training set "
                f"({len(self.train)} examples): lower data.batch_size"
            )
        self.mean, self.std = self._statistics()

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean/std in [0, 1] pixel units: from config when given, else measured on train."""
        if not self.normalize:
            return torch.zeros(self.in_channels), torch.ones(self.in_channels)
        if self.config_mean is not None and self.config_std is not None:
            return torch.tensor(self.config_mean), torch.tensor(self.config_std)
        assert self.train is not None  # setup() splits off the training set before measuring it
        imgs = self.train.images.float() / 255.0
        mean = imgs.mean(dim=(0, 2, 3)) if self.config_mean is None else torch.tensor(self.config_mean)
        std = imgs.std(dim=(0, 2, 3)).clamp_min(1e-3) if self.config_std is None else torch.tensor(self.config_std)
        return mean, std

    def _noisy(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace a ``label_noise`` fraction of labels with uniformly random classes (fixed seed)."""
        g = torch.Generator().manual_seed(self.noise_seed)
        n = len(labels)
        k = int(round(n * self.label_noise))
        which = torch.randperm(n, generator=g)[:k]
        labels = labels.clone()
        labels[which] = torch.randint(0, self.num_classes, (k,), generator=g)
        return labels

    # -- transforms ----------------------------------------------------------
    def augment_fn(self) -> RandomCropFlip | None:
        """The batched training augmentation for the fast path, or None for ``augmentation: none``."""
        if self.augmentation == "standard":
            return RandomCropFlip(self.standard_padding, self.standard_flip)
        return None

    def describe_transform(self, split: str) -> str:
        """What happens to an image of ``split`` on its way to the model, in words (for reports)."""
        aug = self.augment_fn() if split == "train" else None
        steps = [repr(aug)] if aug is not None else []
        steps.append("normalise (mean/std)" if self.normalize else "scale to [0, 1]")
        return " + ".join(steps)

    def vision_transform(self, split: str):
        """The torchvision transform for the classic path: augmentation only for ``train``."""
        from torchvision import transforms as T

        steps: list[Any] = []
        if split == "train" and self.augmentation == "standard":
            steps.append(T.RandomCrop(self.image_size, padding=self.standard_padding))
            if self.standard_flip:
                steps.append(T.RandomHorizontalFlip())
        steps += [T.ToTensor(), T.Normalize(self.mean.tolist(), self.std.tolist())]
        return T.Compose(steps)

    def vision_dataset(self, train: bool, transform):
        """A map-style dataset of ``(transformed image, label)`` over the training or test files.

        The base class serves the decoded uint8 tensors as PIL images; torchvision-backed
        subclasses return the torchvision dataset itself.
        """
        from runner.data.dataloader_path import TensorImageDataset

        split = self._train_full if train else self.test
        assert split is not None  # setup() loads both
        return TensorImageDataset(split.images, split.labels, transform)

    # -- loaders -------------------------------------------------------------
    def loader(
        self,
        split: str,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> TensorLoader | ClassicLoader:
        """A loader for ``train``, ``val`` or ``test``; only ``train`` shuffles and augments.

        Returns a :class:`TensorLoader` (``data.loader=tensor``) or a
        :class:`~runner.data.dataloader_path.ClassicLoader` (``data.loader=dataloader``);
        both yield normalised float ``(x, y)`` batches on ``device`` in the same order.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.setup()
        data: Split = getattr(self, split)
        training = split == "train"
        batch_size = self.batch_size if training else self.eval_batch_size
        drop_last = training and len(data) > self.batch_size * world_size
        if self.loader_kind == "dataloader":
            from runner.data.dataloader_path import ClassicLoader

            return ClassicLoader(
                self._classic_dataset(split),
                batch_size,
                shuffle=training,
                drop_last=drop_last,
                generator=generator,
                device=device,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                rank=rank,
                world_size=world_size,
            )
        return TensorLoader(
            data.images,
            data.labels,
            batch_size,
            self.mean,
            self.std,
            shuffle=training,
            drop_last=drop_last,
            augment=self.augment_fn() if training else None,
            generator=generator,
            device=device,
            rank=rank,
            world_size=world_size,
        )

    def _classic_dataset(self, split: str):
        """The split as rows of a torchvision dataset, with this split's labels (noisy ones for train).

        Train and validation read the same files through separate dataset instances, so the
        train transform (with augmentation) can never leak into validation.
        """
        from runner.data.dataloader_path import IndexedDataset

        from_train_files = split != "test"
        augmented = split == "train" and self.augmentation == "standard"
        key = (from_train_files, augmented)
        if key not in self._vision_cache:
            self._vision_cache[key] = self.vision_dataset(from_train_files, self.vision_transform(split))
        base = self._vision_cache[key]
        data: Split = getattr(self, split)
        if split == "test":
            indices = torch.arange(len(data))
        else:
            split_indices = self.train_indices if split == "train" else self.val_indices
            assert split_indices is not None  # setup() sets both
            indices = split_indices
        return IndexedDataset(base, indices, data.labels)
