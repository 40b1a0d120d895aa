"""Tiny datasets written in the real published formats (idx files, CIFAR pickles) for tests and benches."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.uint8)


def _idx(array: np.ndarray) -> bytes:
    """An idx (SN3 "Pascal Vincent") file: magic 0x08=ubyte + ndim, big-endian dims, raw bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four gzipped idx files torchvision's MNIST/FashionMNIST read; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": _balanced_labels(n_train, 10, rng),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": _balanced_labels(n_test, 10, rng),
    }
    return write_mnist_arrays(root, arrays, folder)


def write_mnist_arrays(
    root: Path, arrays: dict[str, np.ndarray], folder: str = "MNIST"
) -> dict[str, np.ndarray]:
    """Write given uint8 images (N, H, W) and labels as MNIST's four gzipped idx files.

    ``arrays`` has ``train_images``, ``train_labels``, ``test_images``, ``test_labels``; returned with
    the images as (N, 1, H, W), as the data module yields them. ``bench/lr_finder.py`` writes a
    learnable MNIST-shaped set this way (random pixels have nothing for an LR to learn).
    """
    arrays = dict(arrays)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(arrays[f"{split}_images"]))
        )
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(_idx(arrays[f"{split}_labels"]))
        )
    arrays["train_images"] = arrays["train_images"][:, None]
    arrays["test_images"] = arrays["test_images"][:, None]
    return arrays


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(
    root: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) of random pixels; return the arrays."""
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, (5 * per_batch, 3, 32, 32), dtype=np.uint8)
    train_y = np.concatenate([_balanced_labels(per_batch, 10, rng) for _ in range(5)])
    test_x = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_y = _balanced_labels(n_test, 10, rng)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    return write_cifar10_arrays(root, arrays)


def write_cifar10_arrays(root: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write given uint8 images (N, 3, 32, 32) and labels as CIFAR-10's python pickles; return them.

    The training images are split over the five ``data_batch_*`` files in order (torchvision reads
    them in order). ``bench/lr_finder.py`` writes a learnable CIFAR-shaped set this way.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(arrays["train_labels"])), 5)
    for i, idx in enumerate(chunks, start=1):
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": [int(y) for y in arrays["train_labels"][idx]],
                "data": arrays["train_images"][idx].reshape(len(idx), -1).astype(np.uint8),
                "filenames": [f"img_{i}_{j}.png" for j in range(len(idx))],
            },
        )
    n_test = len(arrays["test_labels"])
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(y) for y in arrays["test_labels"]],
            "data": arrays["test_images"].reshape(n_test, -1).astype(np.uint8),
            "filenames": [f"test_{j}.png" for j in range(n_test)],
        },
    )
    _pickle(
        folder / "batches.meta",
        {
            "label_names": [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
            "num_cases_per_batch": len(chunks[0]),
            "num_vis": 3072,
        },
    )
    return {k: np.asarray(v) for k, v in arrays.items()}


def write_cifar100(
    root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``cifar-100-python/`` (train, test, meta pickles with fine and coarse labels); return the arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        fine = rng.permutation(np.arange(n) % 100).tolist()
        _pickle(
            folder / split,
            {
                "filenames": [f"{split}_{j}.png" for j in range(n)],
                "batch_label": split,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": x,
            },
        )
        out[f"{split}_images"], out[f"{split}_labels"] = x.reshape(-1, 3, 32, 32), np.array(fine)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
    )
    return out
