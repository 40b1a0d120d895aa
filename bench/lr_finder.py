"""How good is the LR finder's suggestion? Compare it with a grid of full short runs, side by side.

Two fixed task lists (a task is ``model/optimizer/data[/variant]``):

- dev (110): mlp, cnn and resnet18 (width 16: a CPU-sized ResNet-18) with sgd, adam and adamw, on the
  8x8 digits and on an MNIST-shaped set (mnist28: the digits upscaled into 28x28 canvases, written as
  MNIST's four idx files and read by ``data=mnist``; resnet18 on digits only): the first bench's two
  hash-split halves, whose held-out half was looked at. And the second and third rounds' held-out
  sets, each scored once and looked at: a Fashion-MNIST-shaped set (fmnist28: smaller, shifted,
  noisy digits as Fashion-MNIST's idx files, ``data=fashion_mnist``), a CIFAR-shaped one (cifar32:
  coloured digits on coloured noisy backgrounds as CIFAR-10's pickles, ``data=cifar10``), heavy-ball
  SGD (``sgd_hb``: Nesterov off), a wider and deeper MLP (``mlp_wide``: 3 x 512), batch sizes 32 and
  256, other seeds; and the fourth to seventh rounds' held-out sets, each scored once and looked at.
- held-out (10), fixed before any of them was run: new combinations of those and new seeds.

The random-pixel sets the tests write have nothing an LR could learn, hence the digit-derived ones.
For each task every LR of a log grid is trained for a few epochs (the runner's own
``runner.app.run``: cosine schedule, diagnostics off) at each of ``--seeds`` seeds (default 3), and
the best mean test accuracy over the seeds is the reference. Then a run with ``optimizer.lr=auto``
(the range test, then training at its suggestion with the configured ``lr_find.method``) is trained
the same way at the same seeds, each with its own range test and, from round 10 on, its check (the
candidates' short trials; ``lr_find.candidates``, ``lr_find.verify_steps``). Each finder run's cost,
the range test's and the check's seconds as a share of the rest of its run, is printed beside it. The ratio of its mean test accuracy
to the grid's best mean is the score (target >= 0.95 on every held-out task): the same seeds and the
same averaging on both sides, so the score measures the rule rather than one seed's luck (a single
4-epoch run here moves 10+ points between neighbouring LRs). A rule is tuned on dev tasks only; both
splits are printed. Every run is single-threaded; ``--jobs N`` runs N tasks at once.

    python bench/lr_finder.py                      # 80 tasks, 7-point grid, 4 epochs, 3 seeds
    python bench/lr_finder.py --quick              # smoke test: 2 tasks, 1 epoch, 2-point grid, 1 seed
                                                   # (only the data sets its tasks read are written)
    python bench/lr_finder.py --split dev --keep DIR   # dev only, curves kept for --screen
    python bench/lr_finder.py --screen DIR/results.json   # candidate rules read off kept dev curves
    python bench/lr_finder.py --split dev --range-test-only --grid-from bench/results/lr_finder.md \
        --keep DIR                                 # dev curves afresh, screened against the printed grids
    python bench/lr_finder.py --render A/results.json B/results.json   # one table of runs made apart
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the dataset writers of tests/helpers

from helpers.datasets import write_cifar10_arrays, write_mnist_arrays  # noqa: E402
from results_file import write_results  # noqa: E402  (bench/ is on sys.path)

from diag.lr_finder import LearningRateFinder  # noqa: E402
from runner.app import run as run_task  # noqa: E402
from runner.conf_dir import CONF_DIR  # noqa: E402
from runner.data.upsampled_digits import UpsampledDigitsDataModule  # noqa: E402

MODELS: dict[str, list[str]] = {
    "mlp": ["model=mlp"],
    "cnn": ["model=cnn"],
    "resnet18": ["model=resnet18", "model.width=16"],
    "mlp_wide": ["model=mlp", "model.hidden=[512,512,512]"],  # wider and one layer deeper
}
# 28x28 and 32x32 inputs: three conv blocks so the CNN's receptive field covers the digit
MODEL_LARGE = {"cnn": ["model.channels=[16,32,64]"]}
OPTIMIZERS: dict[str, list[str]] = {
    "sgd": ["optimizer=sgd"],  # the config's SGD: momentum 0.9, Nesterov
    "sgd_hb": ["optimizer=sgd", "optimizer.nesterov=false"],  # heavy-ball momentum 0.9
    "adam": ["optimizer=adam"],
    "adamw": ["optimizer=adamw"],
}
VARIANTS: dict[str, list[str]] = {
    "bs32": ["data.batch_size=32"],
    "bs256": ["data.batch_size=256"],
}
SEED_VARIANTS = {f"seed{k}": k for k in range(1, 16)}  # added to --seed
SEEDS = 3
"""Default of ``--seeds``: each task's grid and its finder run are trained at this many seeds and
averaged, the same seeds on both sides. One 4-epoch run on these small sets moves by 10+ points between
neighbouring LRs from the seed alone (round 6: cnn/adam/mnist28/bs256/seed3's grid read 0.404, 0.393,
0.485 at 3e-3, 1e-2, 3e-2), so a single-seed ratio measured the seed as much as the rule."""
SEED_STRIDE = 100
"""The k-th seed of a task is its own seed (``--seed`` plus its ``seedN`` variant) + k x this: apart from
every task's own seed, so two tasks' seed sets never overlap (``seed1`` + 100 is not ``seed2``'s)."""
DEV_OPTIMIZERS = ("sgd", "adam", "adamw")
# The dev set: the 15 tasks of the first bench run. Its held-out half (11 tasks, split by a hash of the
# name) was looked at to find where the old rule failed, so every one of them is dev now.
DEV_TASKS = [
    f"{m}/{o}/{d}"
    for m in ("mlp", "cnn", "resnet18")
    for o in DEV_OPTIMIZERS
    for d in ("digits", "mnist28")
    if m != "resnet18" or d == "digits"
]
# The second round's held-out set (fixed before it was run, scored once in bench/results/lr_finder.md's
# history at 9b329cb, where three of its tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp/sgd/fmnist28",
    "cnn/sgd/fmnist28",
    "cnn/sgd/cifar32",
    "mlp/sgd_hb/mnist28",
    "mlp_wide/sgd/mnist28",
    "cnn/sgd_hb/digits/bs32",
    "mlp/sgd/digits/bs256",
    "mlp/adam/cifar32",
    "mlp_wide/adam/digits/bs32/seed1",
    "cnn/adamw/digits/bs256/seed2",
]
# The third round's held-out set (fixed before it was run, scored once at a432333, where four of its
# tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp/sgd/cifar32",
    "cnn/sgd/cifar32/seed1",
    "cnn/sgd_hb/fmnist28",
    "mlp_wide/sgd/fmnist28",
    "mlp/sgd_hb/digits/bs32",
    "cnn/sgd/digits/bs256/seed1",
    "mlp/sgd/mnist28/bs32/seed2",
    "cnn/adam/cifar32",
    "mlp/adamw/fmnist28/seed2",
]
# The fourth round's held-out set (fixed before it was run, scored once at 5e364f9, where four of its
# tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp_wide/sgd/cifar32",
    "cnn/sgd_hb/cifar32",
    "cnn/sgd/fmnist28/seed1",
    "mlp/sgd_hb/fmnist28/bs256",
    "mlp_wide/sgd_hb/digits/seed2",
    "cnn/sgd/mnist28/bs256/seed2",
    "cnn/adamw/cifar32/seed1",
    "mlp/adam/fmnist28/bs32",
]
# The fifth round's held-out set (fixed before it was run, scored once at 2f156e1, where one of its
# tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "cnn/adam/fmnist28",
    "cnn/sgd/cifar32/bs32",
    "cnn/adamw/fmnist28/seed2",
    "cnn/sgd_hb/mnist28/seed1",
    "resnet18/sgd/fmnist28",
    "resnet18/adam/mnist28",
    "mlp/adamw/cifar32/seed1",
    "mlp_wide/adam/mnist28/bs256",
]
# The sixth round's held-out set (fixed before it was run, scored once at 2c1be49, where three of its
# tasks failed, on single-seed grids): looked at since, so dev now.
DEV_TASKS += [
    "cnn/adam/cifar32/seed3",
    "cnn/adamw/fmnist28/bs32",
    "resnet18/adamw/fmnist28",
    "resnet18/adam/cifar32",
    "mlp_wide/adamw/fmnist28",
    "cnn/adam/mnist28/bs256/seed3",
    "cnn/sgd/fmnist28/bs32/seed3",
    "cnn/sgd_hb/cifar32/seed3",
    "mlp/sgd/fmnist28/seed3",
    "mlp_wide/sgd_hb/mnist28/bs256",
]
# The seventh round's held-out set (fixed before it was run, scored once at 61ec1b1 on 3-seed means,
# where four of its tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "resnet18/adamw/mnist28/seed4",
    "mlp/adamw/mnist28/bs32/seed5",
    "cnn/sgd_hb/cifar32/bs256/seed5",
    "mlp_wide/sgd_hb/cifar32/seed4",
    "mlp_wide/adamw/mnist28/seed5",
    "mlp_wide/adamw/digits/bs256/seed4",
    "cnn/adamw/mnist28/bs32/seed5",
    "cnn/sgd/fmnist28/bs256/seed4",
    "mlp/sgd_hb/cifar32/bs32/seed5",
    "mlp/adam/fmnist28/bs256/seed4",
]
# The eighth round's held-out set (fixed before it was run, scored once at 9f56e8e on 3-seed means,
# where three of its tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "cnn/sgd/cifar32/bs256/seed6",
    "cnn/sgd_hb/fmnist28/bs256/seed7",
    "cnn/sgd/mnist28/bs32/seed7",
    "cnn/sgd_hb/cifar32/bs32/seed6",
    "mlp_wide/adam/fmnist28/seed6",
    "mlp_wide/adamw/cifar32/bs256/seed7",
    "cnn/adam/fmnist28/bs256/seed6",
    "mlp/adamw/digits/bs32/seed7",
    "mlp_wide/sgd_hb/fmnist28/bs32/seed6",
    "mlp/sgd/mnist28/bs256/seed7",
]
# The ninth round's held-out set (fixed before it was run, scored once at 1bdebd9 on 3-seed means,
# where six of its tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp_wide/sgd_hb/cifar32/bs32/seed8",
    "cnn/sgd_hb/fmnist28/bs32/seed9",
    "mlp/sgd_hb/fmnist28/bs32/seed8",
    "mlp_wide/sgd/cifar32/bs256/seed9",
    "cnn/sgd_hb/mnist28/bs256/seed8",
    "mlp/sgd/cifar32/bs256/seed9",
    "mlp/adam/mnist28/bs32/seed8",
    "cnn/adamw/cifar32/bs256/seed9",
    "mlp_wide/adam/cifar32/seed8",
    "mlp/adamw/fmnist28/bs256/seed9",
]
# The held-out set of the tenth round (the checked suggestion: candidates trained), fixed and committed
# before any of it was run, scored once at 75a68d8 on 3-seed means at seeds 10 and 11 (two of its tasks
# failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp/sgd_hb/cifar32/bs256/seed10",
    "cnn/sgd/fmnist28/bs32/seed11",
    "mlp_wide/sgd_hb/fmnist28/bs256/seed10",
    "cnn/sgd_hb/cifar32/bs256/seed11",
    "mlp/sgd/fmnist28/bs32/seed10",
    "mlp_wide/sgd/cifar32/bs32/seed11",
    "cnn/adamw/fmnist28/bs256/seed10",
    "cnn/adamw/cifar32/seed11",
    "mlp/adam/cifar32/bs32/seed10",
    "cnn/adam/mnist28/bs32/seed11",
]
# The eleventh round's held-out set (branch finder9, not adopted; scored once at 4101347 on 3-seed means
# at seeds 12 and 13, four of its tasks failed): looked at since, so dev now.
DEV_TASKS += [
    "mlp/sgd/cifar32/bs32/seed12",
    "cnn/sgd_hb/fmnist28/bs32/seed13",
    "mlp_wide/sgd/fmnist28/bs256/seed12",
    "cnn/sgd/cifar32/bs256/seed13",
    "mlp/sgd_hb/fmnist28/bs256/seed13",
    "mlp_wide/sgd_hb/cifar32/bs32/seed12",
    "cnn/adamw/fmnist28/bs32/seed12",
    "cnn/adamw/cifar32/bs256/seed13",
    "mlp/adam/fmnist28/bs256/seed12",
    "cnn/adam/cifar32/bs32/seed13",
]
# The held-out set of the twelfth round (the check's trials on the run's own schedule), fixed and
# committed before any of it was run, to be scored once on 3-seed means at seeds no task used before
# (seed14, seed15: 14, 114, 214 and 15, 115, 215). The same shape as rounds 10 and 11: six SGD tasks
# (Nesterov and heavy-ball) on the Fashion- and CIFAR-shaped sets at batch 32 and 256, two AdamW CNNs,
# two Adam tasks; no resnet18 (too slow for the round's time).
HELD_OUT_TASKS = [
    "mlp/sgd/cifar32/bs256/seed14",
    "cnn/sgd_hb/fmnist28/bs256/seed15",
    "mlp_wide/sgd/fmnist28/bs32/seed14",
    "cnn/sgd/cifar32/bs32/seed15",
    "mlp/sgd_hb/fmnist28/bs32/seed14",
    "mlp_wide/sgd_hb/cifar32/bs256/seed15",
    "cnn/adamw/fmnist28/seed14",
    "cnn/adamw/cifar32/bs32/seed15",
    "mlp_wide/adam/fmnist28/bs256/seed14",
    "cnn/adam/fmnist28/bs32/seed15",
]
ALL_TASKS = [*DEV_TASKS, *HELD_OUT_TASKS]
QUICK_TASKS = ["mlp/sgd/digits", "mlp/adam/mnist28"]
COMMON = ["scheduler=cosine"]
GRID = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]  # 3e-4 was never a task's best
# --quick: each end the best of a task (1 epoch: sgd/digits 0.1, adam/mnist28 1e-3); a middle point
# was one more run per task and seed that nothing reads
QUICK_GRID = [1e-3, 1e-1]
TARGET = 0.95


