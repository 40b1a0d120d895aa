"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read by torchvision's own dataset classes.

Files live under ``data.root`` (``${paths.data_dir}``, i.e. ``data/`` or ``$DATA_DIR``)
exactly where torchvision puts them: ``MNIST/raw/*-idx?-ubyte[.gz]``,
``FashionMNIST/raw/...``, ``cifar-10-batches-py/`` and ``cifar-100-python/``.
Nothing is fetched unless ``data.download=true``; missing or unreadable files end
the run in :meth:`setup` with one line naming the files, the folder and the fixes.

The first run decodes the files once into uint8 tensors and caches them next to
the data (``runner-uint8.pt``, read back with ``weights_only=True``), keyed on the
source files' names, sizes and modification times, so later runs skip decoding.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import pickle
import shutil
import struct
from pathlib import Path

import torch
from torchvision import datasets

from runner.data.datamodule import ImageDataModule, Split
from runner.errors import UserError

log = logging.getLogger(__name__)

CACHE_NAME = "runner-uint8.pt"
CACHE_VERSION = 1
# What a broken file makes the torchvision readers raise (bad magic, short buffer, bad pickle).
READ_ERRORS = (
    RuntimeError,
    ValueError,
    TypeError,
    AssertionError,
    KeyError,
    EOFError,
    OSError,
    pickle.UnpicklingError,
    IndexError,
)


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the md5 pins of the official archive's files.

    The pins reject any re-packed or cut-down copy (and the tiny fixtures the tests write);
    the files are still parsed by torchvision and checked for shape and label range by us.
    Downloads still verify the archive's md5.
    """

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Files(datasets.CIFAR100):
    """torchvision's CIFAR-100 reader without per-file md5 pins (see :class:`_CIFAR10Files`)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


class TorchvisionDataModule(ImageDataModule):
    """A dataset read through a torchvision class from files under ``root``."""

    dataset_cls: type = datasets.VisionDataset
    folder = ""  # where the files live, relative to root
    files: tuple[str, ...] = ()  # what must be in that folder
    gz_ok = False  # the idx files may be given gzip-compressed, as they are published
    shape = (1, 28, 10)  # in_channels, image_size, num_classes (conf/data/*.yaml states them too)

    def __init__(
        self, root: str | None = None, download: bool = False, cache: bool = True, **kwargs
    ) -> None:
        for key, value in zip(("in_channels", "image_size", "num_classes"), self.shape):
            kwargs.setdefault(key, value)
        super().__init__(root=root, download=download, **kwargs)
        self.cache = bool(cache)

    # -- files -----------------------------------------------------------------
    def root_path(self) -> Path:
        """The data root as configured (``data.root``); relative paths are from the launch directory."""
        if not self.root:
            raise UserError(
                f"data.root is not set for data={self.name}: set data.root=<folder> or DATA_DIR"
            )
        return Path(str(self.root)).expanduser()

    def data_folder(self) -> Path:
        return self.root_path() / self.folder

    def _missing_files(self) -> list[str]:
        """Required files absent from :meth:`data_folder`; unpacks ``.gz`` copies of idx files first."""
        folder = self.data_folder()
        missing = []
        for name in self.files:
            path = folder / name
            if path.is_file():
                continue
            gz = folder / (name + ".gz")
            if self.gz_ok and gz.is_file():
                self._gunzip(gz, path)
                continue
            missing.append(name)
        return missing

    def _gunzip(self, gz: Path, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".part")
        try:
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, dest)
        except (OSError, EOFError) as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(
                f"data={self.name}: {gz} is not a readable gzip file ({exc}): {self._replace_fix('it')}"
            ) from None

    def _fixes(self) -> str:
        return (
            f"fetch them with `data.download=true`, or copy the files into {self.data_folder().resolve()} "
            "(data.root or DATA_DIR chooses the folder)"
        )

    def _replace_fix(self, what: str) -> str:
        """The fix for files that exist but are bad: ``data.download=true`` fetches only missing files."""
        return (
            f"delete {what} and run again with data.download=true to fetch a fresh copy, or replace "
            f"{what} with a good copy"
        )

    def file_problem(self, path: Path) -> str | None:
        """Why ``path`` cannot be read (None when it reads): a CIFAR file is a pickle."""
        try:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        except READ_ERRORS as exc:
            return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return None

    def _corrupt_files(self) -> list[str]:
        """``<path> could not be read (<why>)`` for each required file that exists and does not read:
        the error names them, as torchvision's own message ("shape '[120]' is invalid") does not."""
        folder = self.data_folder().resolve()
        found = []
        for name in self.files:
            why = self.file_problem(folder / name) if (folder / name).is_file() else None
            if why:
                found.append(f"{folder / name} could not be read ({why})")
        return found

    def _check_files(self) -> None:
        missing = self._missing_files()
        if missing:
            expected = ", ".join(n + ("[.gz]" if self.gz_ok else "") for n in self.files)
            raise UserError(
                f"data={self.name}: missing {', '.join(missing)} in {self.data_folder().resolve()} "
                f"(expected {expected}): {self._fixes()}"
            )

    def _open(self, train: bool, transform=None, download: bool = False):
        """The torchvision dataset over the training or test files, with user-facing errors."""
        try:
            return self.dataset_cls(
                str(self.root_path()), train=train, transform=transform, download=download
            )
        except READ_ERRORS as exc:
            detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            folder = self.data_folder().resolve()
            if download:
                raise UserError(
                    f"data={self.name}: could not download into {folder} ({detail}): check the "
                    f"network connection, or copy the files into {folder} yourself"
                ) from None
            corrupt = self._corrupt_files()
            if corrupt:
                raise UserError(
                    f"data={self.name}: {'; '.join(corrupt)}: "
                    f"{self._replace_fix('it' if len(corrupt) == 1 else 'them')}"
                ) from None
            raise UserError(
                f"data={self.name}: the files in {folder} could not be read (corrupt or wrong "
                f"format?) ({detail}): {self._replace_fix('them')}"
            ) from None

    # -- decoding and cache ------------------------------------------------------
    def _fingerprint(self) -> list[str]:
        folder = self.data_folder()
        out = []
        for name in self.files:
            st = (folder / name).stat()
            out.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        return out

    def cache_path(self) -> Path:
        """Where the decoded uint8 tensors are cached (next to the files they came from)."""
        return self.data_folder() / CACHE_NAME

    def _read_cache(self, fingerprint: list[str]) -> tuple[Split, Split] | None:
        path = self.cache_path()
        if not (self.cache and path.is_file()):
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("version") != CACHE_VERSION or blob.get("fingerprint") != fingerprint:
                return None
            return (
                Split(blob["train_images"], blob["train_labels"]),
                Split(blob["test_images"], blob["test_labels"]),
            )
        except Exception as exc:  # a cache is disposable: any problem means decode again
            log.warning("ignoring unreadable cache %s (%s); decoding the files again", path, exc)
            return None

    def _write_cache(self, fingerprint: list[str], train: Split, test: Split) -> None:
        path = self.cache_path()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        blob = {
            "version": CACHE_VERSION,
            "fingerprint": fingerprint,
            "train_images": train.images,
            "train_labels": train.labels,
            "test_images": test.images,
            "test_labels": test.labels,
        }
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
            log.info("cached decoded %s tensors at %s", self.name, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning(
                "could not write the data cache %s (%s); decoding again next run", path, exc
            )

    def _decode(self, ds) -> Split:
        """(N, C, H, W) uint8 images and int64 labels from a torchvision dataset's arrays."""
        data = ds.data
        images = (
            data.unsqueeze(1)
            if isinstance(data, torch.Tensor)
            else torch.from_numpy(data).permute(0, 3, 1, 2)
        )
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        return Split(images.contiguous().to(torch.uint8), labels)

    def _validate(self, split: Split, which: str) -> None:
        c, s = self.in_channels, self.image_size
        problem = None
        if split.images.dim() != 4 or tuple(split.images.shape[1:]) != (c, s, s):
            problem = f"images are {tuple(split.images.shape[1:])}, expected ({c}, {s}, {s})"
        elif len(split.images) != len(split.labels):
            problem = f"{len(split.images)} images but {len(split.labels)} labels"
        elif len(split.labels) == 0:
            problem = "no examples"
        elif int(split.labels.min()) < 0 or int(split.labels.max()) >= self.num_classes:
            problem = (
                f"labels span {int(split.labels.min())}..{int(split.labels.max())}, "
                f"expected 0..{self.num_classes - 1}"
            )
        if problem:
            raise UserError(
                f"data={self.name}: the {which} files in {self.data_folder().resolve()} are not "
                f"{self.name} ({problem}): {self._replace_fix('them')}"
            )

    def _load(self) -> tuple[Split, Split]:
        if self.download and self._missing_files():
            self._open(train=True, download=True)  # fetches (and unpacks) every file of the dataset
        self._check_files()
        fingerprint = self._fingerprint()
        cached = self._read_cache(fingerprint)
        if cached is not None:
            return cached
        train, test = self._decode(self._open(train=True)), self._decode(self._open(train=False))
        self._validate(train, "training")
        self._validate(test, "test")
        if self.cache:
            self._write_cache(fingerprint, train, test)
        return train, test

    def vision_dataset(self, train: bool, transform):
        """torchvision's own dataset over the files: the classic path's per-sample PIL source."""
        self._check_files()
        return self._open(train=train, transform=transform)

    def class_names(self) -> list[str]:
        """torchvision's names: the class list (MNIST, Fashion-MNIST) or the CIFAR meta file's label names."""
        meta = getattr(self.dataset_cls, "meta", None)
        names = getattr(self.dataset_cls, "classes", None)
        if meta:
            try:
                with open(self.data_folder() / meta["filename"], "rb") as f:
                    names = pickle.load(f, encoding="latin1")[meta["key"]]
            except (OSError, KeyError, pickle.UnpicklingError, EOFError):
                names = None
        if isinstance(names, list) and len(names) == self.num_classes:
            return [str(n) for n in names]
        return super().class_names()


class MNISTDataModule(TorchvisionDataModule):
    """MNIST handwritten digits: 60,000 train / 10,000 test grey 28x28 images, 10 classes."""

    name = "mnist"
    dataset_cls = datasets.MNIST
    folder = "MNIST/raw"
    files = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    gz_ok = True
    standard_padding, standard_flip = 2, False  # small shifts; mirrored digits are other glyphs

    def file_problem(self, path: Path) -> str | None:
        """Why an idx file cannot be read: its size against the one its header states (a cut copy)."""
        try:
            with open(path, "rb") as f:
                head = f.read(4)
                if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
                    return "not an idx file of unsigned bytes (its first bytes are wrong)"
                raw = f.read(4 * head[3])
            size = path.stat().st_size
        except OSError as exc:
            return exc.strerror or str(exc)
        if len(raw) < 4 * head[3]:
            return f"{size} bytes: cut off inside its header"
        expected = 4 + len(raw) + math.prod(struct.unpack(f">{head[3]}I", raw))
        if size != expected:
            return f"{size} bytes, its header says {expected}: cut off or padded"
        return None


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: Zalando clothing images in MNIST's format and sizes, 10 classes."""

    name = "fashion_mnist"
    dataset_cls = datasets.FashionMNIST
    folder = "FashionMNIST/raw"


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 train / 10,000 test colour 32x32 images, 10 classes (python pickles)."""

    name = "cifar10"
    dataset_cls = _CIFAR10Files
    folder = datasets.CIFAR10.base_folder
    files = (
        *(n for n, _ in datasets.CIFAR10.train_list),
        *(n for n, _ in datasets.CIFAR10.test_list),
        datasets.CIFAR10.meta["filename"],
    )
    standard_padding, standard_flip = 4, True
    shape = (3, 32, 10)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: CIFAR-10's images and format with 100 fine-grained classes."""

    name = "cifar100"
    dataset_cls = _CIFAR100Files
    folder = datasets.CIFAR100.base_folder
    files = (
        *(n for n, _ in datasets.CIFAR100.train_list),
        *(n for n, _ in datasets.CIFAR100.test_list),
        datasets.CIFAR100.meta["filename"],
    )
    shape = (3, 32, 100)
