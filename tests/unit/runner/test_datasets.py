"""Real torchvision loading on tiny datasets written in the real file formats into tmp_path.

MNIST/Fashion-MNIST are idx files (gzip-compressed, as published) under
``<root>/MNIST/raw/``; CIFAR-10/100 are the python pickles with their meta files.
Everything the data modules return is compared with what was written.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_cfg, run_cli
from helpers.datasets import write_cifar10, write_cifar100, write_mnist
from hydra.utils import instantiate

from runner.data.augment import RandomCropFlip
from runner.data.digits import DigitsDataModule
from runner.data.synthetic import SyntheticDataModule
from runner.data.torchvision_data import (
    CACHE_NAME,
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from runner.errors import UserError

WRITERS = {
    "mnist": (MNISTDataModule, lambda root: write_mnist(root, "MNIST")),
    "fashion_mnist": (
        FashionMNISTDataModule,
        lambda root: write_mnist(root, "FashionMNIST", seed=1),
    ),
    "cifar10": (CIFAR10DataModule, write_cifar10),
    "cifar100": (CIFAR100DataModule, write_cifar100),
}
SHAPES = {
    "mnist": (1, 28, 10),
    "fashion_mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
}


def make_module(name: str, root: Path, **overrides):
    """The data module exactly as ``data=<name>`` builds it, pointed at ``root``."""
    # composed once per dataset in a worker, then pointed at root: the plain path the override
    # data.root=<root> would set in place of ${paths.data_dir}
    cfg = compose_cfg([f"data={name}"])
    cfg.data.root = str(root)
    kwargs = {
        "batch_size": 16,
        "eval_batch_size": 32,
        "val_fraction": 0.2,
        "num_workers": 0,
        **overrides,
    }
    return instantiate(cfg.data, **kwargs)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# -- loading -------------------------------------------------------------------------


@pytest.mark.parametrize("loader_kind", ["tensor", "dataloader"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_loads_what_was_written(tmp_path, name, loader_kind):
    cls, write = WRITERS[name]
    written = write(tmp_path)
    data = make_module(name, tmp_path, loader=loader_kind, normalize=False)
    assert type(data) is cls
    data.setup()
    channels, size, classes = SHAPES[name]
    assert (data.in_channels, data.image_size, data.num_classes) == (channels, size, classes)
    n_train = len(written["train_labels"])
    assert len(data.val) == round(0.2 * n_train) and len(data.train) + len(data.val) == n_train
    assert len(data.test) == len(written["test_labels"])

    # the test split comes back in file order, pixel for pixel (normalize=false: x = pixel / 255)
    x, y = collect(data.loader("test"))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (len(written["test_labels"]), channels, size, size)
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(written["test_images"]))
    assert y.tolist() == written["test_labels"].tolist()

    # train and val are the written training rows their indices say, with their labels
    for split, idx in (("train", data.train_indices), ("val", data.val_indices)):
        part = getattr(data, split)
        assert part.images.dtype == torch.uint8
        assert torch.equal(part.images, torch.from_numpy(written["train_images"])[idx])
        assert part.labels.tolist() == written["train_labels"][idx.numpy()].tolist()
    xv, yv = collect(data.loader("val"))
    assert torch.equal((xv * 255).round().to(torch.uint8), data.val.images)
    assert torch.equal(yv, data.val.labels)

    # every training row lands in exactly one of train/val, so class counts add up to what was written
    counts = torch.bincount(torch.cat([data.train.labels, data.val.labels]), minlength=classes)
    assert counts.tolist() == np.bincount(written["train_labels"], minlength=classes).tolist()
    xt, yt = collect(data.loader("train", generator=torch.Generator().manual_seed(0)))
    assert xt.shape[1:] == (channels, size, size)
    assert len(yt) == len(data.train) // 16 * 16  # drop_last on the training split only
    assert int(yt.min()) >= 0 and int(yt.max()) < classes


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_both_loader_paths_give_the_same_batches(tmp_path, name):
    WRITERS[name][1](tmp_path)
    opts = {"subset": 60, "label_noise": 0.3}
    fast = make_module(name, tmp_path, loader="tensor", **opts)
    classic = make_module(name, tmp_path, loader="dataloader", **opts)
    for split in ("train", "val", "test"):
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        a, b = fast.loader(split, generator=g1), classic.loader(split, generator=g2)
        assert len(a) == len(b)
        for _epoch in range(2):  # a fresh permutation per epoch, the same on both paths
            batches_a, batches_b = list(a), list(b)
            assert len(batches_a) == len(batches_b) == len(a)
            for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
                assert torch.equal(ya, yb)
                torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
    # normalised with the published per-channel statistics from runner/conf/data/<name>.yaml
    cfg = compose_cfg([f"data={name}"])
    assert fast.mean.tolist() == pytest.approx(list(cfg.data.mean))
    assert fast.std.tolist() == pytest.approx(list(cfg.data.std))


def test_both_paths_shard_identically_across_ranks(tmp_path):
    write_mnist(tmp_path)
    fast = make_module("mnist", tmp_path, loader="tensor")
    classic = make_module("mnist", tmp_path, loader="dataloader")
    seen = []
    for rank in range(2):
        a = fast.loader(
            "train", generator=torch.Generator().manual_seed(3), rank=rank, world_size=2
        )
        b = classic.loader(
            "train", generator=torch.Generator().manual_seed(3), rank=rank, world_size=2
        )
        ya, yb = collect(a)[1], collect(b)[1]
        assert torch.equal(ya, yb) and len(a) == len(b)
        seen.append(ya)
    assert len(seen[0]) == len(seen[1])


# -- validation and test are never augmented --------------------------------------------


@pytest.mark.parametrize("loader_kind", ["tensor", "dataloader"])
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_validation_is_never_augmented(tmp_path, name, loader_kind):
    WRITERS[name][1](tmp_path)
    plain = make_module(name, tmp_path, loader=loader_kind, augmentation="none")
    aug = make_module(name, tmp_path, loader=loader_kind, augmentation="standard")
    for split in ("val", "test"):
        first, second = collect(aug.loader(split)), collect(aug.loader(split))
        assert torch.equal(first[0], second[0])  # the same batch read twice is identical
        # and equals the unaugmented data
        assert torch.equal(first[0], collect(plain.loader(split))[0])
    torch.manual_seed(0)  # the classic path's transforms draw from torch's global RNG
    x_aug, y_aug = collect(aug.loader("train", generator=torch.Generator().manual_seed(1)))
    x_plain, y_plain = collect(plain.loader("train", generator=torch.Generator().manual_seed(1)))
    assert torch.equal(y_aug, y_plain)  # same examples in the same order...
    changed = (x_aug != x_plain).flatten(1).any(1).float().mean()
    assert changed > 0.5  # ...but most training images were shifted (or flipped)
    x_again, _ = collect(aug.loader("train", generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(x_again, x_aug)
    assert "crop" in aug.describe_transform("train") and "crop" not in aug.describe_transform("val")


def test_random_crop_flip_is_a_padded_crop_of_each_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = RandomCropFlip(padding=2, flip=True)(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    used = set()
    for i in range(len(x)):
        matches = [
            (dy, dx, f)
            for dy in range(5)
            for dx in range(5)
            for f in (False, True)
            if torch.equal(
                out[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy : dy + 8, dx : dx + 8])
            )
        ]
        assert matches, f"image {i} is not a crop of its padded original"
        used.add(matches[0])
    assert len(used) > 20  # offsets and flips vary per image
    no_flip = RandomCropFlip(padding=0, flip=False)(x, torch.Generator().manual_seed(5))
    assert torch.equal(no_flip, x)


# -- subset and label noise ------------------------------------------------------------


def test_subset_keeps_exactly_the_first_n_training_examples(tmp_path):
    write_mnist(tmp_path)
    full = make_module("mnist", tmp_path)
    small = make_module("mnist", tmp_path, subset=25)
    full.setup()
    small.setup()
    assert len(small.train) == 25
    assert torch.equal(small.train.images, full.train.images[:25])
    assert torch.equal(small.train.labels, full.train.labels[:25])
    assert torch.equal(small.val.images, full.val.images) and torch.equal(
        small.test.labels, full.test.labels
    )


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_label_noise_replaces_that_fraction_of_training_labels_only(fraction):
    clean, noisy = DigitsDataModule(), DigitsDataModule(label_noise=fraction, noise_seed=3)
    clean.setup()
    noisy.setup()
    n, k = len(clean.train), round(fraction * len(clean.train))
    changed = int((clean.train.labels != noisy.train.labels).sum())
    # k labels are redrawn uniformly over 10 classes, so about 9 in 10 of them change
    assert 0.8 * k <= changed <= k
    assert abs(changed - 0.9 * k) < 5 * (k * 0.09) ** 0.5 + 1
    assert torch.equal(clean.train.images, noisy.train.images)
    assert torch.equal(clean.val.labels, noisy.val.labels) and torch.equal(
        clean.test.labels, noisy.test.labels
    )
    again = DigitsDataModule(label_noise=fraction, noise_seed=3)
    again.setup()
    assert torch.equal(again.train.labels, noisy.train.labels)  # fixed seed
    if fraction == 1.0:  # no signal left: agreement with the true label is at chance
        assert n * 0.05 < n - changed < n * 0.15


# -- missing and corrupt files ---------------------------------------------------------

EXPECTED_FILES = {
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte"),
    "fashion_mnist": ("FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
    "cifar10": ("cifar-10-batches-py", "data_batch_1"),
    "cifar100": ("cifar-100-python", "meta"),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_files_name_the_files_the_folder_and_both_fixes(tmp_path, name):
    data = make_module(name, tmp_path / "empty")
    with pytest.raises(UserError) as err:
        data.setup()
    msg = str(err.value)
    folder, a_file = EXPECTED_FILES[name]
    assert "\n" not in msg
    assert str((tmp_path / "empty" / folder).resolve()) in msg and a_file in msg
    assert "data.download=true" in msg and "copy the files" in msg


def test_one_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"missing data_batch_3 in .*cifar-10-batches-py"):
        make_module("cifar10", tmp_path).setup()


def test_corrupt_files_are_user_errors(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="could not be read"):
        make_module("cifar10", tmp_path).setup()
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a readable gzip file"):
        make_module("mnist", tmp_path).setup()


def test_wrong_dataset_in_the_folder_is_caught(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(UserError, match="labels span 0..99, expected 0..9"):
        # CIFAR-100 files renamed into the CIFAR-10 folder layout would otherwise train silently
        data = make_module("cifar100", tmp_path, num_classes=10)
        data.setup()


# -- the uint8 cache -------------------------------------------------------------------


def test_decoded_tensors_are_cached_next_to_the_data_and_reused(tmp_path):
    written = write_mnist(tmp_path)
    make_module("mnist", tmp_path).setup()
    cache = tmp_path / "MNIST" / "raw" / CACHE_NAME
    blob = torch.load(cache, weights_only=True)
    assert blob["train_images"].dtype == torch.uint8 and blob["train_images"].shape == (
        120,
        1,
        28,
        28,
    )
    assert torch.equal(blob["test_images"], torch.from_numpy(written["test_images"]))
    # a later run reads the cache, not the files: prove it by editing the cache
    blob["test_labels"][0] = (blob["test_labels"][0] + 1) % 10
    torch.save(blob, cache)
    again = make_module("mnist", tmp_path)
    again.setup()
    assert int(again.test.labels[0]) == (int(written["test_labels"][0]) + 1) % 10
    # a changed source file invalidates it
    raw = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw.write_bytes(raw.read_bytes())
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    fresh = make_module("mnist", tmp_path)
    fresh.setup()
    assert fresh.test.labels.tolist() == written["test_labels"].tolist()
    no_cache = make_module("mnist", tmp_path / "other", cache=False)
    write_mnist(tmp_path / "other")
    no_cache.setup()
    assert not (tmp_path / "other" / "MNIST" / "raw" / CACHE_NAME).exists()


def test_bad_options_are_user_errors(tmp_path):
    write_mnist(tmp_path)
    for overrides, key in (
        ({"augmentation": "heavy"}, "data.augmentation"),
        ({"loader": "fast"}, "data.loader"),
        ({"mean": [0.1, 0.2]}, "data.mean"),
    ):
        with pytest.raises(UserError, match=key):
            make_module("mnist", tmp_path, **overrides).setup()


# -- the command line ------------------------------------------------------------------


@pytest.mark.slow
def test_missing_data_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    proc = run_cli(["data=cifar10", f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data=cifar10: missing data_batch_1")
    assert "data.download=true" in lines[0]


@pytest.mark.slow
def test_end_to_end_training_on_tiny_mnist(tmp_path):
    write_mnist(tmp_path / "data", n_train=200, n_test=50)
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "data=mnist",
            f"data.root={tmp_path / 'data'}",
            "model=cnn",
            "trainer.max_epochs=1",
            "data.batch_size=32",
            "data.augmentation=standard",
            "diag=off",
        ],
        tmp_path,
        run_dir=run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["metrics"]["epochs"] == 1
    assert report["metrics"]["steps"] == 180 // 32  # 200 - 20 validation examples, drop_last
    assert 0.0 <= report["metrics"]["test_acc"] <= 1.0
    assert (tmp_path / "data" / "MNIST" / "raw" / CACHE_NAME).is_file()


@pytest.mark.slow
def test_check_data_reports_and_writes_sample_grids(tmp_path):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "check"
    proc = run_cli(
        [
            "data=cifar10",
            f"data.root={tmp_path / 'data'}",
            "data.augmentation=standard",
            "data.batch_size=16",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
        module="runner.check_data",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "train 90 | val 10 | test 30" in text
    assert "labels 0..9" in text
    assert "train and val transforms differ: yes" in text
    report = json.loads((out / "data_report.json").read_text())
    assert report["sizes"] == {"train": 90, "val": 10, "test": 30}
    assert sum(report["class_counts"]["test"]) == 30
    assert report["transforms_differ"] is True and report["val_repeatable"] is True
    # random pixels normalised with CIFAR's statistics
    assert abs(report["pixel_mean"]["val"][0]) < 1.0
    from PIL import Image

    with Image.open(out / "samples.png") as png:
        assert png.size[0] > 200 and png.size[1] > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out), size_guidance={"images": 0})
    acc.Reload()
    assert {"samples/train", "samples/val"} <= set(acc.Tags()["images"])
    img = acc.Images("samples/val")[0]
    assert img.width > 32 and img.height > 32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_classes": 5}, "data.num_classes=5 but the digits labels are 0 to 9 (10 classes)"),
        # a 20-way head on 10 classes trained without a word, its chance level wrong
        ({"num_classes": 20}, "data.num_classes=20 but the digits labels are 0 to 9 (10 classes)"),
        ({"image_size": 28}, "data.image_size=28 but the digits images are 1x8x8"),
        ({"in_channels": 3}, "data.in_channels=3 but the digits images are 1x8x8"),
    ],
)
def test_a_dataset_fact_overridden_wrong_is_refused_at_setup(override, message):
    data = DigitsDataModule(**override)
    with pytest.raises(UserError, match=re.escape(message)):
        data.setup()


def test_synthetic_data_may_leave_a_class_undrawn_but_not_exceed_its_classes():
    small = SyntheticDataModule(
        num_train=4, num_test=2, num_classes=10, batch_size=2, val_fraction=0.0
    )
    small.setup()  # six labels drawn from ten classes: some never occur, and that is fine
    assert int(small.train.labels.max()) < 10