def split_of(task: str) -> str:
    """``dev`` or ``held-out``: the fixed lists above (a rule is read off dev tasks only)."""
    return "held-out" if task in HELD_OUT_TASKS else "dev"


def write_mnist28(root: Path) -> Path:
    """The digits upscaled to 28x28 (``UpsampledDigitsDataModule``) as MNIST's idx files under ``root``."""
    dm = UpsampledDigitsDataModule(image_size=28)
    train, test = dm._load()
    arrays = {
        "train_images": train.images[:, 0].numpy(),
        "train_labels": train.labels.numpy().astype(np.uint8),
        "test_images": test.images[:, 0].numpy(),
        "test_labels": test.labels.numpy().astype(np.uint8),
    }
    write_mnist_arrays(root, arrays)
    return root


def write_fmnist28(root: Path) -> Path:
    """A Fashion-MNIST-shaped set as its idx files under ``root/FashionMNIST``: the digits smaller
    (16x16), shifted further (up to 5 pixels, another placement) and under seeded pixel noise, so
    its difficulty is not mnist28's."""
    dm = UpsampledDigitsDataModule(image_size=28, digit_size=16, max_shift=5, placement_seed=1)
    train, test = dm._load()
    rng = np.random.default_rng(1)

    def noisy(images: torch.Tensor) -> np.ndarray:
        x = images[:, 0].numpy().astype(np.float64) + rng.normal(0, 48, images[:, 0].shape)
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    arrays = {
        "train_images": noisy(train.images),
        "train_labels": train.labels.numpy().astype(np.uint8),
        "test_images": noisy(test.images),
        "test_labels": test.labels.numpy().astype(np.uint8),
    }
    write_mnist_arrays(root, arrays, folder="FashionMNIST")
    return root


