"""How good is the LR finder's suggestion? Compare it with a grid of full short runs, side by side.

For each task, every learning rate of a log grid is trained for a few epochs
(the runner's own ``runner.train.run``: Adam, cosine schedule, diagnostics off)
and the best final validation accuracy, averaged over seeds, is the reference.
Then a run with ``optimizer.lr=auto`` (the finder picks the LR with the
configured method) and runs at the other methods' suggestions from the same
range test are trained the same way, per seed. The table shows each
suggestion's accuracy as a fraction of the grid's best (target >= 95%).
Everything runs single-threaded so the numbers do not depend on what else the
machine is doing.

    python bench/lr_finder.py            # 3 tasks, 8-point grid, 2 seeds (about 3 minutes on 2 CPU cores)
    python bench/lr_finder.py --quick    # smoke test: 1 epoch, 3-point grid, 1 seed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diag.lr_finder import METHODS  # noqa: E402
from runner.app import run as run_task  # noqa: E402
from runner.conf_dir import CONF_DIR  # noqa: E402

TASKS: dict[str, list[str]] = {
    "mlp/digits": ["model=mlp"],
    "cnn/digits": ["model=cnn"],
    # MNIST-shaped: 1x28x28, 10 classes; three conv blocks so the receptive field covers the digit
    "cnn/digits28": [
        "model=cnn",
        "model.channels=[16,32,64]",
        "data._target_=runner.data.upsampled_digits.UpsampledDigitsDataModule",
        "data.image_size=28",
    ],
}
COMMON = ["scheduler=cosine"]
GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
QUICK_GRID = [1e-3, 1e-2, 1e-1]


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


def acc_of(report: dict[str, Any]) -> float:
    acc = report["metrics"].get("final_val_acc")
    return float(acc) if acc is not None else 0.0


def torch_lr_finder_suggestion(overrides: list[str], log_dir: Path) -> str:
    """torch-lr-finder's steepest-gradient suggestion on the same setup, when that package is installed."""
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return "not installed"
    from matplotlib.figure import Figure

    from runner.train import build

    parts = build(make_cfg(overrides, log_dir), log_dir / "torch_lr_finder")
    batches = list(parts.train_loader)
    dataset = torch.utils.data.TensorDataset(
        torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=parts.train_loader.batch_size, shuffle=True
    )
    finder = LRFinder(parts.state.model, parts.state.optimizer, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100)
    _, lr = finder.plot(suggest_lr=True, ax=Figure().add_subplot())
    finder.reset()
    return f"{lr:.2e}" if lr is not None else "no suggestion"


def bench_task(
    name: str, overrides: list[str], grid: list[float], epochs: int, seeds: list[int], log_dir: Path
) -> dict[str, Any]:
    """Grid runs, then the finder's runs, for one task; accuracies are means over ``seeds``."""
    t0 = time.perf_counter()
    grid_acc = {lr: 0.0 for lr in grid}
    rows: dict[str, dict[str, Any]] = {}
    finders = []
    for seed in seeds:
        base = [*COMMON, *overrides, f"trainer.max_epochs={epochs}", f"seed={seed}"]
        for lr in grid:
            grid_acc[lr] += acc_of(
                train([*base, f"optimizer.lr={lr}"], log_dir, f"{name}/s{seed}/grid_{lr:g}")
            )
        auto = train([*base, "optimizer.lr=auto"], log_dir, f"{name}/s{seed}/auto")
        finder = auto["lr_finder"]
        finders.append(finder)
        for method in (finder["method"], *(m for m in METHODS if m != finder["method"])):
            lr = finder["suggestions"][method]
            acc = (
                acc_of(auto)
                if method == finder["method"]
                else acc_of(
                    train([*base, f"optimizer.lr={lr}"], log_dir, f"{name}/s{seed}/{method}")
                )
            )
            row = rows.setdefault(
                method,
                {"method": method, "lrs": [], "acc": 0.0, "auto": method == finder["method"]},
            )
            row["lrs"].append(lr)
            row["acc"] += acc
    grid_acc = {lr: acc / len(seeds) for lr, acc in grid_acc.items()}
    for row in rows.values():
        row["acc"] /= len(seeds)
    best_lr = max(grid_acc, key=grid_acc.get)
    return {
        "task": name,
        "grid": grid_acc,
        "best_lr": best_lr,
        "best_acc": grid_acc[best_lr],
        "rows": list(rows.values()),
        "finders": finders,
        "torch_lr_finder": torch_lr_finder_suggestion([*COMMON, *overrides], log_dir / name),
        "seconds": time.perf_counter() - t0,
    }


def _lrs(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2e}" if hi / lo < 1.01 else f"{lo:.1e}-{hi:.1e}"


def print_results(results: list[dict[str, Any]], epochs: int, seeds: list[int]) -> None:
    print(
        f"\nLR finder vs a grid of {epochs}-epoch runs (Adam, cosine schedule; final val accuracy, "
        f"mean of {len(seeds)} seed{'s' if len(seeds) > 1 else ''})\n"
    )
    print("grid:")
    for r in results:
        cells = "  ".join(f"{lr:g}:{acc:.3f}" for lr, acc in r["grid"].items())
        print(f"  {r['task']:<13} {cells}")
    print()
    header = (
        f"{'task':<13} {'grid best lr':>12} {'best acc':>8}  {'method':<10} {'suggested lr':>15} {'acc':>6} "
        f"{'% of best':>9}  {'torch-lr-finder':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for i, row in enumerate(r["rows"]):
            lead = (
                f"{r['task']:<13} {r['best_lr']:>12g} {r['best_acc']:>8.3f}" if i == 0 else " " * 35
            )
            tlf = r["torch_lr_finder"] if i == 0 else ""
            method = row["method"] + ("*" if row["auto"] else "")
            pct = 100 * row["acc"] / r["best_acc"] if r["best_acc"] > 0 else 0.0
            print(
                f"{lead}  {method:<10} {_lrs(row['lrs']):>15} {row['acc']:>6.3f} {pct:>8.1f}%  {tlf:>15}"
            )
    print("\n* = the configured method (lr_find.method), trained through optimizer.lr=auto")
    for r in results:
        stops = "; ".join(f"{f['num_steps_run']} steps, {f['stop_reason']}" for f in r["finders"])
        print(f"{r['task']}: range test {stops}; {r['seconds']:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, 3-point grid: a smoke test")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default 6, quick 1)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="seeds to average (default 0 1, quick 0)"
    )
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep run directories here instead of a temp dir"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    epochs = args.epochs or (1 if args.quick else 6)
    grid = QUICK_GRID if args.quick else GRID
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_lr_finder_") as tmp:
        log_dir = args.keep or Path(tmp)
        results = [
            bench_task(name, TASKS[name], grid, epochs, seeds, log_dir) for name in args.tasks
        ]
    print_results(results, epochs, seeds)
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
