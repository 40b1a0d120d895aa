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
    """Write ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta); return the arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        y = _balanced_labels(per_batch, 10, rng).tolist()
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": y,
                "data": x,
                "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
            },
        )
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, (n_test, 3 * 32 * 32), dtype=np.uint8)
    ty = _balanced_labels(n_test, 10, rng).tolist()
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": ty,
            "data": tx,
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
            "num_cases_per_batch": per_batch,
            "num_vis": 3072,
        },
    )
    return {
        "train_images": np.concatenate(train_x).reshape(-1, 3, 32, 32),
        "train_labels": np.array(train_y),
        "test_images": tx.reshape(-1, 3, 32, 32),
        "test_labels": np.array(ty),
    }


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