def write_cifar32(root: Path) -> Path:
    """A CIFAR-10-shaped set as its pickles under ``root/cifar-10-batches-py``: each digit (20x20 in
    a 32x32 canvas, shifted up to 6 pixels) painted in a random bright colour on a random dark one,
    with seeded pixel noise: three channels whose colours carry nothing about the class."""
    dm = UpsampledDigitsDataModule(image_size=32, digit_size=20, max_shift=6, placement_seed=2)
    train, test = dm._load()
    rng = np.random.default_rng(2)

    def paint(images: torch.Tensor) -> np.ndarray:
        ink = images.numpy().astype(np.float64) / 255.0  # (N, 1, 32, 32)
        n = len(ink)
        back = rng.uniform(0, 110, (n, 3, 1, 1))
        fore = rng.uniform(150, 255, (n, 3, 1, 1))
        x = back * (1 - ink) + fore * ink + rng.normal(0, 24, (n, 3, 32, 32))
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    arrays = {
        "train_images": paint(train.images),
        "train_labels": train.labels.numpy(),
        "test_images": paint(test.images),
        "test_labels": test.labels.numpy(),
    }
    write_cifar10_arrays(root, arrays)
    return root


DATA_CONFIG = {"mnist28": "mnist", "fmnist28": "fashion_mnist", "cifar32": "cifar10"}
WRITERS = {"mnist28": write_mnist28, "fmnist28": write_fmnist28, "cifar32": write_cifar32}


