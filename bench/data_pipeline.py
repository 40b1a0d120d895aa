"""Epoch time of the fast tensor data path against torch's DataLoader + torchvision ToTensor, side by side.

    python bench/data_pipeline.py            # 60,000 28x28 and 50,000 32x32x3 images (~2 minutes)
    python bench/data_pipeline.py --quick    # small sizes, one repeat, no warm-up: a smoke test

Synthetic images are written in the real file formats (MNIST idx, CIFAR-10
pickles) into a temporary folder and read through the runner's own data
modules, so both columns time the code a run uses: ``data.loader=tensor``
(uint8 tensors on the device, index-permutation shuffling, batched
normalise/augment) and ``data.loader=dataloader`` (torchvision dataset → PIL →
ToTensor → Normalize per sample, collated by a DataLoader with workers).
Each configuration gets one untimed warm-up epoch (worker start-up, first
touch of memory), then the two paths alternate for ``--repeats`` epochs and
the median is printed with the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from runner.conf_dir import CONF_DIR  # noqa: E402

CONF = Path(CONF_DIR)


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Synthetic MNIST in the published format: gzipped idx files under ``MNIST/raw``."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(
                struct.pack(">I", d) for d in arr.shape
            )
            (raw / f"{prefix}-{kind}-ubyte.gz").write_bytes(
                gzip.compress(header + arr.tobytes(), compresslevel=1)
            )


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Synthetic CIFAR-10 in the published format: five training pickles, a test pickle, the meta file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for name, n in [
        *((f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)),
        ("test_batch", n_test),
    ]:
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    "labels": rng.integers(0, 10, n).tolist(),
                    "batch_label": name,
                    "filenames": [f"{name}_{i}.png" for i in range(n)],
                },
                f,
                protocol=4,
            )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class_{i}" for i in range(10)], "num_vis": 3072}, f)


def epoch_seconds(loader) -> float:
    """Wall time to draw every batch of one epoch (the batch is touched so nothing stays lazy)."""
    start = time.perf_counter()
    checksum = 0
    for x, y in loader:
        checksum += int(y[0]) + x.shape[0]
    elapsed = time.perf_counter() - start
    assert checksum > 0
    return elapsed


def data_module(name: str, root: Path, loader: str, augmentation: str, args):
    """The data module ``python -m runner data=<name>`` builds (conf/data/<name>.yaml), with bench overrides."""
    overrides = [
        f"data={name}",
        f"data.root={root}",
        f"data.loader={loader}",
        f"data.augmentation={augmentation}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "data.val_fraction=0.001",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return instantiate(cfg.data)


def bench(name: str, root: Path, augmentation: str, args, device: torch.device) -> dict:
    """Median epoch times of both paths for one dataset and augmentation setting."""
    fast = data_module(name, root, "tensor", augmentation, args)
    t0 = time.perf_counter()
    fast.setup()
    setup_s = time.perf_counter() - t0
    classic = data_module(name, root, "dataloader", augmentation, args)
    loaders = {
        "fast": fast.loader("train", device=device, generator=torch.Generator().manual_seed(0)),
        "classic": classic.loader(
            "train", device=device, generator=torch.Generator().manual_seed(0)
        ),
    }
    times: dict[str, list[float]] = {"fast": [], "classic": []}
    if not args.quick:  # --quick's figures mean nothing: no warm-up epoch
        for loader in loaders.values():
            epoch_seconds(loader)  # warm-up
    for _ in range(args.repeats):
        for name, loader in loaders.items():
            times[name].append(epoch_seconds(loader))
    return {
        "fast": statistics.median(times["fast"]),
        "classic": statistics.median(times["classic"]),
        "setup": setup_s,
        "images": len(fast.train),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small datasets, one repeat, no warm-up epoch (a smoke test)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed epochs per path (default 3; 1 with --quick)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="DataLoader workers for the classic path (default: 2, this machine's cores)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where to write the synthetic files"
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    sizes = (
        {"mnist": (2_000, 200), "cifar10": (2_000, 200)}
        if args.quick
        else {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        root = Path(tmp)
        write_mnist(root, *sizes["mnist"])
        write_cifar10(root, *sizes["cifar10"])
        rows = []
        for label, key in (("MNIST-like 28x28x1", "mnist"), ("CIFAR-like 32x32x3", "cifar10")):
            for aug in ("none", "standard"):
                rows.append((label, aug, bench(key, root, aug, args, device)))

    print(
        f"data pipeline: one shuffled, normalised training epoch, batch {args.batch_size}, "
        f"median of {args.repeats} interleaved repeat(s); device {device.type}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__.split('+')[0]}"
    )
    header = (
        f"| {'dataset':<19} | {'images':>6} | {'augmentation':<12} | {'fast tensor path':>16} | "
        f"{'DataLoader+ToTensor (' + str(args.workers) + ' workers)':>34} | {'speed-up':>8} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, aug, r in rows:
        print(
            f"| {label:<19} | {r['images']:>6} | {aug:<12} | {r['fast']:>14.3f} s | {r['classic']:>32.3f} s | "
            f"{r['classic'] / r['fast']:>7.1f}x |"
        )
    setup = ", ".join(
        f"{label.split()[0]} {r['setup']:.2f} s" for label, aug, r in rows if aug == "none"
    )
    print(
        f"one-time decode of the files into cached uint8 tensors (not in the epoch times): {setup}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