def write_data(root: Path, sets: Iterable[str] = tuple(WRITERS)) -> Path:
    """The file-format sets named in ``sets`` (default: every one the tasks read), under ``root``."""
    for name, write in WRITERS.items():
        if name in sets:
            write(root)
    return root


def data_sets(tasks: Iterable[str]) -> set[str]:
    """The file-format sets ``tasks`` read (digits is read from scikit-learn, not written)."""
    return {task.split("/")[2] for task in tasks} & set(WRITERS)


def task_overrides(task: str, data_root: Path) -> list[str]:
    """The runner overrides of ``model/optimizer/dataset[/variant]``."""
    model, opt, data, *variant = task.split("/")
    out = [*MODELS[model], *OPTIMIZERS[opt]]
    if data in DATA_CONFIG:
        # batch 64 as digits; the set's own statistics (the published ones are not this set's)
        out += [
            f"data={DATA_CONFIG[data]}",
            f"data.root={data_root}",
            "data.batch_size=64",
            "data.num_workers=0",
            "data.mean=null",
            "data.std=null",
            *MODEL_LARGE.get(model, []),
        ]
    for v in variant:
        out += VARIANTS.get(v, [])
    return out


def task_seed(task: str, seed: int) -> int:
    """``--seed``, plus N for a ``seedN`` task."""
    return seed + sum(SEED_VARIANTS.get(v, 0) for v in task.split("/")[3:])


def run_seeds(task: str, seed: int, n: int) -> list[int]:
    """The ``n`` seeds a task is trained at: its own seed, then + :data:`SEED_STRIDE`, + 2 x it, ..."""
    base = task_seed(task, seed)
    return [base + SEED_STRIDE * k for k in range(n)]


def make_cfg(overrides: list[str], log_dir: Path) -> DictConfig:
    """Compose ``conf/config.yaml`` as the CLI would, with outputs in ``log_dir`` and no diagnostics."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["diag=off", *overrides])
    with open_dict(cfg):
        cfg.trainer.progress = False
        cfg.paths.log_dir = str(log_dir)
    return cfg


def train(overrides: list[str], log_dir: Path, name: str) -> dict[str, Any]:
    """One full run through the runner; returns its ``report.json``."""
    run_dir = log_dir / name
    run_task(make_cfg(overrides, log_dir), run_dir)
    return json.loads((run_dir / "report.json").read_text())


def cost_share(curve: dict[str, Any], wall: float) -> dict[str, float]:
    """The finder's seconds (range test, check) as a share of the rest of the run it preceded
    (``wall``: the whole ``optimizer.lr=auto`` run, set-up, training and test included)."""
    seconds = curve.get("seconds") or {}
    range_s, check_s = float(seconds.get("range_test", 0.0)), float(seconds.get("check", 0.0))
    rest = max(wall - range_s - check_s, 1e-9)
    return {"range_test": range_s / rest, "check": check_s / rest, "run_seconds": rest}


def accuracy_of(report: dict[str, Any]) -> float:
    acc = report["metrics"].get("test_acc")
    return float(acc) if acc is not None else 0.0


def bench_task(
    task: str,
    grid: list[float],
    epochs: int,
    seed: int,
    log_dir: Path,
    data_root: Path,
    method: str | None,
    known_grid: dict[float, list[float]] | None = None,
    seeds: int = SEEDS,
) -> dict[str, Any]:
    """The grid's runs (or ``known_grid``'s accuracies from an earlier run), then the finder's run,
    each at every one of the task's ``seeds`` seeds: the reference is the best LR's mean accuracy,
    the score the finder runs' mean accuracy over the same seeds, over that."""
    t0 = time.perf_counter()
    run_at = run_seeds(task, seed, seeds)
    base = [*COMMON, *task_overrides(task, data_root), f"trainer.max_epochs={epochs}"]
    if method:
        base.append(f"lr_find.method={method}")
    grid_seeds = known_grid or {
        lr: [
            accuracy_of(
                train(
                    [*base, f"seed={s}", f"optimizer.lr={lr}"], log_dir, f"{task}/s{s}/grid_{lr:g}"
                )
            )
            for s in run_at
        ]
        for lr in grid
    }
    grid_acc = {lr: float(np.mean(accs)) for lr, accs in grid_seeds.items()}
    autos, curves, shares = [], [], []
    for s in run_at:
        started = time.perf_counter()
        report = train([*base, f"seed={s}", "optimizer.lr=auto"], log_dir, f"{task}/s{s}/auto")
        wall = time.perf_counter() - started
        autos.append(report)
        curves.append(json.loads((log_dir / task / f"s{s}" / "auto" / "lr_find.json").read_text()))
        shares.append(cost_share(curves[-1], wall))
    accs = [accuracy_of(a) for a in autos]
    best_lr = max(grid_acc, key=lambda lr: grid_acc[lr])
    acc = float(np.mean(accs))
    best = grid_acc[best_lr]
    finder = autos[0]["lr_finder"]
    return {
        "task": task,
        "split": split_of(task),
        "seeds": run_at,
        "grid": grid_acc,
        "grid_seeds": grid_seeds,
        "best_lr": best_lr,
        "best_acc": best,
        "method": finder["method"],
        "lr": finder["suggested_lr"],
        "suggestions": finder["suggestions"],
        "acc": acc,
        "ratio": acc / best if best > 0 else 0.0,
        "range_test": f"{finder['num_steps_run']} steps, {finder['stop_reason']}",
        "curve": curves[0],
        "cost": shares,
        "per_seed": [
            {
                "seed": s,
                "lr": a["lr_finder"]["suggested_lr"],
                "curve_lr": a["lr_finder"].get("curve_lr", a["lr_finder"]["suggested_lr"]),
                "method": a["lr_finder"]["method"],
                "capped": bool(c.get("capped_at")),
                "acc": acc_s,
            }
            for s, a, c, acc_s in zip(run_at, autos, curves, accs)
        ],
        "curves": curves,
        "seconds": time.perf_counter() - t0,
    }


def range_test_task(
    task: str,
    seed: int,
    log_dir: Path,
    data_root: Path,
    grid: dict[float, list[float]],
    seeds: int = SEEDS,
) -> dict[str, Any]:
    """Only the range tests (``mode=lr_find``, one per seed, the check's trials off: a screen of curve
    rules trains nothing) of a task whose grid is known: curves for ``--screen``."""
    t0 = time.perf_counter()
    run_at = run_seeds(task, seed, seeds)
    curves = []
    for s in run_at:
        overrides = [*COMMON, *task_overrides(task, data_root), f"seed={s}", "mode=lr_find"]
        overrides.append("lr_find.verify_steps=0")
        run_dir = log_dir / task / f"s{s}" / "range_test"
        run_task(make_cfg(overrides, log_dir), run_dir)
        curves.append(json.loads((run_dir / "lr_find.json").read_text()))
    means = {lr: float(np.mean(accs)) for lr, accs in grid.items()}
    best_lr = max(means, key=lambda lr: means[lr])
    return {
        "task": task,
        "split": split_of(task),
        "seeds": run_at,
        "grid": means,
        "grid_seeds": grid,
        "best_lr": best_lr,
        "best_acc": means[best_lr],
        "curve": curves[0],
        "curves": curves,
        "ratio": float("nan"),  # nothing trained
        "seconds": time.perf_counter() - t0,
    }


def grids_from(path: Path) -> dict[str, dict[float, list[float]]]:
    """Each task's grid accuracies per LR (one per seed) from a ``--keep`` run's results.json, or from a
    results file's printed grid lines (``    task  0.001:0.610  0.003:0.702 ...``: the mean over the
    seeds that file was made with, one value per LR)."""
    if path.suffix == ".json":
        return {
            r["task"]: {float(lr): list(accs) for lr, accs in r.get("grid_seeds", {}).items()}
            or {float(lr): [acc] for lr, acc in r["grid"].items()}
            for r in json.loads(path.read_text())
        }
    grids = {}
    for line in path.read_text().splitlines():
        task, *cells = line.split() or [""]
        if line.startswith("    ") and cells and all(":" in c for c in cells):
            grids[task] = {float(c.split(":")[0]): [float(c.split(":")[1])] for c in cells}
    return grids


def family_of(task: str) -> str:
    """The optimizer family ``lr_find.method=auto`` reads for this task (``sgd`` or ``adaptive``)."""
    return "sgd" if task.split("/")[1].startswith("sgd") else "adaptive"


def curve_finder(curve: dict[str, Any], family: str) -> LearningRateFinder:
    """A finder holding a recorded range test (``lr_find.json``), to ask other rules about it."""
    lrs = curve["lrs"]
    # the configured step count (a test stopped early has fewer points): it sets the skipped start
    per_step = np.log(lrs[1] / lrs[0]) if len(lrs) > 1 else 1.0
    steps = int(round(np.log(curve["max_lr"] / curve["min_lr"]) / per_step)) + 1
    finder = LearningRateFinder(
        min_lr=curve["min_lr"],
        max_lr=curve["max_lr"],
        num_steps=max(steps, 2),
        optimizer_family=family,
        batch_size=curve.get("batch_size"),  # SGD's no-edge ceiling scales with it
    )
    finder.lrs, finder.losses = list(curve["lrs"]), list(curve["losses"])
    finder.smoothed_losses = list(curve["smoothed_losses"])
    return finder


def candidate_lrs(curve: dict[str, Any], family: str) -> dict[str, float]:
    """What each rule (the finder's, ``auto`` and some blends) suggests on one recorded curve."""
    f = curve_finder(curve, family)
    at_min = f.suggest("min10")["lr"] * 10
    valley, steepest = f.suggest("valley")["lr"], f.suggest("steepest")["lr"]
    descent = f.suggest("descent")["lr"]
    return {
        "auto": f.suggest("auto")["lr"],
        "min10": at_min / 10,
        "min/3": at_min / 3,
        "min/2": at_min / 2,
        "min1": at_min,
        "descent": descent,
        "valley": valley,
        "steepest": steepest,
    }


def screen(results: list[dict[str, Any]]) -> str:
    """Each candidate rule on the dev tasks, its accuracy read off the grid (log-LR interpolation,
    flat beyond the grid's ends) at each seed's curve and averaged: a screen to pick a rule to train,
    never a reported score."""
    dev = [r for r in results if split_of(r["task"]) == "dev"]
    rules = list(candidate_lrs(dev[0]["curve"], "sgd")) if dev else []
    out = [
        "screen on the dev half (grid-interpolated ratio, mean over the seeds' curves; train the pick "
        "to score it; lr shown: the first seed's)",
        "",
        "| task | " + " | ".join(rules) + " |",
        "|---|" + "---|" * len(rules),
    ]
    worst = {rule: 1.0 for rule in rules}
    below = {rule: 0 for rule in rules}
    for r in dev:
        grid = {float(lr): acc for lr, acc in r["grid"].items()}  # JSON keys are strings
        lrs = sorted(grid)
        accs = [grid[lr] for lr in lrs]
        per_curve = [
            candidate_lrs(c, family_of(r["task"])) for c in r.get("curves") or [r["curve"]]
        ]
        cells = []
        for rule in rules:
            read = [float(np.interp(np.log(c[rule]), np.log(lrs), accs)) for c in per_curve]
            ratio = float(np.mean(read)) / r["best_acc"]
            worst[rule] = min(worst[rule], ratio)
            below[rule] += ratio < TARGET
            cells.append(f"{per_curve[0][rule]:.2e} {ratio:.3f}")
        out.append(f"| {r['task']} | " + " | ".join(cells) + " |")
    out.append("| worst | " + " | ".join(f"{worst[rule]:.3f}" for rule in rules) + " |")
    out.append(f"| below {TARGET} | " + " | ".join(f"{below[rule]}" for rule in rules) + " |")
    return "\n".join(out)


def method_cell(r: dict[str, Any]) -> str:
    """The rule ``auto`` read at each seed (``min2, capped x2; descent``): a run of one seed as before."""
    runs = r.get("per_seed") or [
        {"method": r["method"], "capped": bool(r["curve"].get("capped_at"))}
    ]
    names = [f"{p['method']}, capped" if p["capped"] else p["method"] for p in runs]
    counts = {n: names.count(n) for n in names}
    return "; ".join(n if k == 1 else f"{n} x{k}" for n, k in counts.items())


def render(results: list[dict[str, Any]], epochs: int, seed: int) -> str:
    """The grid per task (mean over seeds, then each seed's), then one row per task by half, then
    each half's summary."""
    seeds = len(results[0].get("seeds") or [0]) if results else 1
    out = [
        f"LR finder vs a log grid of {epochs}-epoch runs (cosine schedule, seed {seed}, one thread); "
        "test accuracy",
        "",
        f"Seeds: {seeds} per task (its own seed + 0, {SEED_STRIDE}, {2 * SEED_STRIDE}, ...), the same on "
        "both sides: a grid LR's accuracy is its mean over the seeds, the grid's best is the best mean; "
        "the finder runs once per seed (its own range test each time) and its accuracy is the mean of "
        "those runs. ratio = that mean / the grid's best mean.",
        "",
        "grid (test accuracy per LR, mean over the seeds):",
        "",
    ]
    for r in results:
        cells = "  ".join(f"{lr:g}:{acc:.3f}" for lr, acc in r["grid"].items())
        out.append(f"    {r['task']:<22} {cells}")
    if seeds > 1:
        out += ["", "grid per seed (seed: accuracy at each LR, in the order above):", ""]
        for r in results:
            per = r.get("grid_seeds") or {}
            for k, s in enumerate(r.get("seeds") or []):
                row = " ".join(f"{accs[k]:.3f}" for accs in per.values() if len(accs) > k)
                out.append(f"      {r['task']:<22} seed {s}: {row}")
    out.append("")
    for name in ("dev", "held-out"):
        rows = [r for r in results if r["split"] == name]
        if not rows:
            continue
        out += [
            f"## {name} tasks",
            "",
            "| task | grid best lr | grid best acc | method | suggested lr | its acc | ratio | >= 0.95 "
            "| per seed: lr acc (curve rule's lr ->) | cost: range test + check, share of the run "
            "| other rules' lrs (first seed) | range test (first seed) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            cap = r["curve"].get("capped_at")  # auto's ceiling on a test that never diverged
            others = ", ".join(
                f"{m} {lr:.2e}" for m, lr in r["suggestions"].items() if m != r["method"] or cap
            )
            per_seed = r.get("per_seed") or [{"lr": r["lr"], "acc": r["acc"]}]
            lrs = [p["lr"] for p in per_seed]
            seeds_cell = ", ".join(
                (f"{p['curve_lr']:.2e} -> " if p.get("curve_lr", p["lr"]) != p["lr"] else "")
                + f"{p['lr']:.2e} {p['acc']:.3f}"
                for p in per_seed
            )
            costs = r.get("cost") or []
            cost_cell = ", ".join(f"{c['range_test']:.0%} + {c['check']:.0%}" for c in costs) or "-"
            out.append(
                f"| {r['task']} | {r['best_lr']:g} | {r['best_acc']:.3f} | {method_cell(r)} "
                f"| {float(np.exp(np.median(np.log(lrs)))):.2e} | {r['acc']:.3f} | {r['ratio']:.3f} "
                f"| {'yes' if r['ratio'] >= TARGET else 'NO'} | {seeds_cell} | {cost_cell} | {others} "
                f"| {r['range_test']} |"
            )
        ratios = [r["ratio"] for r in rows]
        below = [r["task"] for r in rows if r["ratio"] < TARGET]
        checks = [c["check"] for r in rows for c in r.get("cost") or []]
        tests = [c["range_test"] for r in rows for c in r.get("cost") or []]
        cost = (
            f"; the check's seconds as a share of the run's: median {float(np.median(checks)):.0%}, "
            f"max {max(checks):.0%} (range test: median {float(np.median(tests)):.0%})"
            if checks
            else ""
        )
        out += [
            "",
            f"{name}: {len(rows)} tasks, ratio min {min(ratios):.3f}, median "
            f"{float(np.median(ratios)):.3f}; below {TARGET}: {', '.join(below) or 'none'}{cost}",
            "",
        ]
    return "\n".join(out)


def one_thread() -> None:
    """Every run single-threaded (in this process or a ``--jobs`` worker): timings comparable."""
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 tasks, 1 epoch, 2 LRs, only the data sets the tasks read: a smoke test",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"seeds per task, averaged on both sides: the grid and the finder's runs (default {SEEDS}; "
        "--quick: 1)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="tasks run at once, one process each (default 1)"
    )
    parser.add_argument("--tasks", nargs="*", default=None, choices=ALL_TASKS)
    parser.add_argument(
        "--split", choices=("dev", "held-out"), default=None, help="only this split's tasks"
    )
    parser.add_argument(
        "--method", default=None, help="lr_find.method for the finder's run (default: the config's)"
    )
    parser.add_argument(
        "--grid-from",
        type=Path,
        default=None,
        help="results.json of an earlier --keep run, or a results .md's printed grid (same epochs and "
        "seed): reuse its grid, run only the finder",
    )
    parser.add_argument(
        "--range-test-only",
        action="store_true",
        help="with --grid-from: run only each task's range test and print --screen's table (train nothing)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep run directories here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lr_finder.md")
    parser.add_argument(
        "--screen",
        type=Path,
        default=None,
        help="results.json of a --keep run: print each candidate rule on its dev half, train nothing",
    )
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        default=None,
        help="results.json files of --keep runs (a held-out run and a dev run made apart): "
        "print and write their tables together, train nothing",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = [
            # JSON's keys are strings; the split is this script's (an older run's may have moved)
            {
                **r,
                "grid": {float(k): v for k, v in r["grid"].items()},
                "grid_seeds": {float(k): v for k, v in r.get("grid_seeds", {}).items()},
                "split": split_of(r["task"]),
            }
            for path in args.render
            for r in json.loads(path.read_text())
        ]
        text = render(results, args.epochs or 4, args.seed)
        print(text)
        write_results(args.out, "lr_finder.py", text, list(argv or sys.argv[1:]))
        return 0
    if args.screen:
        print(screen(json.loads(args.screen.read_text())))
        return 0
    one_thread()
    epochs = args.epochs or (1 if args.quick else 4)
    grid = QUICK_GRID if args.quick else GRID
    seeds = args.seeds or (1 if args.quick else SEEDS)
    tasks = args.tasks or (QUICK_TASKS if args.quick else ALL_TASKS)
    if args.split:
        tasks = [t for t in tasks if split_of(t) == args.split]
    # held-out first: the rule is final before the run, and a run cut short keeps the score that counts
    tasks = sorted(tasks, key=lambda t: split_of(t) != "held-out")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lr_finder_") as tmp:
        log_dir = args.keep or Path(tmp)
        known = grids_from(args.grid_from) if args.grid_from else {}
        # --quick: only the sets its tasks read (the range tests only the tasks with a known grid)
        used = [t for t in tasks if t in known] if args.range_test_only else tasks
        data_root = write_data(log_dir / "data", data_sets(used) if args.quick else tuple(WRITERS))
        if args.range_test_only:
            curves = [
                range_test_task(t, args.seed, log_dir, data_root, known[t], seeds)
                for t in tasks
                if t in known
            ]
            if args.keep:
                (args.keep / "results.json").write_text(json.dumps(curves, indent=1))
            print(screen(curves))
            return 0
        jobs = [
            (task, grid, epochs, args.seed, log_dir, data_root, args.method, known.get(task), seeds)
            for task in tasks
        ]
        done: dict[str, dict[str, Any]] = {}

        def finished(r: dict[str, Any]) -> None:
            done[r["task"]] = r
            if args.keep:  # after each task: a long run cut short keeps what it measured
                ordered = [done[t] for t in tasks if t in done]
                (args.keep / "results.json").write_text(json.dumps(ordered, indent=1))
            print(
                f"{r['task']} ({r['split']}): ratio {r['ratio']:.3f} ({r['seconds']:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

        if args.jobs == 1:
            for job in jobs:
                finished(bench_task(*job))
        else:  # one task per worker process, each single-threaded
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(args.jobs, mp_context=spawn, initializer=one_thread) as pool:
                for future in as_completed([pool.submit(bench_task, *job) for job in jobs]):
                    finished(future.result())
        results = [done[t] for t in tasks]
    text = render(results, epochs, args.seed) + f"\ntotal {time.perf_counter() - t0:.0f}s"
    print(text)
    write_results(args.out, "lr_finder.py", text, list(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
